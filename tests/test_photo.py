"""deblurcli.photo: read -> change pixels -> write keeps every tag, the profile, depth, alpha, orientation.

Every test builds its own real files (EXIF via piexif, hand-made 16-bit PNG/TIFF, crafted ICC bytes) so
that the reader is checked against independent writers, not only against our own.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import struct
import subprocess
import sys
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import piexif
import pytest
from PIL import Image, ImageCms, ImageOps, IptcImagePlugin, features

from deblurcli import __version__
from deblurcli.atomic import TEMP_TAG, atomic_output, atomic_write_bytes, is_temp_file
from deblurcli.errors import DiskFullError, PhotoError
from deblurcli.photo import SUPPORTED_SUFFIXES, Photo, read_photo, write_photo
from deblurcli.photo.metadata import find_sidecar

RNG = np.random.default_rng(1234)
SOFTWARE = f"deblurcli {__version__}".encode()


# ------------------------------------------------------------------------------------------- fixtures


def photo_pixels(h: int, w: int, c: int = 3, dtype=np.uint8) -> np.ndarray:
    """A smooth gradient plus noise: JPEG-friendly, and every row/column distinct (orientation checks)."""
    top = np.iinfo(dtype).max
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = [x / max(w - 1, 1), y / max(h - 1, 1), (x + y) / (w + h)]
    base = np.stack(planes[:c] + [np.full((h, w), 0.5)] * (c - 3), -1)
    noise = RNG.random((h, w, c)) * 0.08
    return np.clip((base * 0.9 + noise) * top, 0, top).astype(dtype)


def thumbnail_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (10, 200, 30)).save(buf, "JPEG")
    return buf.getvalue()


def camera_exif(
    *, orientation: int = 6, width: int = 40, height: int = 24, software: bool = True, thumbnail: bool = True
) -> bytes:
    zeroth = {
        piexif.ImageIFD.Make: b"Canon",
        piexif.ImageIFD.Model: b"Canon EOS R5",
        piexif.ImageIFD.Orientation: orientation,
        piexif.ImageIFD.XResolution: (300, 1),
        piexif.ImageIFD.YResolution: (300, 1),
        piexif.ImageIFD.ResolutionUnit: 2,
        piexif.ImageIFD.DateTime: b"2024:05:01 12:34:56",
        piexif.ImageIFD.Artist: b"A. Photographer",
        piexif.ImageIFD.Copyright: b"(c) 2024",
    }
    if software:
        zeroth[piexif.ImageIFD.Software] = b"Firmware 1.2.3"
    exif = {
        piexif.ExifIFD.ExposureTime: (1, 250),
        piexif.ExifIFD.FNumber: (28, 10),
        piexif.ExifIFD.ISOSpeedRatings: 400,
        piexif.ExifIFD.DateTimeOriginal: b"2024:05:01 12:34:56",
        piexif.ExifIFD.LensModel: b"RF24-105mm F4 L IS USM",
        piexif.ExifIFD.FocalLength: (50, 1),
        piexif.ExifIFD.MakerNote: bytes(range(256)) * 3,
        piexif.ExifIFD.PixelXDimension: width,
        piexif.ExifIFD.PixelYDimension: height,
        piexif.ExifIFD.UserComment: b"ASCII\x00\x00\x00hello",
    }
    gps = {
        piexif.GPSIFD.GPSVersionID: (2, 3, 0, 0),
        piexif.GPSIFD.GPSLatitudeRef: b"N",
        piexif.GPSIFD.GPSLatitude: ((51, 1), (30, 1), (2615, 100)),
        piexif.GPSIFD.GPSLongitudeRef: b"W",
        piexif.GPSIFD.GPSLongitude: ((0, 1), (7, 1), (3999, 100)),
        piexif.GPSIFD.GPSAltitude: (35, 1),
    }
    d = {
        "0th": zeroth,
        "Exif": exif,
        "GPS": gps,
        "Interop": {piexif.InteropIFD.InteroperabilityIndex: b"R98"},
        "1st": {},
        "thumbnail": None,
    }
    if thumbnail:
        d["1st"] = {
            piexif.ImageIFD.Compression: 6,
            piexif.ImageIFD.XResolution: (72, 1),
            piexif.ImageIFD.YResolution: (72, 1),
            piexif.ImageIFD.ResolutionUnit: 2,
        }
        d["thumbnail"] = thumbnail_jpeg()
    return piexif.dump(d)


@functools.cache  # one profile per run: createProfile stamps the current second into the header
def p3_like_icc() -> bytes:
    """An RGB ICC profile that is not sRGB: the sRGB profile with Display P3 (D50) primaries patched in."""
    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    count = struct.unpack_from(">I", icc, 128)[0]
    primaries = {
        b"rXYZ": (0.5151, 0.2412, -0.0011),
        b"gXYZ": (0.2920, 0.6922, 0.0419),
        b"bXYZ": (0.1571, 0.0666, 0.7841),
    }
    for k in range(count):
        sig, off, _ = struct.unpack_from(">4sII", icc, 132 + 12 * k)
        if sig in primaries:
            struct.pack_into(">3i", icc, off + 8, *(round(v * 65536) for v in primaries[sig]))
    icc[84:100] = bytes(16)  # profile ID no longer valid: zero means "not computed"
    assert icc[16:20] == b"RGB "
    return bytes(icc)


def png_bytes(
    pixels: np.ndarray, bit_depth: int, color_type: int, extra_chunks: list[tuple[bytes, bytes]] = ()
) -> bytes:
    """A PNG written by hand (filter 0), independent of Pillow and of our writer."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    h, w = pixels.shape[:2]
    raw = pixels.astype(">u2" if bit_depth == 16 else np.uint8).reshape(h, -1).view(np.uint8)
    body = b"".join(b"\x00" + row.tobytes() for row in raw)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0))
    for kind, data in extra_chunks:
        out += chunk(kind, data)
    return out + chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b"")


