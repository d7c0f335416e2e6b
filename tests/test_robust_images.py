"""Issue 8, broken/hostile/odd images: one real ``deblur`` run over a folder of files the test makes itself.

Read-level behaviour of each file kind is pinned down in test_hostile_files.py and test_photo.py; this
module checks what the user sees from the command: each broken file is one ``error: <file>: <reason>``
line and gets no output, the rest of the batch is processed anyway (exit 1 at the end), odd-but-usable
files are written with a ``warning:`` line naming what changed, images smaller than the network's
minimum size are padded, and no traceback or partial file appears whatever the input.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from deblurcli import weights
from deblurcli.atomic import TEMP_TAG
from deblurcli.cli import group
from deblurcli.models.nafnet import NAFNet
from deblurcli.photo import read_photo

RNG = np.random.default_rng(8)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) NAFNet saved the way our own weights are, so the whole load path runs."""
    torch.manual_seed(0)
    net = NAFNet(width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1], local_pool=16)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    weights.save_generator(net.eval(), path, {"name": "tiny"})
    return path


def deblur(*args: str | Path) -> Result:
    return CliRunner().invoke(group, [*map(str, args), "--threads", "1"], catch_exceptions=False)


def noise(h: int, w: int, c: int = 3, dtype: type = np.uint8) -> np.ndarray:
    top = np.iinfo(dtype).max
    return RNG.integers(0, top + 1, (h, w, c) if c > 1 else (h, w), dtype=dtype)


def encoded(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int, height: int) -> bytes:
    """A 100-byte PNG whose header claims a huge image: the decompression-bomb shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(bytes(64))) + png_chunk(b"IEND", b"")


def tiff(pixels: np.ndarray, sample_format: int) -> bytes:
    """An uncompressed one-strip RGB TIFF written by hand: 16-bit unsigned or 32-bit float samples."""
    h, w, c = pixels.shape
    bits = pixels.dtype.itemsize * 8
    data = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    entries = [(256, 4, w), (257, 4, h), (258, 3, "bits"), (259, 3, 1), (262, 3, 2), (273, 4, "data"),
               (277, 3, c), (278, 4, h), (279, 4, len(data)), (284, 3, 1), (339, 3, "format")]
    arrays_at = 8 + 2 + 12 * len(entries) + 4
    arrays = struct.pack("<3H", bits, bits, bits) + struct.pack("<3H", *[sample_format] * 3)
    where = {"bits": arrays_at, "format": arrays_at + 6, "data": arrays_at + len(arrays)}
    out = b"II*\x00" + struct.pack("<IH", 8, len(entries))
    for tag, typ, value in entries:
        count = 3 if value in ("bits", "format") else 1
        v = where.get(value, value) if isinstance(value, str) else value
        out += struct.pack("<HHI", tag, typ, count)
        out += struct.pack("<HH", v, 0) if typ == 3 and count == 1 else struct.pack("<I", v)
    return out + bytes(4) + arrays + data


def ycck_jpeg(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> bytes:
    """A YCCK JPEG (Adobe transform 2, as Photoshop writes CMYK; colours checked in test_photo.py).

    Pillow writes the four planes, then the Adobe marker is switched from plain CMYK to YCCK so that
    libjpeg applies the YCC->CMY transform when decoding.
    """

    def ycc(rgb: tuple[int, int, int]) -> list[float]:
        r, g, b = (255.0 - v for v in rgb)
        return [0.299 * r + 0.587 * g + 0.114 * b, 128 - 0.168736 * r - 0.331264 * g + 0.5 * b,
                128 + 0.5 * r - 0.418688 * g - 0.081312 * b]

    planes = np.zeros((16, 16, 4))
    planes[:8, :, :3], planes[8:, :, :3], planes[..., 3] = ycc(top), ycc(bottom), 255
    data = bytearray(encoded(Image.fromarray(np.rint(255 - planes).astype(np.uint8), "CMYK"), "JPEG", quality=100))
    at = data.index(b"Adobe") + 11  # "Adobe", version, flags0, flags1, then the transform byte
    assert data[at] == 0
    data[at] = 2
    return bytes(data)


def corrupt_exif_jpeg() -> bytes:
    """EXIF whose IFD0 pointer runs off the block: unparsable, so carried raw and the pixels not rotated."""
    junk = b"Exif\x00\x00MM\x00*" + struct.pack(">I", 9999) + b"garbage" * 5
    return encoded(Image.fromarray(noise(20, 24)), "JPEG", exif=junk)


def lying_exif_jpeg() -> bytes:
    """EXIF with an entry claiming a 4-billion-byte value and an Exif IFD pointer past the end."""
    ifd0 = struct.pack(">H", 3) + struct.pack(">HHIHH", 0x0112, 3, 1, 1, 0)
    ifd0 += struct.pack(">HHII", 0x010F, 2, 0xFFFFFFFF, 40) + struct.pack(">HHII", 0x8769, 4, 1, 0x7FFFFFF0)
    blob = b"Exif\x00\x00MM\x00*" + struct.pack(">I", 8) + ifd0 + bytes(4)
    return encoded(Image.fromarray(noise(20, 24)), "JPEG", exif=blob)


def huge_exif_png() -> bytes:
    """A PNG with a 70 kB maker note: legal in PNG, too big for a JPEG APP1 segment (64 kB)."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x927C] = bytes(70_000)
    return encoded(Image.fromarray(noise(20, 24)), "PNG", exif=exif.tobytes())


