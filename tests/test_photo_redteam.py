"""Issue 19, the red-team pass over photo I/O: each hostile case it found, made here as a small file.

Items (numbers as in the issue): 1 sidecars through links, 3 a TIFF shrinking while read, 5 16-bit
MinIsWhite, 6 one read of a 16-bit PNG, 7 truncated JPEGs and work capped by the data present, 9 JPEG
encoder buffers, 12 --allow-huge for 16-bit files, 13 float TIFFs checked before they are read, 16
crafted EXIF. Files claiming a huge size are tiny; nothing here allocates what a header claims.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deblurcli.errors import PhotoError
from deblurcli.photo import read_photo, write_photo

RNG = np.random.default_rng(19)


def encoded(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def noise(h: int, w: int, c: int = 3) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 256, (h, w, c), dtype=np.uint8).squeeze())


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


# ------------------------------------------------------------------------- 1: XMP sidecars and links


def _photo_with_sidecar_link(tmp_path: Path, target: Path) -> Path:
    src = tmp_path / "in" / "p.jpg"
    src.parent.mkdir()
    src.write_bytes(encoded(noise(8, 8), "JPEG"))
    (tmp_path / "in" / "p.xmp").symlink_to(target)
    return src


@pytest.mark.parametrize("target", ["secret", "/proc/self/environ"])
def test_sidecar_that_is_a_link_is_not_copied(tmp_path: Path, target: str) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"<x:xmpmeta>password=hunter2</x:xmpmeta>")
    secret.chmod(0o600)
    src = _photo_with_sidecar_link(tmp_path, secret if target == "secret" else Path(target))
    photo = read_photo(src)
    out = tmp_path / "out" / "p.jpg"
    warns = write_photo(out, photo.rgb, photo)
    assert out.exists()
    assert not (tmp_path / "out" / "p.xmp").exists()
    assert any("p.xmp" in w and "symbolic link" in w for w in warns), warns


def test_sidecar_that_is_a_fifo_neither_hangs_nor_is_copied(tmp_path: Path) -> None:
    src = tmp_path / "p.jpg"
    src.write_bytes(encoded(noise(8, 8), "JPEG"))
    os.mkfifo(tmp_path / "p.xmp")
    photo = read_photo(src)
    warns = write_photo(tmp_path / "out" / "p.jpg", photo.rgb, photo)
    assert not (tmp_path / "out" / "p.xmp").exists()
    assert any("not a regular file" in w for w in warns), warns


def test_sidecar_copy_has_the_output_photo_permissions(tmp_path: Path) -> None:
    src = tmp_path / "p.jpg"
    src.write_bytes(encoded(noise(8, 8), "JPEG"))
    (tmp_path / "p.xmp").write_bytes(b"<x:xmpmeta/>")
    (tmp_path / "p.xmp").chmod(0o604)
    photo = read_photo(src)
    out = tmp_path / "out" / "p.jpg"
    assert write_photo(out, photo.rgb, photo) == []
    copied = tmp_path / "out" / "p.xmp"
    assert copied.read_bytes() == b"<x:xmpmeta/>"
    assert stat.S_IMODE(copied.stat().st_mode) == stat.S_IMODE(out.stat().st_mode)
