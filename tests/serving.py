"""Helpers for the ``deblur serve`` tests: a tiny model, a real server on a loopback port, plain HTTP.

The server runs in a thread of the test process (uvicorn on a socket bound to 127.0.0.1 port 0), so tests
talk to it over real TCP, as a browser or curl would, and can still look into its temporary folder.
Requests use only the standard library, so the tests need nothing the ``serve`` extra does not bring.
"""

from __future__ import annotations

import http.client
import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import numpy as np
import torch
from PIL import Image
from torch import nn

from deblurcli.models.nafnet import NAFNet
from deblurcli.server.app import ServerConfig, bind, create_app, make_server, url_of
from deblurcli.server.jobs import SessionCache
from deblurcli.session import Session
from deblurcli.weights import save_generator


def make_tiny_weights(path: Path) -> Path:
    """A real NAFNet, small enough for a 2-core CI, that changes pixels (zero-initialised beta/gamma would
    make it the identity, and a byte comparison of outputs would prove little)."""
    torch.manual_seed(0)
    net = NAFNet(width=8, enc_blk_nums=[1], middle_blk_num=1, dec_blk_nums=[1], local_pool=16)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.normal_(0, 0.1)
    save_generator(net, path, {})
    return path


def photo_bytes(width: int = 64, height: int = 48, fmt: str = "JPEG", seed: int = 0, **save: Any) -> bytes:
    """A small photo with texture (so a deblur changes something), encoded as ``fmt``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx / width, yy / height, 0.5 + 0.5 * np.sin(xx / 3.0)], axis=2)
    pixels = np.clip(base + 0.1 * rng.standard_normal((height, width, 3)), 0, 1)
    buffer = io.BytesIO()
    Image.fromarray((pixels * 255).astype(np.uint8)).save(buffer, fmt, **save)
    return buffer.getvalue()


@contextmanager
def running(config: ServerConfig, sessions: SessionCache | None = None) -> Iterator[str]:
    """The app served on 127.0.0.1 (a free port) while the block runs; yields its base URL."""
    sock = bind("127.0.0.1", 0)
    server = make_server(create_app(config, sessions))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 20, "the server did not start")
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        assert not thread.is_alive(), "the server did not stop"


def wait_for(condition: Callable[[], Any], timeout: float, message: str) -> Any:
    """Poll ``condition`` until it is truthy (returning its value); fail with ``message`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.05)


def multipart(fields: dict[str, str], name: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with the text ``fields`` and one file field ``photo``."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Answer:
    """One HTTP response, read whole."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = {k.lower(): v for k, v in response.getheaders()}
        self.body = response.read()

    def json(self) -> Any:
        return json.loads(self.body)


def call(base: str, method: str, path: str, body: bytes | list[bytes] | None = None, headers: dict[str, str] | None = None, timeout: float = 60) -> Answer:
    """One request; a ``body`` given as a list of pieces is sent chunked, without a Content-Length."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {}, encode_chunked=isinstance(body, list))
        return Answer(connection.getresponse())
    finally:
        connection.close()


def post_photo(base: str, data: bytes, name: str = "photo.jpg", path: str = "/api/deblur", **fields: str) -> Answer:
    body, kind = multipart(fields, name, data)
    return call(base, "POST", path, body, {"Content-Type": kind})


class Slow(nn.Module):
    """A network stand-in that takes 0.2 s per tile, so a photo runs long enough to hang up on."""

    size_multiple = 1
    tile_margin = 0
    config: ClassVar[dict] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.2)
        return x


def slow_sessions() -> SessionCache:
    """Sessions whose photos run 32 px tiles through :class:`Slow`: a 128 px photo takes about 3 s."""
    return SessionCache(lambda _method, _model: Session("network", module=Slow(), tile=32, overlap=0, batch_size=1))
