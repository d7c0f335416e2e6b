"""The Starlette application behind ``deblur serve``: the page, its files and the HTTP API.

API (every error is JSON ``{"error": "<one plain line>"}``):

* ``GET /api/models`` -- the models, methods and limits the page offers.
* ``POST /api/deblur`` -- multipart ``photo`` (+ optional ``method``, ``model``, ``strength``): waits its turn
  and answers with the deblurred photo itself, written by the CLI's writer (422 when the photo cannot be
  read or deblurred). Closing the connection cancels the photo.
* ``POST /api/jobs`` -- the same fields; answers at once with the photo's id. ``GET /api/jobs/ID`` says where
  it is (queued, running with tiles done, done, failed); ``GET /api/jobs/ID/result`` is the download and
  ``before.jpg``, ``after.jpg``, ``kernel.png`` the previews; ``DELETE /api/jobs/ID`` (or ``POST
  /api/jobs/ID/cancel``, what a closing page can send) cancels and forgets it.
* ``GET /api/health`` -- queue counts; answers while a photo runs.

Requests larger than the cap are refused with 413 before their body is read when they say their size, and
as soon as the cap is passed when they do not. On a loopback address, requests must name a loopback host
(so a web page cannot reach the server through DNS rebinding) and cross-site POST/DELETE are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import math
import mimetypes
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deblurcli.server.jobs import Job, JobQueue, Options, QueueFull, SessionCache

if TYPE_CHECKING:
    import uvicorn

    from deblurcli.runner import Settings
    from deblurcli.session import Session

#: Default cap on one request (the photo and its form fields), in MB.
DEFAULT_MAX_UPLOAD_MB = 200
#: How often a waiting ``POST /api/deblur`` looks whether its photo is done or its client went away.
WAIT_POLL_S = 0.1
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
_MAX_FIELD_BYTES = 64 * 1024
#: Files the page may fetch, by name; anything else is a 404 (the client's name is never a path).
PREVIEWS = ("before.jpg", "after.jpg", "kernel.png")
# The page loads nothing from elsewhere (no CDN): said to the browser too, so a mistake shows at once.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class ModelChoice:
    """A model the page offers: a catalogue entry, or the one ``--weights`` file the server was given."""

    name: str
    description: str = ""
    quality: str = ""
    cached: bool = True  #: False: the weights are downloaded the first time the model is used


@dataclass
class ServerConfig:
    """What a server offers and how it runs photos; ``session_options`` are the Session's device and tiling
    keywords (``device``, ``precision``, ``threads``, ``tile``, ``overlap``), the same for every photo."""

    models: list[ModelChoice]
    default_model: str
    weights: Path | None = None
    session_options: dict[str, Any] = field(default_factory=dict)
    quality: int = 95
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 1_000_000
    lease: float = 180.0  #: see deblurcli.server.jobs: hidden tabs ask about their photos about once a minute
    keep: float = 3600.0
    temp_root: Path | None = None
    loopback: bool = True

    @classmethod
    def from_catalogue(cls, *, model: str | None = None, weights: Path | None = None, **kwargs: Any) -> ServerConfig:
        """The catalogue's deblurring models that can run (the CLI's ``--model`` choices), ``model`` (else
        the user's default) selected first; or only the ``weights`` file when one is given."""
        if weights is not None:
            return cls([ModelChoice(weights.name, f"weights file {weights.name}")], weights.name, weights=weights, **kwargs)
        from deblurcli.weights import default_model_name, is_cached, is_trained, list_models

        choices = [
            ModelChoice(e.name, e.description, e.quality_summary, is_cached(e))
            for e in list_models()
            if e.role == "deblur" and is_trained(e)
        ]
        return cls(choices, model or default_model_name(), **kwargs)

    def build_session(self, method: str, model: str) -> Session:
        """The Session the CLI would build for ``deblur --method METHOD --model MODEL`` (or ``--weights``)."""
        from deblurcli.session import Session

        if self.weights is not None:
            return Session(method, weights=self.weights, **self.session_options)
        return Session(method, model=model, **self.session_options)

    def settings(self) -> Settings:
        """The runner's per-file settings: the CLI's defaults, the kernel picture always drawn for the page."""
        from deblurcli.runner import Settings

        return Settings(quality=self.quality, save_kernel=True)


class ApiError(Exception):
    """A request that cannot be served: answered as ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RequestTooLarge(Exception):
    """Raised while a body without a declared size is read, once it passes the cap."""


def too_large(limit: int) -> str:
    return f"the upload is larger than this server's limit of {limit / 1e6:g} MB (deblur serve --max-upload)"


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes: at once (413) when Content-Length says so, else by counting
    what arrives, so neither a large declared upload nor an endless chunked one is spooled to disk."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await JSONResponse({"error": too_large(self.limit)}, 413, headers={"Connection": "close"})(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise RequestTooLarge
            return message

        await self.app(scope, limited, send)


class Guard:
    """Two checks a server on this machine needs, since any web page the user opens can send it requests:

    * on a loopback address the Host header must name a loopback host: otherwise a page could reach the
      server through a name it re-points at 127.0.0.1 (DNS rebinding) and read its answers;
    * POST and DELETE from another site's page (a browser says where it comes from in Origin) are refused:
      a form on any web page can post to 127.0.0.1 without asking.
    """

    def __init__(self, app: ASGIApp, loopback: bool) -> None:
        self.app, self.loopback = app, loopback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            host = headers.get(b"host", b"").decode("latin-1")
            origin = headers.get(b"origin", b"").decode("latin-1")
            refusal = None
            if self.loopback and (urlsplit(f"//{host}").hostname or "") not in LOOPBACK_NAMES:
                refusal = "this server answers only requests for 127.0.0.1 or localhost"
            elif scope["method"] in ("POST", "DELETE") and origin and urlsplit(origin).netloc != host:
                refusal = "requests from other sites are refused"
            if refusal is not None:
                await _error(403, refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once from the package (wheels ship them as package data)."""
    folder = importlib.resources.files("deblurcli.server") / "static"
    files = {}
    for item in folder.iterdir():
        if item.is_file() and not item.name.startswith("."):
            media = mimetypes.guess_type(item.name)[0] or "application/octet-stream"
            files[item.name] = (item.read_bytes(), media + ("; charset=utf-8" if media.startswith("text/") or media.endswith("javascript") else ""))
    return files


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status, headers={"Cache-Control": "no-store"})


