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
from PIL import Image, ImageFile

import deblurcli.photo.decode as photo_decode
from deblurcli.errors import PhotoError
from deblurcli.photo import Photo, read_photo, write_photo
from deblurcli.photo.exif import ExifBlock

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


# ------------------------------------------------------------------------- 5: 16-bit MinIsWhite TIFF


def _min_is_white(pixels: np.ndarray, compression: str) -> bytes:
    """A gray TIFF from Pillow with its photometric interpretation patched to 0 (MinIsWhite)."""
    data = bytearray(encoded(Image.fromarray(pixels), "TIFF", compression=compression))
    entry = ExifBlock(bytes(data)).ifd0.entries[262]
    struct.pack_into("<H", data, entry.pos + 8, 0)
    return bytes(data)


@pytest.mark.parametrize("compression", ["raw", "tiff_deflate"])
def test_16bit_min_is_white_tiff_is_not_a_negative(tmp_path: Path, compression: str) -> None:
    stored = np.array([[0, 1000, 30000, 65535]] * 3, dtype=np.uint16)
    src = tmp_path / "scan.tif"
    src.write_bytes(_min_is_white(stored, compression))
    photo = read_photo(src)
    assert photo.bit_depth == 16 and photo.grayscale
    # MinIsWhite: stored 0 is white. The 8-bit version of the same file agrees (Pillow inverts that one).
    np.testing.assert_array_equal(photo.rgb[..., 0], (65535 - stored) / np.float32(65535))
    src8 = tmp_path / "scan8.tif"
    src8.write_bytes(_min_is_white((stored >> 8).astype(np.uint8), compression))
    np.testing.assert_allclose(read_photo(src8).rgb, photo.rgb, atol=1 / 255)
    out = tmp_path / "out.tif"
    write_photo(out, photo.rgb, photo)
    with Image.open(out) as back:
        assert back.tag_v2[262] == 1
        np.testing.assert_array_equal(np.asarray(back), 65535 - stored)


# ------------------------------------------------------------------ 9: JPEG encoder's buffer too small


@pytest.mark.parametrize(("shape", "quality"), [((160, 480), 93), ((160, 480), 100), ((2, 33000), 95)])
def test_jpeg_output_of_grain_and_thin_images_at_any_quality(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], shape: tuple[int, int], quality: int
) -> None:
    src = tmp_path / "grain.png"
    noise(*shape).save(src)
    photo = read_photo(src)
    out = tmp_path / "grain.jpg"
    write_photo(out, photo.rgb, photo, quality=quality)
    with Image.open(out) as back:
        assert back.size == photo.size
        back.load()
    assert "Suspension" not in capfd.readouterr().err


# --------------------------------------------- 6 and 12: 16-bit RGB read once, --allow-huge honoured


