"""``deblur serve``: a local web page (and HTTP API) to deblur photos and compare before and after.

The command checks its options, loads the default model before it listens (a broken model or a port in
use is one ``error:`` line and an exit, not a page that fails on the first photo), then runs the server
of :mod:`deblurcli.server` until Ctrl-C. It listens on 127.0.0.1 unless told otherwise: the server has no
login, so a ``--host`` other machines can reach needs ``--allow-remote`` and prints a warning.

Exit codes: 0 stopped with Ctrl-C, 1 the model or the port failed, 2 usage error (or the ``serve`` extra
is missing).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from deblurcli.cli.options import device_options, model_option, require_extra, tiling_options

if TYPE_CHECKING:
    from deblurcli.server.app import ServerConfig
    from deblurcli.server.jobs import SessionCache

EXIT_FAILED = 1


class _Lines(logging.Handler):
    """The library's warnings (an out-of-memory back-off, a model download) as ``warning:`` lines."""

    def emit(self, record: logging.LogRecord) -> None:
        prefix = "warning: " if record.levelno >= logging.WARNING else ""
        click.echo(f"{prefix}{record.getMessage()}", err=True)


@click.command("serve", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on; only this machine can connect unless --allow-remote.")
@click.option("--port", type=click.IntRange(0, 65535), default=7860, show_default=True, help="Port to listen on (0: any free port).")
@click.option("--allow-remote", is_flag=True, help="Allow a --host that other machines can reach. There is no login: anyone who reaches the port can use the server.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the default web browser once the server is ready.")
@model_option("Model selected on the page at first (default: $DEBLUR_MODEL, else 'deblur models default').")
@click.option("--weights", type=click.Path(path_type=Path, dir_okay=False, exists=True), help="Offer only this weights file instead of the catalogue's models.")
@tiling_options
@device_options
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True, help="JPEG/WebP quality of the results.")
@click.option("--max-upload", type=click.IntRange(min=1), default=200, show_default=True, metavar="MB", help="Largest upload accepted, in megabytes.")
@click.option("-v", "--verbose", is_flag=True, help="Log every request, and say which device, precision and model were picked.")
def command(host: str, port: int, allow_remote: bool, open_browser: bool, model_name: str | None, weights: Path | None, quality: int, max_upload: int, verbose: bool, **session_options: Any) -> None:
    """Serve a web page to deblur photos and compare them before and after.

    \b
      deblur serve                 http://127.0.0.1:7860/ (Ctrl-C stops)
      deblur serve --open          ... and open it in the browser
      deblur serve --port 8000 --model nafnet-s-free
      curl -F photo=@blurry.jpg -o sharp.jpg http://127.0.0.1:7860/api/deblur

    Drop photos on the page, choose the method, model and strength, compare before and after at 1:1 and
    download the result: the same file 'deblur PHOTO -o OUT' writes with the same settings, metadata kept.
    The curl line is the HTTP API under the page (see the README).
    """
    require_extra("serve", "starlette", "uvicorn", "python_multipart")
    from deblurcli.server.app import is_loopback

    loopback = is_loopback(host)
    if not loopback and not allow_remote:
        raise click.UsageError(f"--host {host} can be reached from other machines and the server has no login; add --allow-remote if that is what you want")
    library_log, handler = logging.getLogger("deblurcli"), _Lines()
    level = library_log.level
    library_log.addHandler(handler)
    library_log.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        config, sessions = _prepare(model_name, weights, quality, max_upload, loopback, session_options)
        _serve(config, sessions, host, port, open_browser=open_browser, verbose=verbose)
    finally:  # the command may run inside another program (tests, a notebook): leave its logging as it was
        library_log.removeHandler(handler)
        library_log.setLevel(level)


def _prepare(model: str | None, weights: Path | None, quality: int, max_upload: int, loopback: bool, session_options: dict[str, Any]) -> tuple[ServerConfig, SessionCache]:
    """The server's configuration and its Session cache with the default model loaded; a failure is one
    ``error:`` line and exit 1 (2 for an option that cannot work)."""
    from deblurcli.cli.errors import setup_error
    from deblurcli.devices import keep_host_memory
    from deblurcli.errors import DeblurError
    from deblurcli.server.app import ServerConfig
    from deblurcli.server.jobs import Options, SessionCache

    keep_host_memory()  # as the CLI does: a server runs one model for as long as it lives
    try:
        config = ServerConfig.from_catalogue(
            model=model, weights=weights, session_options=session_options, quality=quality,
            max_upload_bytes=max_upload * 1_000_000, loopback=loopback,
        )
        sessions = SessionCache(config.build_session)
        session = sessions.get(Options("auto", config.default_model, 1.0))
    except DeblurError as exc:
        line, code = setup_error(exc, model_label=str(weights) if weights is not None else model and f"--model {model}")
        click.echo(f"error: {line}", err=True)
        raise click.exceptions.Exit(code) from None
    logging.getLogger("deblurcli").info(session.describe())
    return config, sessions


def _serve(config: ServerConfig, sessions: SessionCache, host: str, port: int, *, open_browser: bool, verbose: bool) -> None:
    """Listen and serve until Ctrl-C (uvicorn turns SIGINT/SIGTERM into a graceful stop)."""
    from deblurcli.server.app import bind, create_app, make_server, url_of

    try:
        sock = bind(host, port)
    except OSError as exc:
        click.echo(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise click.exceptions.Exit(EXIT_FAILED) from None
    url = url_of(sock)
    if not config.loopback:
        click.echo(f"warning: listening on {host}: anyone who can reach this port can use the server (no login)", err=True)

    def ready() -> None:
        click.echo(f"deblur serve: {url} (Ctrl-C stops)", err=True)
        if open_browser:
            threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()

    server = make_server(create_app(config, sessions), log_level="info" if verbose else "warning", on_ready=ready)
    with sock, contextlib.suppress(KeyboardInterrupt):
        # uvicorn stops gracefully on Ctrl-C, then raises the signal again for the caller: here, the end.
        server.run(sockets=[sock])