def tiff_bytes(pixels: np.ndarray, *, sample_format: int = 1, extra_samples: tuple[int, ...] = ()) -> bytes:
    """An uncompressed little-endian TIFF written by hand (one strip)."""
    h, w, c = pixels.shape
    bits = pixels.dtype.itemsize * 8
    data = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    photometric = 2 if c - len(extra_samples) == 3 else 1
    entries = [
        (256, 4, 1, w),
        (257, 4, 1, h),
        (258, 3, c, None),
        (259, 3, 1, 1),
        (262, 3, 1, photometric),
        (273, 4, 1, None),
        (277, 3, 1, c),
        (278, 4, 1, h),
        (279, 4, 1, len(data)),
        (284, 3, 1, 1),
    ]
    if extra_samples:
        entries.append((338, 3, len(extra_samples), extra_samples[0]))
    entries.append((339, 3, c, None))
    ifd_size = 2 + 12 * len(entries) + 4
    extra_at = 8 + ifd_size
    extra = struct.pack(f"<{c}H", *([bits] * c)) + struct.pack(f"<{c}H", *([sample_format] * c))
    data_at = extra_at + len(extra)
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)))
    for tag, typ, count, value in entries:
        if tag == 258:
            value = bits if c == 1 else extra_at
        elif tag == 339:
            value = sample_format if c == 1 else extra_at + 2 * c
        elif tag == 273:
            value = data_at
        packed = struct.pack("<HHI", tag, typ, count)
        packed += (
            struct.pack("<HH", value, 0)
            if typ == 3 and (count == 1 or tag == 258 and c == 1)
            else struct.pack("<I", value)
        )
        out += packed
    out += b"\x00\x00\x00\x00" + extra + data
    return bytes(out)


def xmp_packet(orientation: int = 6, width: int = 40, height: int = 24) -> bytes:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
        'xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        f'tiff:Orientation="{orientation}" exif:PixelXDimension="{width}" exif:PixelYDimension="{height}">'
        "<dc:subject><rdf:Bag><rdf:li>harbour</rdf:li><rdf:li>sunset</rdf:li></rdf:Bag></dc:subject>"
        '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode("utf-8")


def iptc_app13() -> tuple[bytes, bytes]:
    """(APP13 segment, IPTC records): caption + keywords, plus a Photoshop thumbnail resource to drop."""
    iptc = b"\x1c\x02\x00\x00\x02\x00\x04" + b"\x1c\x02\x78\x00\x0dHarbour, dusk" + b"\x1c\x02\x19\x00\x04boat"

    def res(rid: int, data: bytes) -> bytes:
        return (
            b"8BIM"
            + struct.pack(">H", rid)
            + b"\x00\x00"
            + struct.pack(">I", len(data))
            + data
            + b"\x00" * (len(data) & 1)
        )

    block = res(0x0404, iptc) + res(0x040C, b"stale-thumbnail" * 10) + res(0x0425, bytes(16))
    return b"\xff\xed" + struct.pack(">H", 2 + 14 + len(block)) + b"Photoshop 3.0\x00" + block, iptc


