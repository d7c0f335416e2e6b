"""Broken, hostile and odd files at the read level: one clear PhotoError line, or a documented warning.

Every file is made by the test. Nothing here may raise anything but PhotoError, allocate the memory a
forged header asks for, or print a traceback.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import deblurcli.photo.decode as photo_decode
from deblurcli.errors import PhotoError
from deblurcli.photo import read_photo, write_photo
from deblurcli.photo.exif import ExifBlock, ExifFormatError


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
    monkeypatch.setattr(photo_decode, "_memory_available", lambda: 8 * 2**30)
    path = tmp_path / "bomb.png"
    path.write_bytes(_bomb_png(100_000, 100_000))
    with pytest.raises(PhotoError) as err:
        read_photo(path, allow_huge=True)
    _assert_one_line(err, "GiB")


def test_allow_huge_reads_a_real_image_over_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(photo_decode, "MAX_PIXELS", 1000)
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


def float_tiff(
    px: np.ndarray,
    *,
    order: str = "<",
    compression: int = 1,
    predictor: int = 1,
    bits: int = 32,
    planar: int = 1,
) -> bytes:
    """A float TIFF written by hand (one strip), independent of Pillow: gray, gray+alpha, RGB or RGBA;
    uncompressed or Deflate; predictor 1, 2 (on the 32-bit words) or 3 (floating point, per the spec)."""
    h, w, c = px.shape
    if predictor == 3:  # bytes of each row split into planes, most significant first, then differenced
        planes = px.astype(">f4").view(np.uint8).reshape(h, w * c, 4).transpose(0, 2, 1).reshape(h, -1, c)
        diff = planes.astype(np.int16)
        diff[:, 1:] -= planes[:, :-1]
        data = (diff % 256).astype(np.uint8).tobytes()
    elif predictor == 2:
        words = px.astype(np.float32).view(np.uint32)
        diff = words.copy()
        diff[:, 1:] -= words[:, :-1]
        data = diff.astype(order + "u4").tobytes()
    else:
        data = px.astype(f"{order}f{bits // 8}").tobytes()
    if compression == 8:
        data = zlib.compress(data)
    per_sample = [(258, [bits] * c), (339, [3] * c)]
    entries: list[tuple[int, int, list[int]]] = [
        (256, 4, [w]), (257, 4, [h]), (258, 3, []), (259, 3, [compression]), (262, 3, [2 if c >= 3 else 1]),
        (273, 4, [0]), (277, 3, [c]), (278, 4, [h]), (279, 4, [len(data)]), (284, 3, [planar]),
        (317, 3, [predictor]), (339, 3, []),
    ]
    if c in (2, 4):
        entries.insert(10, (338, 3, [2]))
    values = dict(per_sample)
    extra_at = 8 + 2 + 12 * len(entries) + 4
    extra = b""
    out = bytearray((b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "IH", 8, len(entries)))
    for tag, typ, vals in entries:
        vals = values.get(tag, vals)
        if tag == 273:
            vals = [extra_at + 4 * c]  # after the two out-of-line per-sample arrays (2 x 2c bytes)
        raw = struct.pack(f"{order}{len(vals)}{'H' if typ == 3 else 'I'}", *vals)
        if len(raw) > 4:
            out += struct.pack(order + "HHII", tag, typ, len(vals), extra_at + len(extra))
            extra += raw
        else:
            out += struct.pack(order + "HHI", tag, typ, len(vals)) + raw.ljust(4, b"\x00")
    out += bytes(4) + extra.ljust(4 * c, b"\x00")
    return bytes(out) + data


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize(("order", "compression", "predictor"),
                         [("<", 1, 1), (">", 1, 1), ("<", 8, 1), (">", 8, 1), ("<", 8, 2), (">", 8, 3), ("<", 8, 3)])
def test_float_tiff_is_read_exactly(tmp_path: Path, channels: int, order: str, compression: int, predictor: int) -> None:
    px = np.random.default_rng(channels).random((6, 5, channels)).astype(np.float32)
    path = tmp_path / "f.tif"
    path.write_bytes(float_tiff(px, order=order, compression=compression, predictor=predictor))
    photo = read_photo(path)
    colour = px[..., :3] if channels >= 3 else np.repeat(px[..., :1], 3, axis=-1)
    np.testing.assert_array_equal(photo.rgb, colour)  # every float bit, not just close
    if channels in (2, 4):
        assert photo.alpha is not None
        np.testing.assert_array_equal(photo.alpha, px[..., -1])
    else:
        assert photo.alpha is None
    assert photo.grayscale == (channels < 3) and photo.bit_depth == 16
    assert any("floating-point" in w and "16-bit" in w for w in photo.warnings)


def test_float_tiff_out_of_range_and_nan_are_clipped_with_warnings_and_written_16bit(tmp_path: Path) -> None:
    px = np.linspace(-0.5, 2.0, 6 * 8 * 3, dtype=np.float32).reshape(6, 8, 3)
    px[0, 0, 0], px[0, 1, 1] = np.nan, np.inf
    path = tmp_path / "hdr.tif"
    path.write_bytes(float_tiff(px))
    photo = read_photo(path)
    assert photo.rgb.min() == 0.0 and photo.rgb.max() == 1.0 and np.isfinite(photo.rgb).all()
    assert photo.rgb[0, 0, 0] == 0.0 and photo.rgb[0, 1, 1] == 0.0  # non-finite -> 0, not 1
    assert any("2 NaN or infinite samples set to 0" in w for w in photo.warnings)
    assert any("outside 0..1" in w and "clipped" in w for w in photo.warnings)
    write_photo(tmp_path / "out.tif", photo.rgb, photo)
    with Image.open(tmp_path / "out.tif") as out:
        assert out.tag_v2[258] == (16, 16, 16)
    assert read_photo(tmp_path / "out.tif").bit_depth == 16


def test_pillow_float_tiff_with_compression_and_big_endian(tmp_path: Path) -> None:
    # Pillow writes a one-channel float TIFF itself; a big-endian Deflate one it decodes byte-swapped
    # (libtiff already returned native floats) unless told otherwise: regression for that.
    gray = np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8)
    Image.fromarray(gray, "F").save(tmp_path / "pil.tif", compression="tiff_adobe_deflate")
    np.testing.assert_array_equal(read_photo(tmp_path / "pil.tif").rgb[..., 0], gray)
    (tmp_path / "be.tif").write_bytes(float_tiff(gray[..., None], order=">", compression=8))
    np.testing.assert_array_equal(read_photo(tmp_path / "be.tif").rgb[..., 1], gray)


def test_float_tiff_bomb_is_refused_before_decoding_with_its_real_size(tmp_path: Path) -> None:
    data = bytearray(float_tiff(np.zeros((2, 2, 3), np.float32)))
    struct.pack_into("<I", data, 10 + 8, 100_000)  # ImageWidth, the first entry
    struct.pack_into("<I", data, 10 + 12 + 8, 100_000)  # ImageLength
    (tmp_path / "bomb.tif").write_bytes(bytes(data))
    with pytest.raises(PhotoError) as err:
        read_photo(tmp_path / "bomb.tif")
    _assert_one_line(err, "100000x100000", "--allow-huge")  # not 300000 wide: the view's width
    struct.pack_into("<I", data, 10 + 8, 0xFFFFFFF0)  # 3 x this width does not fit the view's LONG
    (tmp_path / "wide.tif").write_bytes(bytes(data))
    with pytest.raises(PhotoError) as err:
        read_photo(tmp_path / "wide.tif")
    _assert_one_line(err, "too wide")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"bits": 16}, "16-bit floating-point"), ({"bits": 64}, "64-bit floating-point"), ({"planar": 2}, "planar")],
)
def test_float_tiff_layouts_we_refuse_say_so(tmp_path: Path, kwargs: dict[str, int], words: str) -> None:
    px = np.random.default_rng(0).random((6, 5, 3)).astype(np.float32)
    (tmp_path / "f.tif").write_bytes(float_tiff(px, **kwargs))
    with pytest.raises(PhotoError) as err:
        read_photo(tmp_path / "f.tif")
    _assert_one_line(err, words, "export")


def test_32bit_integer_rgb_tiff_is_refused_with_advice(tmp_path: Path) -> None:
    data = bytearray(float_tiff(np.zeros((4, 4, 3), np.float32)))
    at = data.index(struct.pack("<3H", 3, 3, 3))
    data[at:at + 6] = struct.pack("<3H", 1, 1, 1)  # SampleFormat: unsigned integer
    (tmp_path / "i.tif").write_bytes(bytes(data))
    with pytest.raises(PhotoError) as err:
        read_photo(tmp_path / "i.tif")
    _assert_one_line(err, "TIFF", "16-bit")


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


@pytest.mark.parametrize(
    "entry",
    [
        struct.pack(">HHIHH", 0x0112, 3, 2, 6, 0),  # Orientation as two SHORTs (6, 0), inline
        struct.pack(">HHII", 0x0112, 4, 1, 6),  # as a LONG
        struct.pack(">HHII", 0x0112, 3, 128, 1),  # count 128 pointing at offset 1: unreadable now...
    ],
    ids=["two-shorts", "long", "fuzz-db4dcdae590db192"],
)
def test_malformed_orientation_entry_is_reset_not_applied_twice(tmp_path: Path, entry: bytes) -> None:
    """Found by bench/fuzz_photo.py: an Orientation entry that is not one SHORT was read (and applied to the
    pixels) but left as it was in the output, so the output was rotated a second time by viewers and by us;
    or, unreadable in the source, it became readable once the edited block grew (...as in the fuzz case)."""
    blob = b"MM\x00*" + struct.pack(">IH", 8, 1) + entry + bytes(4)
    path = tmp_path / "o.jpg"
    Image.fromarray(np.arange(10 * 6 * 3, dtype=np.uint8).reshape(6, 10, 3)).save(path, exif=b"Exif\x00\x00" + blob)
    photo = read_photo(path)
    rotated = photo.orientation == 6
    assert photo.rgb.shape == ((10, 6, 3) if rotated else (6, 10, 3))
    write_photo(tmp_path / "out.jpg", photo.rgb, photo)
    again = read_photo(tmp_path / "out.jpg")
    assert again.orientation == 1 and again.rgb.shape == photo.rgb.shape
    assert Image.open(tmp_path / "out.jpg").getexif()[0x0112] == 1


def test_pillow_warnings_come_back_as_our_warnings_not_raw_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by bench/fuzz_photo.py: writing a TIFF makes Pillow parse the EXIF again, and its "Corrupt EXIF
    data" went to the terminal as a raw ``TiffImagePlugin.py:982: UserWarning`` line; and Pillow's logged
    "More samples per pixel than can be decoded" was printed by logging's last-resort handler."""
    ifd0 = struct.pack(">H", 1) + struct.pack(">HHII", 0x8769, 4, 1, 99999) + bytes(4)  # Exif IFD past the end
    Image.new("RGB", (10, 6)).save(tmp_path / "c.jpg", exif=b"Exif\x00\x00MM\x00*" + struct.pack(">I", 8) + ifd0)
    photo = read_photo(tmp_path / "c.jpg")
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        returned = write_photo(tmp_path / "out.tif", photo.rgb, photo)
    assert leaked == []
    assert any(w.startswith("EXIF for TIFF: Corrupt EXIF data") for w in returned), returned

    data = bytearray(_sample("TIFF"))
    entry = ExifBlock(bytes(data)).ifd0.entries[277]  # SamplesPerPixel
    struct.pack_into("<H", data, entry.pos + 8, 5000)
    (tmp_path / "spp.tif").write_bytes(bytes(data))
    with pytest.raises(PhotoError):
        read_photo(tmp_path / "spp.tif")
    assert capsys.readouterr().err == ""


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
    "float.tif": float_tiff(np.random.default_rng(3).random((16, 24, 3), dtype=np.float32) * 1.5),
    "pred3.tif": float_tiff(np.random.default_rng(4).random((16, 24, 4), dtype=np.float32), compression=8, predictor=3),
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
            block = ExifBlock(candidate)
        except ExifFormatError:
            continue
        edited = block.edited(123, 45, "deblurcli test")
        assert ExifBlock(edited).orientation == 1  # whatever the entry looked like