def png16(pixels: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (Pillow cannot write one): unfiltered rows of big-endian samples."""
    h, w, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    chunks = png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def sixteen_bit(h: int, w: int) -> np.ndarray:
    return RNG.integers(0, 65536, (h, w, 3), dtype=np.uint16)


def test_16bit_png_replaced_between_its_two_passes_is_one_photo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = sixteen_bit(6, 8), sixteen_bit(6, 8)
    src = tmp_path / "p.png"
    src.write_bytes(png16(first))
    replacement = tmp_path / "new.png"
    replacement.write_bytes(png16(second))
    real_load = ImageFile.ImageFile.load
    loads = []

    def load_then_replace(self: ImageFile.ImageFile) -> object:
        loads.append(self)
        if len(loads) == 2:  # between the high-byte and the low-byte pass, another program saves
            os.replace(replacement, src)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load_then_replace)
    photo = read_photo(src)
    np.testing.assert_array_equal(np.rint(photo.rgb * 65535).astype(np.uint16), first)


@pytest.mark.parametrize(("suffix", "bits"), [(".png", 16), (".tif", 16), (".tif", 8)])
def test_allow_huge_reaches_every_decoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, bits: int
) -> None:
    """Pillow's own limit is scaled down with ours: a 16x16 file stands for one over 178.9 MP."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    monkeypatch.setattr(photo_decode, "MAX_PIXELS", 100)
    pixels = sixteen_bit(16, 16)
    src = tmp_path / f"big{suffix}"
    rgb = pixels.astype(np.float32) / np.float32(65535)
    write_photo(src, rgb, Photo(path=src, rgb=rgb, bit_depth=bits))
    with pytest.raises(PhotoError, match="allow-huge"):
        read_photo(src)
    photo = read_photo(src, allow_huge=True)
    assert photo.size == (16, 16) and photo.bit_depth == bits
    if bits == 16:
        np.testing.assert_array_equal(np.rint(photo.rgb * 65535).astype(np.uint16), pixels)
    assert Image.MAX_IMAGE_PIXELS == 100  # Pillow's limit is back for other code


# ------------------------------------------------------ 3: a TIFF that shrinks while it is being read

_SHRINK_SCRIPT = """
import sys
from pathlib import Path
import deblurcli.photo.exif as exif
from deblurcli.errors import PhotoError
from deblurcli.photo import read_photo

path = Path(sys.argv[1])
real = exif.restore_tag_types

def shrink_first(*args):  # another program saves over the file while its EXIF is being read
    with open(path, "r+b") as fh:
        fh.truncate(0)
    return real(*args)

exif.restore_tag_types = shrink_first
try:
    read_photo(path)
    print("read")
except PhotoError as e:
    print("PhotoError:", e)
"""


def test_tiff_that_shrinks_while_its_exif_is_read_is_an_error_not_a_crash(tmp_path: Path) -> None:
    import subprocess
    import sys

    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif.get_ifd(0x8769)[0x9003] = "2024:05:01 12:00:00"
    src = tmp_path / "p.tif"
    noise(64, 64).save(src, exif=exif)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", _SHRINK_SCRIPT, str(src)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-500:])  # -7 was SIGBUS
    assert done.stdout.startswith("PhotoError:") and done.stderr == "", (done.stdout, done.stderr)


# ------------------------------------------------------- 13: float TIFFs checked before they are read


def float_rgb_tiff(px: np.ndarray, strip_bytes: int | None = None) -> bytes:
    """A one-strip little-endian RGB float32 TIFF (the layout Pillow refuses and our view reads)."""
    h, w, c = px.shape
    data = px.astype("<f4").tobytes()
    entries = [(256, 4, w), (257, 4, h), (258, 3, 0), (259, 3, 1), (262, 3, 2), (273, 4, 0), (277, 3, c),
               (278, 4, h), (279, 4, strip_bytes or len(data)), (339, 3, 0)]
    arrays_at = 8 + 2 + 12 * len(entries) + 4
    out = b"II*\x00" + struct.pack("<IH", 8, len(entries))
    for tag, typ, value in entries:
        if tag in (258, 339):
            out += struct.pack("<HHII", tag, typ, c, arrays_at + (0 if tag == 258 else 2 * c))
            continue
        value = arrays_at + 4 * c if tag == 273 else value
        packed = struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, typ, 1) + packed
    return out + bytes(4) + struct.pack(f"<{c}H", *[32] * c) + struct.pack(f"<{c}H", *[3] * c) + data