@pytest.fixture
def camera_jpeg(tmp_path: Path) -> Path:
    """40 wide x 24 tall as stored, Orientation 6 (display: 24 wide x 40 tall), full camera metadata."""
    path = tmp_path / "IMG_0001.JPG"
    app13, _ = iptc_app13()
    Image.fromarray(photo_pixels(24, 40)).save(
        path,
        "JPEG",
        quality=92,
        exif=camera_exif(),
        icc_profile=p3_like_icc(),
        xmp=xmp_packet(),
        extra=app13,
        dpi=(300, 300),
    )
    return path


def assert_exif_carried(src_exif: bytes, out_exif: bytes | str, width: int, height: int) -> None:
    """Every tag of every IFD survives, except the ones we must change (and the thumbnail IFD)."""
    src, out = piexif.load(src_exif), piexif.load(out_exif)
    pointers = {piexif.ImageIFD.ExifTag, piexif.ImageIFD.GPSTag, piexif.ExifIFD.InteroperabilityTag}
    expected_changes = {
        "0th": {piexif.ImageIFD.Orientation: 1, piexif.ImageIFD.Software: SOFTWARE},
        "Exif": {piexif.ExifIFD.PixelXDimension: width, piexif.ExifIFD.PixelYDimension: height},
    }
    for ifd in ("0th", "Exif", "GPS", "Interop"):
        want = {k: v for k, v in src[ifd].items() if k not in pointers}
        want.update(expected_changes.get(ifd, {}))
        got = {k: v for k, v in out[ifd].items() if k not in pointers}
        assert got == want, ifd
    assert out["thumbnail"] is None and out["1st"] == {}


def change(rgb: np.ndarray) -> np.ndarray:
    """The 'deblurring': a visible, deterministic pixel change."""
    return (1.0 - rgb).astype(np.float32)


# ---------------------------------------------------------------------------------------------- JPEG


def test_camera_jpeg_round_trip_keeps_everything(camera_jpeg: Path, tmp_path: Path) -> None:
    photo = read_photo(camera_jpeg)
    stored = Image.open(camera_jpeg)
    upright = np.asarray(ImageOps.exif_transpose(stored)).astype(np.float32) / 255
    assert photo.rgb.shape == (40, 24, 3) and photo.rgb.dtype == np.float32
    np.testing.assert_array_equal(photo.rgb, upright)  # orientation 6 applied, same decoder
    assert photo.orientation == 6 and photo.exif_parsed and photo.warnings == []

    out = tmp_path / "out" / "sharp.jpg"
    warns = write_photo(out, change(photo.rgb), photo)
    assert warns == []
    res = Image.open(out)
    assert res.size == (24, 40) and res.mode == "RGB"
    assert res.info["icc_profile"] == p3_like_icc()  # byte for byte
    assert res.info["dpi"] == pytest.approx((300, 300))
    assert_exif_carried(camera_exif(), str(out), width=24, height=40)
    assert res.getexif()[0x0112] == 1
    assert thumbnail_jpeg() not in out.read_bytes()  # the stale thumbnail is gone, not just unlinked
    assert len(res.info["exif"]) < len(camera_exif())
    assert b'tiff:Orientation="1"' in res.info["xmp"] and b'exif:PixelXDimension="24"' in res.info["xmp"]
    assert b"<rdf:li>harbour</rdf:li>" in res.info["xmp"]
    assert IptcImagePlugin.getiptcinfo(res)[(2, 120)] == b"Harbour, dusk"
    ps = b"".join(p for m, p in res.applist if m == b"APP13" or m == "APP13")
    assert b"stale-thumbnail" not in ps and b"8BIM\x04\x25" in ps  # thumbnail resource dropped, rest kept
    # 4:4:4 chroma and quality ~95: the changed pixels come back closely
    from PIL import JpegImagePlugin

    assert JpegImagePlugin.get_sampling(res) == 0
    back = read_photo(out)
    assert back.orientation == 1
    assert np.abs(back.rgb - change(photo.rgb)).mean() < 0.01


def test_exif_without_software_tag_and_without_thumbnail(tmp_path: Path) -> None:
    src = tmp_path / "a.jpg"
    exif = camera_exif(orientation=1, software=False, thumbnail=False)
    Image.fromarray(photo_pixels(24, 40)).save(src, exif=exif)
    photo = read_photo(src)
    write_photo(tmp_path / "b.jpg", change(photo.rgb), photo)
    assert_exif_carried(exif, str(tmp_path / "b.jpg"), width=40, height=24)