def palette_png() -> bytes:
    idx = (np.arange(20 * 24).reshape(20, 24) % 3).astype(np.uint8)
    pal = Image.fromarray(idx, "P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (253 * 3))
    return encoded(pal, "PNG", transparency=1)


def animated_webp() -> bytes:
    frames = [Image.new("RGB", (24, 20), c) for c in ((255, 0, 0), (0, 255, 0))]
    return encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True, duration=100)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (24, 20), c) for c in ((255, 0, 0), (0, 255, 0))]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def truncated(fmt: str) -> bytes:
    data = encoded(Image.fromarray(noise(64, 80)), fmt)
    return data[: len(data) // 2]


#: name -> (content, words the file's one error line must contain)
BROKEN: dict[str, tuple[Callable[[], bytes], tuple[str, ...]]] = {
    "empty.jpg": (lambda: b"", ("empty",)),
    "shopping list.jpg": (lambda: b"milk, eggs, flour\n" * 30, ("not a recognised image",)),
    "cut.jpg": (lambda: truncated("JPEG"), ("truncated",)),
    "cut.png": (lambda: truncated("PNG"), ("truncated",)),
    "bomb.png": (lambda: bomb_png(100_000, 100_000), ("100000x100000", "--allow-huge")),
    "gif inside.png": (animated_gif, ("GIF is not supported",)),
}

#: name -> (content, words one of the file's warning lines must contain; None: no warning required)
ODD: dict[str, tuple[Callable[[], bytes], str | None]] = {
    "cmyk.jpg": (lambda: encoded(Image.fromarray(noise(20, 24, 4), "CMYK"), "JPEG"), "CMYK image converted to RGB"),
    "ycck.jpg": (lambda: ycck_jpeg((255, 0, 0), (255, 255, 255)), "YCCK image converted to RGB"),
    "deep16.tif": (lambda: tiff(noise(20, 24, 3, np.uint16), 1), None),
    "float32.tif": (lambda: tiff(RNG.random((20, 24, 3), dtype=np.float32) * 1.5, 3), "outside 0..1"),
    "palette.png": (palette_png, "palette image"),
    "corrupt exif.jpg": (corrupt_exif_jpeg, "EXIF cannot be parsed"),
    "lying exif.jpg": (lying_exif_jpeg, "Exif IFD is unreadable"),
    "huge exif.png": (huge_exif_png, None),
    "animated.webp": (animated_webp, "only the first is processed"),
    "dot.png": (lambda: encoded(Image.new("RGB", (1, 1), (200, 30, 40)), "PNG"), None),
    "sliver.png": (lambda: encoded(Image.fromarray(noise(3, 1)), "PNG"), None),
    "strip.jpg": (lambda: encoded(Image.fromarray(noise(2, 90)), "JPEG"), None),
}


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory: pytest.TempPathFactory, model_file: Path) -> tuple[Path, Path, Result]:
    """One run over a folder holding every broken and every odd file (sorted so broken ones come first,
    in between and last: the batch must go on after each)."""
    root = tmp_path_factory.mktemp("robust")
    src = root / "in"
    src.mkdir()
    for name, (make, _) in {**BROKEN, **ODD}.items():
        (src / name).write_bytes(make())
    out = root / "out"
    return src, out, deblur(src, "-o", out, "--weights", model_file)


def test_broken_files_are_one_line_each_and_the_batch_goes_on(batch_run: tuple[Path, Path, Result]) -> None:
    src, out, result = batch_run
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(BROKEN), errors
    for name, (_, words) in BROKEN.items():
        mine = [line for line in errors if line.startswith(f"error: {src / name}: ")]
        assert len(mine) == 1, (name, errors)
        for word in words:
            assert word in mine[0], mine[0]
        assert not (out / name).exists()
    assert f"done {len(ODD)}, skipped 0, failed {len(BROKEN)}" in result.stderr