def _attachment(name: str) -> str:
    """A Content-Disposition for ``name``: an ASCII fallback and the exact UTF-8 name (RFC 6266/5987)."""
    fallback = "".join(ch if ch.isascii() and ch.isprintable() and ch not in '"\\' else "_" for ch in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def create_app(config: ServerConfig, sessions: SessionCache | None = None) -> Starlette:
    """The ASGI app. ``sessions``: a cache already holding the preloaded Session (``deblur serve`` loads the
    default model before it listens, so a broken model is an error at start, not on the first photo)."""
    sessions = sessions or SessionCache(config.build_session)
    static = _static_files()
    offered = {m.name for m in config.models}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.jobs = JobQueue(sessions, config.settings(), root=config.temp_root, lease=config.lease, keep=config.keep)
        try:
            yield
        finally:
            await run_in_threadpool(app.state.jobs.close)

    def jobs_of(request: Request) -> JobQueue:
        return request.app.state.jobs

    def options(form: FormData) -> Options:
        from deblurcli.decide import METHODS

        method = str(form.get("method") or "auto")
        if method not in METHODS:
            raise ApiError(400, f"unknown method {method!r}: use {', '.join(METHODS)}")
        model = str(form.get("model") or config.default_model)
        if model not in offered:
            raise ApiError(400, f"unknown model {model!r}: this server offers {', '.join(sorted(offered))}")
        try:
            strength = float(str(form.get("strength") or "1"))
        except ValueError:
            strength = math.nan
        if not 0.0 <= strength <= 1.0:
            raise ApiError(400, "strength must be a number between 0 and 1")
        return Options(method, model, strength)

    async def submit(request: Request, *, previews: bool, watched: bool) -> Job:
        form = await request.form(max_files=1, max_fields=8, max_part_size=_MAX_FIELD_BYTES)
        try:
            upload = form.get("photo")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "no photo: send it as the multipart file field 'photo'")
            chosen = options(form)
            try:
                return await run_in_threadpool(
                    jobs_of(request).submit, upload.filename or "photo", upload.file, chosen, previews=previews, watched=watched
                )
            except QueueFull as exc:
                raise ApiError(503, str(exc)) from None
            except OSError as exc:
                raise ApiError(507, f"the server cannot store the upload: {exc.strerror or exc}") from None
        finally:
            await form.close()  # the spooled upload is deleted here; the queue has its own copy

    async def page(_request: Request) -> Response:
        body, media = static["index.html"]
        return Response(body, media_type=media, headers=_PAGE_HEADERS)

    async def asset(request: Request) -> Response:
        found = static.get(request.path_params["name"])
        if found is None:
            raise ApiError(404, "no such file")
        return Response(found[0], media_type=found[1], headers=_PAGE_HEADERS)

    async def models(_request: Request) -> JSONResponse:
        from deblurcli.decide import METHODS

        return JSONResponse({
            "models": [vars(m) for m in config.models],
            "default_model": config.default_model,
            "methods": list(METHODS),
            "default_method": "auto",
            "max_upload_bytes": config.max_upload_bytes,
            "quality": config.quality,
        })

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, **jobs_of(request).counts()})

    async def deblur(request: Request) -> Response:
        job = await submit(request, previews=False, watched=True)
        jobs = jobs_of(request)
        try:
            while not job.finished.is_set():
                if await request.is_disconnected():
                    return Response(status_code=499)  # nobody reads this: the photo is cancelled below
                await asyncio.sleep(WAIT_POLL_S)
            if job.status != "done" or job.output is None:
                return _error(422, job.error or "the photo was cancelled")
            body = await run_in_threadpool(job.output.read_bytes)
            return Response(body, media_type=mimetypes.guess_type(job.download_name)[0], headers=_result_headers(job))
        finally:
            await run_in_threadpool(jobs.remove, job.id)

    async def create_job(request: Request) -> JSONResponse:
        job = await submit(request, previews=True, watched=False)
        return JSONResponse(job.as_dict(jobs_of(request).position(job)), 202, headers={"Location": f"/api/jobs/{job.id}"})

    def job_of(request: Request) -> Job:
        job = jobs_of(request).get(request.path_params["id"])
        if job is None:
            raise ApiError(404, "no such photo: it was removed, or it expired (deblur it again)")
        return job

    async def job_status(request: Request) -> JSONResponse:
        job = job_of(request)
        return JSONResponse(job.as_dict(jobs_of(request).position(job)), headers={"Cache-Control": "no-store"})

    async def job_file(request: Request) -> Response:
        job, name = job_of(request), request.path_params["file"]
        path = job.output if name == "result" and job.status == "done" else job.files.get(name) if name in PREVIEWS else None
        if path is None:
            raise ApiError(404, f"this photo has no {name} (yet)")
        try:
            body = await run_in_threadpool(path.read_bytes)
        except FileNotFoundError:
            raise ApiError(404, "this photo was removed meanwhile") from None
        if name != "result":
            return Response(body, media_type=mimetypes.guess_type(name)[0], headers={"Cache-Control": "no-store"})
        return Response(body, media_type=mimetypes.guess_type(job.download_name)[0], headers=_result_headers(job))

    async def cancel_job(request: Request) -> Response:
        # What a closing page sends (navigator.sendBeacon can only POST): DELETE by another verb.
        await run_in_threadpool(jobs_of(request).remove, request.path_params["id"])
        return Response(status_code=204)

    async def delete_job(request: Request) -> Response:
        if not await run_in_threadpool(jobs_of(request).remove, request.path_params["id"]):
            raise ApiError(404, "no such photo")
        return Response(status_code=204)

    async def api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error(exc.status, str(exc))

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail))

    async def body_too_large(_request: Request, _exc: Exception) -> Response:
        return _error(413, too_large(config.max_upload_bytes))

    async def gone(_request: Request, _exc: Exception) -> Response:
        return Response(status_code=400)  # the client left mid-upload: nobody reads this, nothing was queued

    routes = [
        Route("/", page),
        Route("/static/{name}", asset),
        Route("/api/models", models),
        Route("/api/health", health),
        Route("/api/deblur", deblur, methods=["POST"]),
        Route("/api/jobs", create_job, methods=["POST"]),
        Route("/api/jobs/{id}", job_status),
        Route("/api/jobs/{id}", delete_job, methods=["DELETE"]),
        Route("/api/jobs/{id}/cancel", cancel_job, methods=["POST"]),
        Route("/api/jobs/{id}/{file}", job_file),
    ]
    middleware = [Middleware(Guard, loopback=config.loopback), Middleware(BodyLimit, limit=config.max_upload_bytes)]
    return Starlette(
        routes=routes, middleware=middleware, lifespan=lifespan,
        exception_handlers={ApiError: api_error, HTTPException: http_error, RequestTooLarge: body_too_large, ClientDisconnect: gone},
    )