def test_maker_note_and_unknown_tags_survive_byte_for_byte(tmp_path: Path) -> None:
    """Tags piexif does not know (private 0xC6xx, a vendor tag in the Exif IFD) and their types stay."""
    ex = Image.Exif()
    ex[0x0112] = 3
    ex[0xC6F8] = b"private-undefined-data"
    ex.get_ifd(0x8769)[0xA433] = "Lens Maker"
    ex.get_ifd(0x8769)[0x9999] = 12345
    src = tmp_path / "a.png"
    Image.fromarray(photo_pixels(20, 30)).save(src, exif=ex.tobytes())
    photo = read_photo(src)
    assert photo.orientation == 3
    for suffix in (".jpg", ".png", ".webp", ".tif"):
        out = tmp_path / f"b{suffix}"
        write_photo(out, change(photo.rgb), photo)
        got = Image.open(out).getexif()
        assert got[0x0112] == 1 and got[0xC6F8] == b"private-undefined-data", suffix
        assert got.get_ifd(0x8769)[0xA433] == "Lens Maker" and got.get_ifd(0x8769)[0x9999] == 12345, suffix
        assert got[0x0131] == SOFTWARE.decode(), suffix


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's exif_transpose on piexif's empty IFD1
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_exif_transpose(tmp_path: Path, orientation: int) -> None:
    src = tmp_path / f"o{orientation}.png"
    Image.fromarray(photo_pixels(6, 9)).save(src, exif=camera_exif(orientation=orientation, thumbnail=False))
    photo = read_photo(src)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(src))).astype(np.float32) / 255
    np.testing.assert_array_equal(photo.rgb, expected)


@pytest.mark.parametrize("suffix", [".png", ".webp", ".tif"])
def test_camera_metadata_into_other_formats(camera_jpeg: Path, tmp_path: Path, suffix: str) -> None:
    photo = read_photo(camera_jpeg)
    out = tmp_path / f"out{suffix}"
    warns = write_photo(out, change(photo.rgb), photo)
    res = Image.open(out)
    assert res.size == (24, 40)
    assert res.info["icc_profile"] == p3_like_icc()
    if suffix == ".tif":
        assert_exif_carried_tiff(camera_exif(), out)
        assert res.tag_v2[33723] and b"Harbour, dusk" in bytes(res.tag_v2[33723])
        assert b'tiff:Orientation="1"' in bytes(res.tag_v2[700])
        assert warns == []
    else:
        assert_exif_carried(camera_exif(), res.info["exif"], width=24, height=40)
        assert b'tiff:Orientation="1"' in (
            res.info["xmp"] if isinstance(res.info["xmp"], bytes) else res.info["xmp"].encode()
        )
        assert any("IPTC" in w for w in warns)  # PNG/WebP cannot hold IPTC: said, not silent


def assert_exif_carried_tiff(src_exif: bytes, out: Path) -> None:
    """In a TIFF the EXIF tags live in the file's own IFD0 plus sub-IFDs."""
    src = piexif.load(src_exif)
    got = Image.open(out).getexif()
    assert got[0x0112] == 1 and got[0x0131] == SOFTWARE.decode()
    for tag in (piexif.ImageIFD.Make, piexif.ImageIFD.Model, piexif.ImageIFD.Artist, piexif.ImageIFD.Copyright):
        assert got[tag] == src["0th"][tag].decode()
    exif_ifd = got.get_ifd(0x8769)
    assert exif_ifd[piexif.ExifIFD.MakerNote] == src["Exif"][piexif.ExifIFD.MakerNote]
    assert exif_ifd[piexif.ExifIFD.DateTimeOriginal] == "2024:05:01 12:34:56"
    assert exif_ifd[piexif.ExifIFD.LensModel] == "RF24-105mm F4 L IS USM"
    assert (exif_ifd[piexif.ExifIFD.PixelXDimension], exif_ifd[piexif.ExifIFD.PixelYDimension]) == (24, 40)
    gps = got.get_ifd(0x8825)
    assert gps[piexif.GPSIFD.GPSLatitudeRef] == "N" and float(gps[piexif.GPSIFD.GPSLatitude][2]) == 26.15


def _values(ifd: dict) -> dict:
    def norm(v):
        if isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, int) for x in v):
            return Fraction(*v)
        return tuple(norm(x) for x in v) if isinstance(v, tuple) else v

    return {k: norm(v) for k, v in ifd.items()}


def test_tiff_exif_round_trips_to_jpeg(camera_jpeg: Path, tmp_path: Path) -> None:
    photo = read_photo(camera_jpeg)
    tif = tmp_path / "mid.tif"
    write_photo(tif, photo.rgb, photo)
    again = read_photo(tif)
    assert again.orientation == 1 and again.icc_profile == p3_like_icc()
    write_photo(tmp_path / "end.jpg", again.rgb, again)
    out = piexif.load(str(tmp_path / "end.jpg"))
    # Pillow lays a TIFF's EXIF out anew and reduces rationals (2615/100 -> 523/20): same values.
    assert _values(out["GPS"]) == _values(piexif.load(camera_exif())["GPS"])
    assert out["Interop"] == piexif.load(camera_exif())["Interop"]
    assert out["Exif"][piexif.ExifIFD.MakerNote] == bytes(range(256)) * 3


