"""``deblur models``: the catalogue, one model in full, the saved default, and downloads.

The table is one line per model and fits 80 columns (name, architecture, parameters, source, whether the
weights are here, quality in a few words); ``deblur models show NAME`` has the rest (licence, training
data, full quality figures, description). Models catalogued before they are trained are left out of the
table, as they are of every choice offered, and listed in ``--json`` with ``"trained": false``.

A thin layer over ``deblurcli.weights`` and ``deblurcli.config``; torch and the library are imported inside
the functions so that ``deblur --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from typing import TYPE_CHECKING, Any, NoReturn

import click

from deblurcli.cli.options import parse_catalogued, parse_downloadable, parse_model

if TYPE_CHECKING:
    from deblurcli.weights import ModelEntry


def _fail(exc: Exception) -> NoReturn:
    click.echo(f"error: {exc}", err=True)
    raise click.exceptions.Exit(1)


def _param_count(entry: ModelEntry) -> int:
    """Parameters of ``entry``'s architecture: the catalogue's count, else built on the meta device (no memory,
    no weights needed, but torch's import costs about a second)."""
    if entry.params is not None:
        return entry.params
    import torch

    from deblurcli.models.registry import build

    with torch.device("meta"):
        model = build(entry.arch, entry.config)
    return sum(p.numel() for p in model.parameters())


def default_source(*, full: bool = True) -> str:
    """Where the default model comes from, in the order :func:`deblurcli.weights.default_model_name` asks
    (``full``: with the settings file's path, too long for the table's note)."""
    from deblurcli.config import config_path, default_model

    if os.environ.get("DEBLUR_MODEL", "").strip():
        return "DEBLUR_MODEL"
    if default_model():
        return f"saved in {config_path()}" if full else "saved default"
    return "best model available offline"


def _row(entry: ModelEntry, default: str) -> dict[str, Any]:
    from deblurcli.weights import is_cached, is_trained

    return {
        "name": entry.name,
        "default": entry.name == default,
        "arch": entry.arch,
        "role": entry.role,
        "params": _param_count(entry),
        "source": entry.source,
        "repo_id": entry.repo_id,
        "revision": entry.revision,
        "file": entry.file,
        "size": entry.size,
        "cached": is_cached(entry),
        "shipped": entry.shipped,
        "trained": is_trained(entry),
        "license": entry.license,
        "training_data": entry.training_data,
        "quality_summary": entry.quality_summary,
        "published_quality": entry.published_quality,
        "measured_quality": entry.measured_quality,
        "description": entry.description,
    }


def _here(row: dict[str, Any]) -> str:
    """Whether the weights are on this machine: a Hub file not yet fetched says what fetches it."""
    if row["cached"]:
        return "yes"
    return "download" if row["source"] == "hub" else "missing"


def _print_table(rows: list[dict[str, Any]], source: str) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    shown = [row for row in rows if row["trained"]]
    hidden = [row["name"] for row in rows if not row["trained"]]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    for header in ("name", "arch", "params", "source", "here", "quality"):
        # one line per model, however narrow the terminal: the quality is cut short rather than wrapped
        table.add_column(header, justify="right" if header == "params" else "left", no_wrap=True, overflow="ellipsis")
    for row in shown:
        table.add_row(
            row["name"] + (" *" if row["default"] else ""),
            row["arch"],
            f"{row['params'] / 1e6:.2f} M",
            row["source"],
            _here(row),
            ("refiner: " if row["role"] == "refine" else "") + (row["quality_summary"] or "-"),
        )
    console = Console(highlight=False)
    console.print(table)
    notes = [f"* default ({source}); change it: deblur models default NAME"]
    if hidden:
        notes.append(f"not trained yet, so not offered: {', '.join(hidden)}")
    notes.append("licence, training data and full figures: deblur models show NAME")
    for note in notes:
        console.print(note, markup=False)


def _paragraph(row: dict[str, Any], source: str) -> str:
    """Every fact about one model, each as a labelled, wrapped line."""
    where = (
        f"bundled file {row['file']}"
        if row["source"] == "bundled"
        else f"{row['file']} from {row['repo_id']} at commit {row['revision']}"
        + (f" ({row['size'] / 1e6:.0f} MB)" if row["size"] else "")
    )
    here = {"yes": "on this machine", "download": "not downloaded yet (deblur models download NAME)", "missing": "missing"}
    status = here[_here(row)] if row["trained"] else "not trained yet"
    facts = [
        ("architecture", f"{row['arch']}, {row['params'] / 1e6:.2f} M parameters"),
        ("weights", f"{where}; {status}"),
        ("quality", row["measured_quality"] and f"measured: {row['measured_quality']}"),
        ("published", row["published_quality"]),
        ("licence", row["license"]),
        ("trained on", row["training_data"]),
        ("about", row["description"]),
    ]
    width = max(40, min(100, shutil.get_terminal_size().columns))
    role = " (a refiner: it runs over the kernel method's deconvolution, --refiner NAME)" if row["role"] == "refine" else ""
    lines = [row["name"] + (f" (the default, from {source})" if row["default"] else "") + role]
    for label, text in facts:
        if text:
            lines += textwrap.wrap(text, width, initial_indent=f"  {label:<13}", subsequent_indent=" " * 15)
    return "\n".join(lines)


def _catalogue_rows() -> tuple[str, list[dict[str, Any]]]:
    from deblurcli.errors import DeblurError
    from deblurcli.weights import default_model_name, list_models

    try:
        default = default_model_name()
        return default, [_row(entry, default) for entry in list_models()]
    except DeblurError as exc:
        _fail(exc)


@click.group(name="models", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the whole catalogue as one JSON object on stdout.")
@click.pass_context
def command(ctx: click.Context, as_json: bool) -> None:
    """List the models deblur can use: architecture, parameters, source, whether the weights are here, and
    quality in a few words.

    \b
      deblur models                    a table; * marks the default model
      deblur models show NAME          licence, training data, full figures
      deblur models default NAME       make NAME the default of every command
      DEBLUR_MODEL=NAME deblur ...     the same for one shell or job (wins over the saved default)
      deblur models download NAME      fetch a Hub model into the Hugging Face cache now
      deblur models --json             everything, as JSON
    """
    if ctx.invoked_subcommand is not None:
        return
    default, rows = _catalogue_rows()
    if as_json:
        click.echo(json.dumps({"default": default, "default_from": default_source(), "models": rows}, indent=2))
    else:
        _print_table(rows, default_source(full=False))


@command.command("show")
@click.argument("name", metavar="NAME", callback=parse_catalogued)
def show(name: str) -> None:
    """Everything about model NAME: weights and where they come from, quality, licence, training data."""
    _default, rows = _catalogue_rows()
    click.echo(_paragraph(next(row for row in rows if row["name"] == name), default_source()))


@command.command("default")
@click.argument("name", metavar="[NAME]", required=False, callback=parse_model)
@click.option("--unset", is_flag=True, help="Forget the saved default (back to the best model available offline).")
def default(name: str | None, unset: bool) -> None:
    """Show the default model, or save NAME as the default of every command.

    The choice is kept in config.toml in this platform's config folder. DEBLUR_MODEL, when set, still wins,
    so a single shell or job can use another model.
    """
    from deblurcli.config import write_setting
    from deblurcli.errors import DeblurError
    from deblurcli.weights import default_model_name

    if name is not None and unset:
        raise click.UsageError("give a NAME to save, or --unset to forget the saved one, not both")
    try:
        if name is not None:
            click.echo(f"default model: {name} (saved in {write_setting('model', name)})")
        else:
            if unset:
                click.echo(f"saved default removed from {write_setting('model', None)}")
            click.echo(f"default model: {default_model_name()} (from {default_source()})")
    except DeblurError as exc:
        _fail(exc)
    overriding = os.environ.get("DEBLUR_MODEL", "").strip()
    if overriding and (name is not None or unset):
        click.echo(f"note: DEBLUR_MODEL={overriding} is set, and wins over the saved default in this shell", err=True)


@command.command("download")
@click.argument("name", metavar="NAME", callback=parse_downloadable)
def download(name: str) -> None:
    """Fetch model NAME's weights now (progress bar on stderr), verify the sha256 and print the path.

    Hub files go to the Hugging Face cache (HF_HOME / HF_HUB_CACHE; HF_ENDPOINT picks a mirror), so later
    runs work offline. Bundled models need no download; this only checks their file is there.
    """
    from deblurcli.errors import DeblurError
    from deblurcli.weights import get_entry, resolve_weights

    try:
        path = resolve_weights(get_entry(name), progress=True)
    except DeblurError as exc:
        _fail(exc)
    click.echo(f"{name}: {path}")