def _result_headers(job: Job) -> dict[str, str]:
    """The download's name and, for ``curl -D -`` users, what ran (ASCII: header values are not UTF-8)."""
    import json

    headers = {"Content-Disposition": _attachment(job.download_name), "Cache-Control": "no-store", "X-Deblur-Method": job.method or ""}
    if job.kernel_size is not None:
        headers["X-Deblur-Kernel-Size"] = str(job.kernel_size)
    if job.confidence is not None:
        headers["X-Deblur-Confidence"] = f"{job.confidence:.3f}"
    if job.warnings:
        headers["X-Deblur-Warnings"] = json.dumps(job.warnings, ensure_ascii=True)
    return headers


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only ever means this machine."""
    import ipaddress

    if host.strip("[]").lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one), made here so that a port in use is a
    plain error before anything starts, and tests can learn the port the system picked."""
    infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def make_server(app: Starlette, *, log_level: str = "warning", on_ready: Callable[[], None] | None = None) -> uvicorn.Server:
    """A uvicorn server for ``app`` (run it with ``server.run(sockets=[bind(...)])``); ``on_ready`` is
    called once it accepts connections."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if on_ready is not None and self.started:
                on_ready()

    config = uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=10, server_header=False)
    return Server(config)


def url_of(sock: socket.socket) -> str:
    """``http://127.0.0.1:7860/`` for a bound socket (IPv6 addresses in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"