# ----------------------------------------------------------------------------------- bit depth, alpha


def test_16bit_rgb_png_round_trip_keeps_16_bits(tmp_path: Path) -> None:
    px = photo_pixels(20, 30, dtype=np.uint16)
    src = tmp_path / "deep.png"
    src.write_bytes(png_bytes(px, 16, 2, [(b"iCCP", b"P3\x00\x00" + zlib.compress(p3_like_icc()))]))
    photo = read_photo(src)
    assert photo.bit_depth == 16 and not photo.grayscale
    np.testing.assert_array_equal(np.rint(photo.rgb * 65535).astype(np.uint16), px)  # not via 8 bits
    out = tmp_path / "deep_out.png"
    write_photo(out, change(photo.rgb), photo)
    back = read_photo(out)
    assert back.bit_depth == 16 and back.icc_profile == p3_like_icc()
    np.testing.assert_array_equal(np.rint(back.rgb * 65535).astype(np.uint16), 65535 - px)
    assert (np.rint(back.rgb * 65535).astype(np.int64) % 257).any()  # values an 8-bit path cannot produce


def test_16bit_rgba_tiff_round_trip(tmp_path: Path) -> None:
    px = photo_pixels(18, 26, c=4, dtype=np.uint16)
    src = tmp_path / "deep.tif"
    src.write_bytes(tiff_bytes(px, extra_samples=(2,)))
    photo = read_photo(src)
    assert photo.bit_depth == 16 and photo.alpha is not None
    np.testing.assert_array_equal(np.rint(photo.rgb * 65535).astype(np.uint16), px[..., :3])
    for suffix in (".tif", ".png"):
        out = tmp_path / f"out{suffix}"
        write_photo(out, change(photo.rgb), photo)
        back = read_photo(out)
        assert back.bit_depth == 16 and Image.open(out).mode == "RGBA"
        np.testing.assert_array_equal(np.rint(back.alpha * 65535).astype(np.uint16), px[..., 3])  # untouched
        np.testing.assert_array_equal(np.rint(back.rgb * 65535).astype(np.uint16), 65535 - px[..., :3])


def test_16bit_grayscale_stays_16bit_grayscale(tmp_path: Path) -> None:
    px = photo_pixels(16, 20, dtype=np.uint16)[..., 0]
    for suffix in (".png", ".tif"):
        src = tmp_path / f"g{suffix}"
        Image.fromarray(px).save(src)  # Pillow writes I;16
        photo = read_photo(src)
        assert photo.grayscale and photo.bit_depth == 16
        assert np.array_equal(photo.rgb[..., 0], photo.rgb[..., 2])
        out = tmp_path / f"g_out{suffix}"
        write_photo(out, change(photo.rgb), photo)
        res = Image.open(out)
        assert res.mode == "I;16"
        np.testing.assert_array_equal(np.asarray(res), 65535 - px)


def test_16bit_to_jpeg_warns(tmp_path: Path) -> None:
    src = tmp_path / "deep.png"
    src.write_bytes(png_bytes(photo_pixels(8, 8, dtype=np.uint16), 16, 2))
    warns = write_photo(tmp_path / "x.jpg", read_photo(src).rgb, read_photo(src))
    assert any("16-bit" in w and "8-bit" in w for w in warns)


def test_rgba_png_alpha_passes_through_untouched(tmp_path: Path) -> None:
    px = photo_pixels(20, 24, c=4)
    px[..., 3] = RNG.integers(0, 256, (20, 24))
    src = tmp_path / "rgba.png"
    Image.fromarray(px, "RGBA").save(src)
    photo = read_photo(src)
    assert photo.alpha is not None and photo.rgb.shape == (20, 24, 3)
    for suffix in (".png", ".webp", ".tif"):
        out = tmp_path / f"o{suffix}"
        write_photo(out, change(photo.rgb), photo)
        res = np.asarray(Image.open(out))
        assert res.shape[2] == 4
        if suffix != ".webp":  # lossy WebP keeps alpha exactly, colour approximately
            np.testing.assert_array_equal(res[..., :3], 255 - px[..., :3])
        np.testing.assert_array_equal(res[..., 3], px[..., 3])
    warns = write_photo(tmp_path / "o.jpg", photo.rgb, photo)
    assert any("alpha" in w for w in warns)