def _sparse_tail(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(64 * 2**20)  # a sparse 64 MiB tail: no disk used, but read whole it was 3 copies


def _peak_memory_of_read(path: Path) -> tuple[object, int]:
    import tracemalloc

    tracemalloc.start()
    try:
        try:
            result: object = read_photo(path)
        except PhotoError as e:
            result = e
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_float_tiff_with_a_huge_tail_reads_only_its_image(tmp_path: Path) -> None:
    px = RNG.random((16, 16, 3), dtype=np.float32)
    src = tmp_path / "tail.tif"
    src.write_bytes(float_rgb_tiff(px))
    _sparse_tail(src)
    photo, peak = _peak_memory_of_read(src)
    assert isinstance(photo, Photo), photo
    np.testing.assert_array_equal(photo.rgb, px)
    assert peak < 4 * 2**20, peak


def test_float_tiff_bomb_is_refused_before_its_data_are_read(tmp_path: Path) -> None:
    data = bytearray(float_rgb_tiff(np.zeros((2, 2, 3), np.float32)))
    struct.pack_into("<I", data, 10 + 8, 100_000)  # ImageWidth, the first entry
    struct.pack_into("<I", data, 10 + 12 + 8, 100_000)  # ImageLength
    src = tmp_path / "bomb.tif"
    src.write_bytes(bytes(data))
    _sparse_tail(src)
    err, peak = _peak_memory_of_read(src)
    assert isinstance(err, PhotoError) and "100000x100000" in str(err), err
    assert peak < 4 * 2**20, peak


def test_float_tiff_strip_claiming_more_than_it_can_hold_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "forged.tif"
    src.write_bytes(float_rgb_tiff(np.zeros((16, 16, 3), np.float32), strip_bytes=2**30))
    with pytest.raises(PhotoError, match="strip or tile") as err:
        read_photo(src)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------- 16: crafted EXIF that is still readable


def exif_block(ifd0: list[tuple[int, int, int, bytes | int]], ifd1: list[tuple[int, int, int, bytes | int]]) -> bytes:
    """A little-endian EXIF block: IFD0 at 8, then IFD1, then the out-of-line values. An entry is (tag,
    type, count, value): bytes are stored out of line (or inline when 4 bytes or fewer), an int is the
    inline value or the offset to write as is."""
    tables = 8 + (2 + 12 * len(ifd0) + 4) + (2 + 12 * len(ifd1) + 4 if ifd1 else 0)
    values = b""

    def table(entries: list[tuple[int, int, int, bytes | int]], next_ifd: int) -> bytes:
        nonlocal values
        out = struct.pack("<H", len(entries))
        for tag, typ, count, value in entries:
            if isinstance(value, bytes) and len(value) > 4:
                out += struct.pack("<HHII", tag, typ, count, tables + len(values))
                values += value + b"\x00" * (len(value) & 1)
            elif isinstance(value, bytes):
                out += struct.pack("<HHI", tag, typ, count) + value.ljust(4, b"\x00")
            else:
                out += struct.pack("<HHII", tag, typ, count, value)
        return out + struct.pack("<I", next_ifd)

    first = table(ifd0, 8 + 2 + 12 * len(ifd0) + 4 if ifd1 else 0)
    second = table(ifd1, 0) if ifd1 else b""
    return b"II*\x00" + struct.pack("<I", 8) + first + second + values


def _camera_ifd0(software: tuple[int, int, int, bytes | int]) -> list[tuple[int, int, int, bytes | int]]:
    return [(0x010F, 2, 6, b"Canon\x00"), (0x0110, 2, 7, b"EOS R5\x00"), (0x0112, 3, 1, struct.pack("<H", 6)), software]


def _round_trip_exif(tmp_path: Path, block: bytes) -> tuple[ExifBlock, bytes, list[str]]:
    src = tmp_path / "in.jpg"
    src.write_bytes(encoded(noise(8, 12), "JPEG", exif=b"Exif\x00\x00" + block))
    photo = read_photo(src)
    assert photo.exif_parsed and photo.orientation == 6
    warns = write_photo(tmp_path / "out.jpg", photo.rgb, photo)
    with Image.open(tmp_path / "out.jpg") as out:
        raw = out.info["exif"][6:]
    return ExifBlock(raw), raw, warns


def _ascii(block: ExifBlock, raw: bytes, tag: int) -> bytes:
    entry = block.ifd0.entries[tag]
    assert entry.value_at is not None
    return raw[entry.value_at:entry.value_at + entry.nbytes].rstrip(b"\x00")


def test_thumbnail_pointer_over_ifd0_does_not_wipe_make_model_orientation(tmp_path: Path) -> None:
    size = len(exif_block(_camera_ifd0((0x0131, 2, 8, b"Fw 1.0.0")), [(0x0201, 4, 1, 0), (0x0202, 4, 1, 0)]))
    block = exif_block(_camera_ifd0((0x0131, 2, 8, b"Fw 1.0.0")),
                       [(0x0201, 4, 1, 8), (0x0202, 4, 1, size - 8)])  # the "thumbnail" is the whole block
    out, raw, _ = _round_trip_exif(tmp_path, block)
    assert _ascii(out, raw, 0x010F) == b"Canon" and _ascii(out, raw, 0x0110) == b"EOS R5"
    assert out.orientation == 1 and out.ifd1 is None


def test_software_value_at_offset_0_does_not_overwrite_the_header(tmp_path: Path) -> None:
    block = exif_block(_camera_ifd0((0x0131, 2, 40, 0)), [])  # Software's 40 bytes "at offset 0"
    out, raw, _ = _round_trip_exif(tmp_path, block)
    assert raw[:8] == b"II*\x00\x08\x00\x00\x00"
    assert _ascii(out, raw, 0x0131).startswith(b"deblurcli ")
    assert _ascii(out, raw, 0x010F) == b"Canon" and out.orientation == 1


def test_exif_with_65535_entries_into_tiff_is_dropped_with_a_warning(tmp_path: Path) -> None:
    n = 65535
    block = (b"II*\x00" + struct.pack("<IH", 8, n)
             + b"".join(struct.pack("<HHIHH", k + 1, 3, 1, k, 0) for k in range(n)) + bytes(4))
    src = tmp_path / "many.png"
    src.write_bytes(encoded(noise(8, 8), "PNG", exif=b"Exif\x00\x00" + block))
    photo = read_photo(src)
    warns = write_photo(tmp_path / "out.tif", photo.rgb, photo)
    assert any("EXIF dropped" in w and "65" in w for w in warns), warns
    again = read_photo(tmp_path / "out.tif")
    assert again.size == (8, 8)


# -------------------------------------- 7: truncated JPEGs, and work capped by the data actually present


def _eoi_at(data: bytes) -> int:
    assert data.endswith(b"\xff\xd9")
    return len(data) - 2


JPEG_KINDS = {
    "baseline 4:2:0": ("RGB", {"quality": 90}),
    "4:4:4 optimized": ("RGB", {"quality": 95, "subsampling": 0, "optimize": True}),
    "gray": ("L", {}),
    "restart markers": ("RGB", {"restart_marker_blocks": 3}),
    "progressive": ("RGB", {"progressive": True}),
    "cmyk": ("CMYK", {}),
}


@pytest.mark.parametrize("kind", JPEG_KINDS)
def test_whole_jpegs_are_not_taken_for_truncated_ones(tmp_path: Path, kind: str) -> None:
    mode, kwargs = JPEG_KINDS[kind]
    data = encoded(noise(77, 123).convert(mode), "JPEG", **kwargs)
    (tmp_path / "whole.jpg").write_bytes(data)
    (tmp_path / "trailer.jpg").write_bytes(data + b"camera trailer \xff\xd8 after the end")
    for name in ("whole.jpg", "trailer.jpg"):
        assert read_photo(tmp_path / name).size == (123, 77)


# A cut inside a progressive JPEG's last scan (its finest refinement bits) is the one case not detected:
# see deblurcli/photo/jpeg.py.
CUTS = [(kind, kept) for kind in JPEG_KINDS for kept in (0.3, 0.7, 0.97) if (kind, kept) != ("progressive", 0.97)]


@pytest.mark.parametrize(("kind", "kept"), CUTS)
def test_truncated_jpeg_with_an_end_marker_appended_is_refused(tmp_path: Path, kind: str, kept: float) -> None:
    mode, kwargs = JPEG_KINDS[kind]
    data = encoded(noise(77, 123).convert(mode), "JPEG", **kwargs)
    header = data.index(b"\xff\xda")
    cut = header + int((_eoi_at(data) - header) * kept)
    (tmp_path / "cut.jpg").write_bytes(data[:cut] + b"\xff\xd9")
    with pytest.raises(PhotoError, match="truncated") as err:
        read_photo(tmp_path / "cut.jpg")
    assert "\n" not in str(err.value)


def test_tiny_jpeg_claiming_175_megapixels_is_refused_before_decoding(tmp_path: Path) -> None:
    import tracemalloc
    import time

    data = bytearray(encoded(noise(64, 64), "JPEG", quality=90))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 10300, 17000)  # height, width: 175.1 MP
    forged = bytes(data[:2700]) + b"\xff\xd9"  # 2.7 KB, as the red team's
    src = tmp_path / "claims-175mp.jpg"
    src.write_bytes(forged)
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(PhotoError, match="17000x10300") as err:
            read_photo(src)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "need at least" in str(err.value)
    assert time.monotonic() - started < 10 and peak < 16 * 2**20, peak


