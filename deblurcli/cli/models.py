"""``deblur models``: the catalogue (name, architecture, parameters, source, cached?, quality, licence and
training data) and downloads.

A thin layer over ``deblurcli.weights``; torch and the library are imported inside the functions so that
``deblur --help`` stays fast.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from deblurcli.weights import ModelEntry


def _fail(exc: Exception) -> NoReturn:
    click.echo(f"error: {exc}", err=True)
    raise click.exceptions.Exit(1)


def _param_count(entry: ModelEntry) -> int:
    """Parameters of ``entry``'s architecture, built on the meta device (no memory, no weights needed)."""
    import torch

    from deblurcli.models.registry import build

    with torch.device("meta"):
        model = build(entry.arch, entry.config)
    return sum(p.numel() for p in model.parameters())


def _row(entry: ModelEntry, default: str) -> dict[str, Any]:
    from deblurcli.weights import is_cached

    return {
        "name": entry.name,
        "default": entry.name == default,
        "arch": entry.arch,
        "params": _param_count(entry),
        "source": entry.source,
        "repo_id": entry.repo_id,
        "revision": entry.revision,
        "file": entry.file,
        "size": entry.size,
        "cached": is_cached(entry),
        "shipped": entry.shipped,
        "license": entry.license,
        "training_data": entry.training_data,
        "published_quality": entry.published_quality,
        "measured_quality": entry.measured_quality,
        "description": entry.description,
    }


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        caption="* default: $DEBLUR_MODEL, else the best model available offline. Published figures are not measured here."
    )
    for header in ("name", "arch", "params", "source", "cached", "quality", "licence / trained on"):
        table.add_column(header, justify="right" if header == "params" else "left", overflow="fold")
    for row in rows:
        bundled = row["source"] == "bundled"
        cached = "yes" if row["cached"] else ("no" if not bundled else "missing" if row["shipped"] else "not trained")
        quality = "\n".join(
            text
            for text in (row["published_quality"], row["measured_quality"] and f"measured: {row['measured_quality']}")
            if text
        )
        table.add_row(
            row["name"] + (" *" if row["default"] else ""),
            row["arch"],
            f"{row['params'] / 1e6:.2f} M",
            row["source"],
            cached,
            quality or "-",
            "\n".join(text for text in (row["license"], row["training_data"]) if text) or "-",
        )
    Console().print(table)


@click.group(name="models", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the catalogue as one JSON object.")
@click.pass_context
def command(ctx: click.Context, as_json: bool) -> None:
    """List the models deblur can use: architecture, parameters, source, whether cached, quality, licence and
    what each was trained on.

    \b
      deblur models                    a table; * marks the default model
      DEBLUR_MODEL=NAME deblur ...     make NAME the default of every command
      deblur models --json             the same as JSON
      deblur models download NAME      fetch a Hub model into the Hugging Face cache now
    """
    if ctx.invoked_subcommand is not None:
        return
    from deblurcli.errors import DeblurError
    from deblurcli.weights import default_model_name, list_models

    try:
        default = default_model_name()
        rows = [_row(entry, default) for entry in list_models()]
    except DeblurError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps({"default": default, "models": rows}, indent=2))
    else:
        _print_table(rows)


@command.command("download")
@click.argument("name")
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