def test_grayscale_jpeg_stays_grayscale(tmp_path: Path) -> None:
    src = tmp_path / "bw.jpg"
    Image.fromarray(photo_pixels(16, 16)[..., 0], "L").save(src, exif=camera_exif(orientation=1))
    photo = read_photo(src)
    assert photo.grayscale and photo.bit_depth == 8
    write_photo(tmp_path / "bw_out.jpg", change(photo.rgb), photo)
    assert Image.open(tmp_path / "bw_out.jpg").mode == "L"


def test_palette_with_transparency_becomes_rgba(tmp_path: Path) -> None:
    pal = Image.new("P", (12, 10))
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    idx = (np.arange(120).reshape(10, 12) % 3).astype(np.uint8)
    pal = Image.fromarray(idx, "P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    src = tmp_path / "pal.png"
    pal.save(src, transparency=1)
    photo = read_photo(src)
    assert photo.alpha is not None and any("palette" in w for w in photo.warnings)
    np.testing.assert_array_equal(photo.alpha, (idx != 1).astype(np.float32))
    np.testing.assert_array_equal(photo.rgb[idx == 0], np.tile([1.0, 0, 0], ((idx == 0).sum(), 1)))
    write_photo(tmp_path / "pal_out.png", photo.rgb, photo)
    res = Image.open(tmp_path / "pal_out.png")
    assert res.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(res)[..., 3], np.where(idx == 1, 0, 255))


def test_cmyk_jpeg_is_converted_with_a_warning(tmp_path: Path) -> None:
    cmyk = np.zeros((8, 8, 4), np.uint8)
    cmyk[:4, :, 1:3] = 255  # top: M+Y = red; bottom: plain white
    src = tmp_path / "cmyk.jpg"
    Image.fromarray(cmyk, "CMYK").save(src, quality=100)
    photo = read_photo(src)
    assert any("CMYK" in w for w in photo.warnings)
    assert photo.rgb[:3].mean(axis=(0, 1)) == pytest.approx([1, 0, 0], abs=0.05)
    assert photo.rgb[5:].min() > 0.95
    write_photo(tmp_path / "rgb.jpg", photo.rgb, photo)
    assert Image.open(tmp_path / "rgb.jpg").mode == "RGB"


def test_ycck_jpeg_is_converted_with_a_warning(tmp_path: Path) -> None:
    from test_robust_images import ycck_jpeg

    (tmp_path / "ycck.jpg").write_bytes(ycck_jpeg((255, 0, 0), (255, 255, 255)))
    photo = read_photo(tmp_path / "ycck.jpg")
    assert any("YCCK image converted to RGB" in w for w in photo.warnings)
    assert photo.rgb[:7].mean(axis=(0, 1)) == pytest.approx([1, 0, 0], abs=0.02)  # red on white, not inverted
    assert photo.rgb[9:].min() > 0.98