@pytest.mark.parametrize("suffix", [".webp", ".png", ".jpg", ".tif"])
def test_unparsable_exif_is_not_parsed_anew_once_written_in_another_format(tmp_path: Path, suffix: str) -> None:
    """The fuzzer's find: junk before the TIFF header (carried raw, pixels not rotated) was taken for a
    HEIF offset once written as WebP, and the copy was rotated."""
    exif = Image.Exif()
    exif[0x0112] = 6
    src = tmp_path / "in.jpg"
    src.write_bytes(encoded(noise(8, 12), "JPEG", exif=b"Exif\x00\x00JUNK" + exif.tobytes()[6:]))
    photo = read_photo(src)
    assert not photo.exif_parsed and photo.orientation == 1
    write_photo(tmp_path / f"out{suffix}", photo.rgb, photo)
    again = read_photo(tmp_path / f"out{suffix}")
    assert again.size == photo.size and again.orientation == 1


# ------------------------------------------------------------------ 23: bench/fuzz_photo.py runs clean


def _fuzzer() -> object:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "fuzz_photo.py"
    spec = importlib.util.spec_from_file_location("fuzz_photo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fuzzer_mutator_survives_empty_inputs_and_a_short_run_finds_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import random

    fuzz = _fuzzer()
    rnd = random.Random(5)
    for _ in range(2000):  # an emptied input, and an empty survivor in the pool, crashed randrange
        fuzz.mutate(b"", rnd, [b"", b"\x01"])
    monkeypatch.setattr(photo_decode, "MAX_PIXELS", photo_decode.MAX_PIXELS)  # the target lowers it
    target = fuzz.Target(tmp_path)
    found = fuzz.run_mutate(target, 3.0, 23, tmp_path)
    assert found == {} and target.runs > 50


@pytest.mark.parametrize("kind", ["jpeg", "png16"])
def test_gigabytes_after_the_image_are_not_read(tmp_path: Path, kind: str) -> None:
    """The JPEG check and the 16-bit snapshot read the file, but only as far as its image can need."""
    if kind == "jpeg":
        src, data = tmp_path / "tail.jpg", encoded(noise(64, 64), "JPEG")
    else:
        src, data = tmp_path / "tail.png", png16(sixteen_bit(8, 8))
    src.write_bytes(data)
    with open(src, "r+b") as fh:
        fh.truncate(256 * 2**20)  # sparse: no disk used
    photo, peak = _peak_memory_of_read(src)
    assert isinstance(photo, Photo), photo
    assert peak < 40 * 2**20, peak
