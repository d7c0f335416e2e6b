"""Broken, hostile and odd files at the read level: one clear PhotoError line, or a documented warning.

Every file is made by the test. Nothing here may raise anything but PhotoError, allocate the memory a
forged header asks for, or print a traceback.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import deblurcli.photo as photo_mod
from deblurcli.errors import PhotoError
from deblurcli.photo import _ExifBlock, _ExifFormatError, read_photo, write_photo


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _sample(kind: str, size: tuple[int, int] = (48, 32)) -> bytes:
    rng = np.random.default_rng(7)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, kind)
    return buf.getvalue()


def _assert_one_line(err: pytest.ExceptionInfo[PhotoError], *words: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg and 0 < len(msg) < 300, msg
    for w in words:
        assert w.lower() in msg.lower(), msg


# ------------------------------------------------------------------------------------ broken content


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(PhotoError) as err:
        read_photo(tmp_path / "empty.jpg")
    _assert_one_line(err, "empty")


def test_text_renamed_jpg(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("shopping list: milk, eggs\n" * 20)
    with pytest.raises(PhotoError) as err:
        read_photo(tmp_path / "notes.jpg")
    _assert_one_line(err, "not a recognised image")


@pytest.mark.parametrize("kind", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_truncated_files(tmp_path: Path, kind: str) -> None:
    data = _sample(kind, (160, 120))
    path = tmp_path / f"cut.{kind.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PhotoError) as err:
        read_photo(path)
    _assert_one_line(err)


def test_png_with_corrupt_idat(tmp_path: Path) -> None:
    data = bytearray(_sample("PNG"))
    at = data.index(b"IDAT") + 20
    data[at : at + 16] = b"\xff" * 16
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(PhotoError) as err:
        read_photo(tmp_path / "bad.png")
    _assert_one_line(err, "corrupt")


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge image (the decompression-bomb shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_bomb_png(100_000, 100_000))
    with pytest.raises(PhotoError) as err:
        read_photo(path)
    _assert_one_line(err, "100000x100000", "--allow-huge")


def test_bomb_with_allow_huge_is_refused_for_memory_not_crashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(photo_mod, "_memory_available", lambda: 8 * 2**30)
    path = tmp_path / "bomb.png"
    path.write_bytes(_bomb_png(100_000, 100_000))
    with pytest.raises(PhotoError) as err:
        read_photo(path, allow_huge=True)
    _assert_one_line(err, "GiB")


def test_allow_huge_reads_a_real_image_over_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(photo_mod, "MAX_PIXELS", 1000)
    path = tmp_path / "big.png"
    path.write_bytes(_sample("PNG", (48, 32)))
    with pytest.raises(PhotoError, match="--allow-huge"):
        read_photo(path)
    assert read_photo(path, allow_huge=True).rgb.shape == (32, 48, 3)
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own guard is restored for other code


def test_folder_and_missing_file_and_raw(tmp_path: Path) -> None:
    with pytest.raises(PhotoError, match="folder"):
        read_photo(tmp_path)
    with pytest.raises(PhotoError, match="no such file"):
        read_photo(tmp_path / "nope.jpg")
    (tmp_path / "IMG_1.CR2").write_bytes(b"II*\x00" + bytes(100))
    with pytest.raises(PhotoError, match="RAW"):
        read_photo(tmp_path / "IMG_1.CR2")


def test_bmp_is_named_not_called_unrecognised(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(_sample("BMP"))
    with pytest.raises(PhotoError, match="BMP files are not supported"):
        read_photo(tmp_path / "x.jpg")


# ---------------------------------------------------------------------------------- animated images


def _frames() -> list[Image.Image]:
    return [Image.new("RGB", (16, 12), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]


def test_animated_gif_is_refused_clearly(tmp_path: Path) -> None:
    f = _frames()
    f[0].save(tmp_path / "anim.gif", save_all=True, append_images=f[1:], duration=100, loop=0)
    with pytest.raises(PhotoError) as err:
        read_photo(tmp_path / "anim.gif")
    _assert_one_line(err, "GIF", "PNG")


@pytest.mark.parametrize("suffix", [".webp", ".png"])
def test_animated_webp_and_apng_give_first_frame_with_warning(tmp_path: Path, suffix: str) -> None:
    f = _frames()
    path = tmp_path / f"anim{suffix}"
    f[0].save(
        path,
        save_all=True,
        append_images=f[1:],
        duration=100,
        loop=0,
        **({"lossless": True} if suffix == ".webp" else {}),
    )
    photo = read_photo(path)
    assert photo.frames == 3
    assert any("animated" in w and "first" in w for w in photo.warnings)
    assert photo.rgb[..., 0].mean() > 0.95 and photo.rgb[..., 1].mean() < 0.05  # the red first frame
    write_photo(tmp_path / f"still{suffix}", photo.rgb, photo)
    assert getattr(Image.open(tmp_path / f"still{suffix}"), "n_frames", 1) == 1


def test_multipage_tiff_gives_first_page_with_warning(tmp_path: Path) -> None:
    f = _frames()
    f[0].save(tmp_path / "pages.tif", save_all=True, append_images=f[1:])
    photo = read_photo(tmp_path / "pages.tif")
    assert any("multi-page" in w for w in photo.warnings)
    assert photo.rgb[..., 0].mean() > 0.95


# -------------------------------------------------------------------------------- odd but decided


def test_float_tiff_is_refused_with_advice(tmp_path: Path) -> None:
    Image.fromarray(np.linspace(0, 2, 64, dtype=np.float32).reshape(8, 8)).save(tmp_path / "f.tif")
    with pytest.raises(PhotoError) as err:
        read_photo(tmp_path / "f.tif")
    _assert_one_line(err, "floating-point", "16-bit")


def test_float_rgb_tiff_is_refused_with_advice(tmp_path: Path) -> None:
    px = np.random.default_rng(0).random((6, 5, 3)).astype(np.float32)
    data = px.tobytes()
    entries = [
        (256, 3, 1, 5),
        (257, 3, 1, 6),
        (258, 3, 3, 8 + 2 + 12 * 9 + 4),
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, 8 + 2 + 12 * 9 + 4 + 12),
        (277, 3, 1, 3),
        (279, 4, 1, len(data)),
        (339, 3, 3, 8 + 2 + 12 * 9 + 4 + 6),
    ]
    out = b"II*\x00" + struct.pack("<IH", 8, len(entries))
    for tag, typ, count, value in entries:
        out += struct.pack("<HHI", tag, typ, count) + (
            struct.pack("<HH", value, 0) if typ == 3 and count == 1 else struct.pack("<I", value)
        )
    out += b"\x00" * 4 + struct.pack("<3H", 32, 32, 32) + struct.pack("<3H", 3, 3, 3) + data
    (tmp_path / "frgb.tif").write_bytes(out)
    with pytest.raises(PhotoError) as err:
        read_photo(tmp_path / "frgb.tif")
    _assert_one_line(err, "TIFF", "float")


def test_corrupt_exif_pointer_keeps_pixels(tmp_path: Path) -> None:
    # IFD0 is fine but its Exif IFD pointer points past the end: pixels kept, block carried, a warning.
    ifd0 = (
        struct.pack(">H", 2)
        + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)
        + struct.pack(">HHII", 0x8769, 4, 1, 99999)
        + b"\0\0\0\0"
    )
    blob = b"MM\x00*" + struct.pack(">I", 8) + ifd0
    path = tmp_path / "c.jpg"
    Image.new("RGB", (10, 6), (9, 9, 9)).save(path, exif=b"Exif\x00\x00" + blob)
    photo = read_photo(path)
    assert photo.rgb.shape == (10, 6, 3)  # orientation 6 was readable, so it was applied
    assert any("Exif IFD is unreadable" in w for w in photo.warnings)
    write_photo(tmp_path / "out.jpg", photo.rgb, photo)
    assert Image.open(tmp_path / "out.jpg").getexif()[0x0112] == 1


def test_one_pixel_image_round_trips(tmp_path: Path) -> None:
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "dot.png")
    photo = read_photo(tmp_path / "dot.png")
    for suffix in (".png", ".jpg", ".tif", ".webp"):
        write_photo(tmp_path / f"dot_out{suffix}", photo.rgb, photo)
        assert Image.open(tmp_path / f"dot_out{suffix}").size == (1, 1)


def test_bilevel_image_becomes_8bit_gray(tmp_path: Path) -> None:
    Image.fromarray(np.eye(8, dtype=bool)).save(tmp_path / "fax.tif")
    photo = read_photo(tmp_path / "fax.tif")
    assert photo.grayscale and any("1-bit" in w for w in photo.warnings)
    write_photo(tmp_path / "fax_out.tif", photo.rgb, photo)
    assert Image.open(tmp_path / "fax_out.tif").mode == "L"


def test_unicode_and_spaces_in_names(tmp_path: Path) -> None:
    path = tmp_path / "été à Zürich 📷.jpg"
    path.write_bytes(_sample("JPEG"))
    photo = read_photo(path)
    write_photo(tmp_path / "sortie déflou 2.png", photo.rgb, photo)
    assert (tmp_path / "sortie déflou 2.png").exists()


# ------------------------------------------------------------------------------------------- fuzzing


_SEEDS = {
    "jpg": _sample("JPEG", (24, 16)),
    "png": _sample("PNG", (24, 16)),
    "webp": _sample("WEBP", (24, 16)),
    "tif": _sample("TIFF", (24, 16)),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(sorted(_SEEDS)),
    edits=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.none() | st.integers(0, 4000),
)
def test_mutated_files_raise_only_photo_error(
    tmp_path: Path, kind: str, edits: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(_SEEDS[kind])
    for at, value in edits:
        data[at % len(data)] = value
    if cut is not None:
        data = data[: cut % len(data)]
    path = tmp_path / f"fuzz.{kind}"
    path.write_bytes(bytes(data))
    try:
        photo = read_photo(path)
    except PhotoError as e:
        assert "\n" not in str(e)
        return
    assert photo.rgb.dtype == np.float32 and np.isfinite(photo.rgb).all()
    assert 0.0 <= photo.rgb.min() and photo.rgb.max() <= 1.0


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=300))
def test_exif_editor_never_crashes_on_random_blocks(blob: bytes) -> None:
    for candidate in (blob, b"II*\x00\x08\x00\x00\x00" + blob, b"MM\x00*\x00\x00\x00\x08" + blob):
        try:
            block = _ExifBlock(candidate)
        except _ExifFormatError:
            continue
        edited = block.edited(123, 45, "deblurcli test")
        again = _ExifBlock(edited)
        assert again.orientation in (1, block.orientation) or 0x0112 not in block.ifd0.entries