def test_cmyk_with_a_profile_that_cannot_convert_it_falls_back_and_says_so(tmp_path: Path) -> None:
    rgb = Image.fromarray(photo_pixels(8, 8))
    # No CMYK profile can be built offline (ImageCms.createProfile makes only sRGB/LAB/XYZ); an RGB profile
    # on CMYK data cannot drive the transform, so the naive conversion is used and the warning says so.
    src = tmp_path / "cmyk.jpg"
    rgb.convert("CMYK").save(src, icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    photo = read_photo(src)
    assert any("without a colour profile" in w for w in photo.warnings)
    assert photo.icc_profile is None


# ------------------------------------------------------------------------------------ broken metadata


def test_unparsable_exif_is_carried_raw_and_pixels_not_rotated(tmp_path: Path) -> None:
    junk = b"Exif\x00\x00" + b"MM\x00*" + struct.pack(">I", 9999) + b"garbage" * 5
    src = tmp_path / "bad.jpg"
    Image.fromarray(photo_pixels(10, 14)).save(src, exif=junk)
    photo = read_photo(src)
    assert photo.rgb.shape == (10, 14, 3) and not photo.exif_parsed
    assert any("EXIF cannot be parsed" in w for w in photo.warnings)
    write_photo(tmp_path / "out.jpg", change(photo.rgb), photo)
    assert Image.open(tmp_path / "out.jpg").info["exif"] == junk


def test_exif_too_big_for_jpeg_is_dropped_with_a_warning(tmp_path: Path) -> None:
    ex = Image.Exif()
    ex.get_ifd(0x8769)[0x927C] = bytes(70_000)  # a 70 kB maker note: fine in PNG, too big for JPEG APP1
    src = tmp_path / "big.png"
    Image.fromarray(photo_pixels(8, 8)).save(src, exif=ex.tobytes())
    photo = read_photo(src)
    warns = write_photo(tmp_path / "out.jpg", photo.rgb, photo)
    assert any("EXIF dropped" in w for w in warns)
    assert "exif" not in Image.open(tmp_path / "out.jpg").info


# ---------------------------------------------------------------------------------------- XMP sidecar


@pytest.mark.parametrize("style", ["photo.xmp", "photo.jpg.xmp"])
def test_xmp_sidecar_is_copied_beside_the_output(camera_jpeg: Path, tmp_path: Path, style: str) -> None:
    sidecar = (
        camera_jpeg.with_suffix(".xmp") if style == "photo.xmp" else camera_jpeg.with_name(camera_jpeg.name + ".xmp")
    )
    sidecar.write_bytes(xmp_packet(orientation=6))
    assert find_sidecar(camera_jpeg) == sidecar
    out = tmp_path / "elsewhere" / "sharp.jpg"
    photo = read_photo(camera_jpeg)
    write_photo(out, photo.rgb, photo)
    copied = out.with_suffix(".xmp") if style == "photo.xmp" else out.with_name("sharp.jpg.xmp")
    assert copied.read_bytes() == xmp_packet(orientation=6).replace(b'tiff:Orientation="6"', b'tiff:Orientation="1"')


# ------------------------------------------------------------------------------------------- writing


def test_output_format_follows_suffix_and_unknown_suffix_is_refused(camera_jpeg: Path, tmp_path: Path) -> None:
    photo = read_photo(camera_jpeg)
    for suffix, fmt in ((".JPEG", "JPEG"), (".png", "PNG"), (".WebP", "WEBP"), (".tiff", "TIFF")):
        write_photo(tmp_path / f"x{suffix}", photo.rgb, photo)
        assert Image.open(tmp_path / f"x{suffix}").format == fmt
    with pytest.raises(PhotoError, match="cannot write '.bmp'"):
        write_photo(tmp_path / "x.bmp", photo.rgb, photo)


def test_refuses_to_overwrite_unless_asked(camera_jpeg: Path, tmp_path: Path) -> None:
    photo = read_photo(camera_jpeg)
    out = tmp_path / "out.jpg"
    out.write_bytes(b"precious")
    with pytest.raises(PhotoError, match="already exists.*--overwrite"):
        write_photo(out, photo.rgb, photo)
    assert out.read_bytes() == b"precious"
    write_photo(out, photo.rgb, photo, overwrite=True)
    assert Image.open(out).size == (24, 40)


def test_quality_parameter_controls_jpeg_size(camera_jpeg: Path, tmp_path: Path) -> None:
    photo = read_photo(camera_jpeg)
    write_photo(tmp_path / "q95.jpg", photo.rgb, photo)
    write_photo(tmp_path / "q50.jpg", photo.rgb, photo, quality=50)
    assert (tmp_path / "q50.jpg").stat().st_size < (tmp_path / "q95.jpg").stat().st_size


def test_photo_from_plain_array_writes_without_metadata(tmp_path: Path) -> None:
    rgb = photo_pixels(9, 11).astype(np.float32) / 255
    for suffix in (".jpg", ".png", ".tif", ".webp"):
        assert write_photo(tmp_path / f"p{suffix}", rgb, Photo(tmp_path / "mem.png", rgb)) == []
    np.testing.assert_array_equal(read_photo(tmp_path / "p.png").rgb, rgb)
    np.testing.assert_array_equal(read_photo(tmp_path / "p.tif").rgb, rgb)


def test_non_finite_pixels_are_refused(tmp_path: Path) -> None:
    rgb = np.zeros((4, 4, 3), np.float32)
    rgb[1, 1, 1] = np.nan
    with pytest.raises(PhotoError, match="non-finite"):
        write_photo(tmp_path / "n.png", rgb, Photo(tmp_path / "n.png", rgb))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not features.check("avif"), reason="Pillow built without AVIF")
def test_avif_read_and_write(tmp_path: Path) -> None:
    src = tmp_path / "a.avif"
    Image.fromarray(photo_pixels(16, 16)).save(src, exif=camera_exif(orientation=6, width=16, height=16))
    photo = read_photo(src)
    assert photo.orientation == 6 and photo.rgb.shape == (16, 16, 3)
    write_photo(tmp_path / "b.avif", change(photo.rgb), photo)
    back = read_photo(tmp_path / "b.avif")
    assert back.orientation == 1  # Pillow moves Orientation into the AVIF transform boxes; none remain
    assert Image.open(tmp_path / "b.avif").getexif().get_ifd(0x8825)[1] == "N"
    assert np.abs(back.rgb - change(photo.rgb)).mean() < 0.03