def test_odd_files_are_processed_with_warnings(batch_run: tuple[Path, Path, Result]) -> None:
    src, out, result = batch_run
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert sorted(Path(line) for line in result.stdout.splitlines()) == sorted(out / name for name in ODD)
    for name, (_, words) in ODD.items():
        with Image.open(out / name) as after:
            after.load()
            assert after.size == read_photo(src / name).size, name  # tiny ones padded, then cropped back
        if words is not None:
            assert any(line.startswith(f"warning: {src / name}: ") and words in line for line in warnings), (name, warnings)


def test_odd_files_keep_what_they_can(batch_run: tuple[Path, Path, Result]) -> None:
    _, out, _ = batch_run
    with Image.open(out / "deep16.tif") as im:
        assert im.tag_v2[258] == (16, 16, 16)
    with Image.open(out / "float32.tif") as im:
        assert im.tag_v2[258] == (16, 16, 16)  # float TIFF is written as 16-bit, as its warning says
    with Image.open(out / "palette.png") as im:
        assert im.mode == "RGBA"
    with Image.open(out / "corrupt exif.jpg") as im:
        assert im.info["exif"] == b"Exif\x00\x00MM\x00*" + struct.pack(">I", 9999) + b"garbage" * 5  # raw
    with Image.open(out / "huge exif.png") as im:
        assert len(im.getexif().get_ifd(0x8769)[0x927C]) == 70_000  # PNG can hold it: carried
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".") or TEMP_TAG in p.name]
    assert leftovers == []


def test_oversized_exif_into_jpeg_is_dropped_with_a_warning(tmp_path: Path, model_file: Path) -> None:
    (tmp_path / "big.png").write_bytes(huge_exif_png())
    result = deblur(tmp_path / "big.png", "-o", tmp_path / "small.jpg", "--weights", model_file)
    assert result.exit_code == 0, result.output
    assert f"warning: {tmp_path / 'big.png'}: EXIF dropped" in result.stderr
    with Image.open(tmp_path / "small.jpg") as im:
        assert im.size == (24, 20) and "exif" not in im.info


def test_named_gif_and_bomb_with_allow_huge_are_one_line_each(
    tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import deblurcli.photo.decode as photo_decode

    monkeypatch.setattr(photo_decode, "_memory_available", lambda: 8 * 2**30)  # the same answer on any machine
    (tmp_path / "anim.gif").write_bytes(animated_gif())
    (tmp_path / "bomb.png").write_bytes(bomb_png(100_000, 100_000))
    (tmp_path / "ok.png").write_bytes(encoded(Image.fromarray(noise(20, 24)), "PNG"))
    args = (tmp_path / "anim.gif", tmp_path / "bomb.png", tmp_path / "ok.png")
    result = deblur(*args, "-o", tmp_path / "out", "--weights", model_file, "--allow-huge")
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, errors
    assert errors[0].startswith(f"error: {tmp_path / 'anim.gif'}: unsupported file type '.gif'")
    assert errors[1].startswith(f"error: {tmp_path / 'bomb.png'}: ") and "GiB" in errors[1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ok.png"]


def test_real_image_over_the_limit_is_processed_with_allow_huge(
    tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import deblurcli.photo.decode as photo_decode

    monkeypatch.setattr(photo_decode, "MAX_PIXELS", 400)  # a 24x20 image is then "huge"
    (tmp_path / "big.png").write_bytes(encoded(Image.fromarray(noise(20, 24)), "PNG"))
    refused = deblur(tmp_path / "big.png", "--weights", model_file)
    assert refused.exit_code == 1 and "--allow-huge" in refused.stderr
    result = deblur(tmp_path / "big.png", "--weights", model_file, "--allow-huge")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "big_deblurred.png").is_file()


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif", ".webp"])
def test_every_kind_of_garbage_is_one_line(tmp_path: Path, model_file: Path, suffix: str) -> None:
    """Random bytes, and valid headers followed by garbage, under every suffix we scan for."""
    heads = {".jpg": b"\xff\xd8\xff\xe0", ".png": b"\x89PNG\r\n\x1a\n", ".tif": b"II*\x00", ".webp": b"RIFF\x10\x00\x00\x00WEBPVP8 "}
    (tmp_path / "in").mkdir()
    for k in range(3):
        (tmp_path / "in" / f"head{k}{suffix}").write_bytes(heads[suffix] + RNG.bytes(50 * (k + 1)))
        (tmp_path / "in" / f"noise{k}{suffix}").write_bytes(RNG.bytes(200))
    result = deblur(tmp_path / "in", "-o", tmp_path / "out", "--weights", model_file)
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert sum(line.startswith("error: ") for line in lines) == 6, lines
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