def test_heic_without_pillow_heif_names_the_extra(tmp_path: Path) -> None:
    try:  # with pillow-heif installed, HEIC is read instead (documented in deblurcli.photo)
        import pillow_heif  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("pillow-heif is installed")
    src = tmp_path / "IMG_1234.HEIC"
    src.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    with pytest.raises(PhotoError, match=r"pip install 'deblurcli\[heif\]'"):
        read_photo(src)


def test_supported_suffixes_are_lower_case_with_dot() -> None:
    assert all(s.startswith(".") and s == s.lower() for s in SUPPORTED_SUFFIXES)
    assert {".jpg", ".png", ".webp", ".tif", ".heic", ".avif"} <= set(SUPPORTED_SUFFIXES)


# ------------------------------------------------------------------------------------- atomic writes


class _FailingFile(io.RawIOBase):
    """A file object that accepts ``limit`` bytes, then fails like a full disk (or a Ctrl-C)."""

    def __init__(self, real: io.BufferedWriter, limit: int, exc: BaseException) -> None:
        self.real, self.limit, self.exc, self.n = real, limit, exc, 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        if self.n + len(data) > self.limit:
            self.real.write(bytes(data)[: self.limit - self.n])
            self.real.flush()
            raise self.exc
        self.n += len(data)
        return self.real.write(data)

    def fileno(self) -> int:
        return self.real.fileno()

    def flush(self) -> None:
        if not self.real.closed:
            self.real.flush()

    def close(self) -> None:
        self.real.close()
        super().close()


def _fail_writes(monkeypatch: pytest.MonkeyPatch, exc: BaseException, limit: int = 100) -> None:
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FailingFile(real_fdopen(fd, *a, **k), limit, exc))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif"])
def test_disk_full_mid_write_leaves_nothing(
    camera_jpeg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    photo = read_photo(camera_jpeg)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    _fail_writes(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(DiskFullError, match="no space left on device"):
        write_photo(out_dir / f"x{suffix}", photo.rgb, photo)
    assert _leftovers(out_dir) == []


def test_ctrl_c_mid_write_leaves_nothing_and_keeps_the_old_file(
    camera_jpeg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = read_photo(camera_jpeg)
    out = tmp_path / "out" / "x.png"
    out.parent.mkdir()
    out.write_bytes(b"old complete file")
    _fail_writes(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        write_photo(out, photo.rgb, photo, overwrite=True)
    assert _leftovers(out.parent) == ["x.png"] and out.read_bytes() == b"old complete file"


def test_fsync_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(PhotoError, match="Input/output error"):
        atomic_write_bytes(tmp_path / "f.bin", b"x" * 1000)
    assert _leftovers(tmp_path) == []


def test_read_only_folder_gives_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def ro(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", ro)
    with pytest.raises(PhotoError, match="cannot write 'f.jpg': the folder is on a read-only file system"):
        atomic_write_bytes(tmp_path / "f.jpg", b"x")
    assert _leftovers(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores folder permissions")
def test_really_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(PhotoError, match="permission denied"):
            atomic_write_bytes(folder / "f.jpg", b"x")
    finally:
        folder.chmod(0o755)


def test_atomic_output_exception_in_body_removes_temp_and_no_clobber(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "w.bin"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as fh:
            fh.write(b"partial")
            assert any(is_temp_file(n) for n in _leftovers(target.parent))
            raise RuntimeError("encoder bug")
    assert _leftovers(target.parent) == []
    atomic_write_bytes(target, b"one")
    with pytest.raises(PhotoError, match="already exists"):
        atomic_write_bytes(target, b"two", overwrite=False)
    assert target.read_bytes() == b"one" and _leftovers(target.parent) == ["w.bin"]


def test_output_permissions_follow_umask_not_tempfile(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "p.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "p.bin").stat().st_mode & 0o777 == 0o644


def test_temp_names_are_hidden_and_recognisable() -> None:
    assert is_temp_file(f".photo.jpg{TEMP_TAG}ab12cd34")
    assert not is_temp_file("photo.jpg") and not is_temp_file(".DS_Store")


def test_atomic_writing_does_not_import_photo_code() -> None:
    """Weights, checkpoints and evaluation reports are written through deblurcli.atomic: importing it must not
    pull Pillow, numpy or the photo package in."""
    code = ("import sys, deblurcli.atomic; "
            "print(sorted(m for m in ('PIL', 'numpy', 'deblurcli.photo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"
