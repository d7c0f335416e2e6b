"""Decoding a photo file: plugins, format sniffing, decompression bombs, modes, 16-bit depth, orientation.

Pillow's quirks are handled here: it decodes 16-bit RGB(A) only to 8 bits (so such files are read into
memory once and decoded from there a second time for the low bytes), it has its own bomb limit (replaced
by :data:`MAX_PIXELS`, which can be lifted), and it reads TIFF EXIF lazily from the open file. Float TIFFs
are opened in :mod:`.float_tiff`, JPEG data are checked in :mod:`.jpeg`, EXIF is parsed in :mod:`.exif`,
XMP/IPTC are gathered in :mod:`.metadata`.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import struct
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageCms, features

from deblurcli.errors import PhotoError
from deblurcli.photo.common import Photo, one_line, swap_rawmode, tile_rawmode
from deblurcli.photo.exif import source_exif, tiff_exif_block
from deblurcli.photo.float_tiff import FloatLayout, decode_float, open_float_tiff
from deblurcli.photo.jpeg import check_jpeg_data, max_jpeg_bytes
from deblurcli.photo.metadata import source_photoshop_iptc

# Pillow logs some complaints about a broken file (e.g. "More samples per pixel than can be decoded")
# before raising; we report each file's problem as one PhotoError line, so without this handler they would
# reach stderr a second time, raw and without the file's name, through logging's last-resort handler. They
# still propagate to any handler the application configures.
logging.getLogger("PIL").addHandler(logging.NullHandler())

#: Suffixes we read (lower case, with the dot). HEIC/HEIF need ``pillow-heif``; AVIF needs a Pillow built
#: with AVIF or ``pillow-avif-plugin``. Without them such files fail with a message naming the extra.
SUPPORTED_SUFFIXES: tuple[str, ...] = (
    ".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif",
)

#: Largest image read without ``allow_huge``: above the biggest single-shot camera sensors (150 MP), far
#: below what a forged header can claim (a 100000x100000 PNG would need 120 GB as float32).
MAX_PIXELS = 180_000_000

_RAW_SUFFIXES = {
    ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".raf", ".orf", ".rw2",
    ".pef", ".srw", ".x3f", ".3fr", ".iiq", ".erf", ".mef", ".mos", ".kdc", ".rwl",
}
_HEIF_EXTRA = "pip install 'deblurcli[heif]'"
_AVIF_EXTRA = "pip install 'deblurcli[avif]'"
_PIL_LIMIT_LOCK = threading.Lock()  # guards the lifting and restoring of Image.MAX_IMAGE_PIXELS
_pil_limit_users = 0  # read_photo calls now inside _pillow_limit_lifted
_pil_limit_saved: int | None = None


@contextmanager
def _pillow_limit_lifted() -> Iterator[None]:
    """Pillow's own bomb limit off while a photo is opened and decoded: :data:`MAX_PIXELS` replaces it.

    Pillow checks its limit (2 x ``Image.MAX_IMAGE_PIXELS``, 178.9 MP) not only when opening but again when
    a TIFF is loaded and whenever a file is opened anew, so lifting it for ``Image.open`` alone made
    ``--allow-huge`` fail for TIFFs and 16-bit PNGs over 178.9 MP. Concurrent reads share one lifting (the
    last one out restores the value), so no lock is held while pixels are decoded.
    """
    global _pil_limit_users, _pil_limit_saved
    with _PIL_LIMIT_LOCK:
        if _pil_limit_users == 0:
            _pil_limit_saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _pil_limit_users += 1
    try:
        yield
    finally:
        with _PIL_LIMIT_LOCK:
            _pil_limit_users -= 1
            if _pil_limit_users == 0:
                Image.MAX_IMAGE_PIXELS = _pil_limit_saved


def read_photo(path: str | os.PathLike[str], *, allow_huge: bool = False) -> Photo:
    """Decode a photo into float RGB (+ alpha) and keep its metadata aside.

    Raises :class:`PhotoError` with a one-line reason for empty, truncated, corrupt, unsupported or
    too-large files. Images over :data:`MAX_PIXELS` (decompression bombs) are refused unless
    ``allow_huge``. Animated WebP/PNG/AVIF and multi-page TIFF: the first frame/page is read and a
    warning is added to ``Photo.warnings``. 32-bit float TIFF is read as 0..1 display values (clipped,
    with a warning) and written back as 16-bit. GIF is refused (see :mod:`deblurcli.photo`).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _RAW_SUFFIXES:
        raise PhotoError(f"camera RAW files ({suffix}) are not supported: export a 16-bit TIFF first")
    try:
        st = path.stat()
    except FileNotFoundError:
        raise PhotoError("no such file") from None
    except OSError as e:
        raise PhotoError(f"cannot open: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise PhotoError("is a folder, not a photo")
    if st.st_size == 0:
        raise PhotoError("file is empty (0 bytes)")
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
    except OSError as e:
        raise PhotoError(f"cannot open: {e.strerror or e}") from None
    _require_plugins(head, suffix)

    warns: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        im, float_layout = _open_image(path, head, allow_huge, st.st_size)
    try:
        with warnings.catch_warnings(record=True) as caught_decoding, _pillow_limit_lifted():
            warnings.simplefilter("always")
            snapshot = None
            if _low_byte_rawmodes(im) is not None:
                opened, snapshot = _snapshot(im)
                im.close()
                im = opened
            photo = _decode(path, im, warns, float_layout, snapshot)
        caught += caught_decoding
        for msg in dict.fromkeys(one_line(w.message) for w in caught):  # Pillow's complaints, once each
            photo.warnings.append(f"decoder: {msg}")
        return photo
    except PhotoError:
        raise
    except MemoryError:
        w, h = im.size
        raise PhotoError(f"not enough memory to decode a {w}x{h} image") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError, TypeError) as e:
        raise PhotoError(f"truncated or corrupt {im.format or 'image'} data ({one_line(e)})") from None
    finally:
        im.close()


def _require_plugins(head: bytes, suffix: str) -> None:
    """Register HEIF/AVIF openers when the content or suffix asks for them, or name the missing extra."""
    brand = head[8:12] if head[4:8] == b"ftyp" else b""
    generic = brand in (b"mif1", b"msf1")  # HEIF container brands used by both HEIC and AVIF files
    if brand in (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx") or (generic and suffix != ".avif"):
        try:
            from pillow_heif import register_heif_opener  # type: ignore[import-not-found]
        except ImportError:
            raise PhotoError(f"reading HEIC/HEIF needs the optional extra: {_HEIF_EXTRA}") from None
        register_heif_opener()
    elif (brand in (b"avif", b"avis") or (generic and suffix == ".avif")) and not features.check("avif"):
        try:
            import pillow_avif  # type: ignore[import-not-found]  # noqa: F401  (registers the plugin)
        except ImportError:
            raise PhotoError(f"reading AVIF needs the optional extra: {_AVIF_EXTRA}") from None


def _sniff(head: bytes) -> str | None:
    """Name a format we do not read, for a more helpful refusal than 'cannot identify'."""
    if head.startswith(b"GIF8"):
        return "GIF"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF layout"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith(b"%PDF"):
        return "PDF"
    if head.startswith(b"8BPS"):
        return "Photoshop PSD"
    if head[4:8] == b"ftyp" and head[8:12] in (b"crx ",):
        return "Canon CR3 RAW"
    return None


def _read_formats() -> list[str]:
    Image.init()  # load every plugin so that the names below are registered openers
    return [f for f in ("JPEG", "MPO", "PNG", "WEBP", "TIFF", "AVIF", "HEIF") if f in Image.OPEN]


def _open_image(
    path: Path, head: bytes, allow_huge: bool, file_size: int
) -> tuple[Image.Image, FloatLayout | None]:
    """Open (header only) with Pillow's own bomb check replaced by ours, which can be lifted.

    Returns the image and, for a multi-channel float TIFF opened through :func:`open_float_tiff`, how
    its samples are laid out (else None). ``file_size`` counts in the memory check of a huge image whose
    file is held in memory while it is decoded (see :func:`_snapshot`).
    """
    layout: FloatLayout | None = None
    with _pillow_limit_lifted():
        try:
            im = Image.open(path, formats=_read_formats())
        except Image.UnidentifiedImageError:
            other = _sniff(head)
            opened = None
            if other == "TIFF layout":  # checked before its data are read: float32, then a copy per sample
                opened = open_float_tiff(path, lambda w, h, samples: _check_size(w, h, allow_huge, 8 * samples))
            if opened is not None:
                im, layout = opened
            elif other == "GIF":
                raise PhotoError("GIF is not supported (a 256-colour palette format): convert it to PNG") from None
            elif other == "TIFF layout":
                raise PhotoError(
                    "unsupported TIFF sample layout (e.g. 32-bit integer RGB or 16-bit gray+alpha): "
                    "export an 8- or 16-bit RGB TIFF"
                ) from None
            elif other:
                raise PhotoError(f"{other} files are not supported (JPEG, PNG, WebP, TIFF, HEIC, AVIF are)") from None
            else:
                raise PhotoError(
                    "not a recognised image: the content is not JPEG, PNG, WebP, TIFF, HEIC or AVIF"
                ) from None
        except MemoryError:
            raise PhotoError("not enough memory to open this image") from None
        except (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError, TypeError) as e:
            raise PhotoError(f"corrupt image header ({one_line(e)})") from None
    if layout is None:
        held = min(file_size, _snapshot_limit(im)) if _low_byte_rawmodes(im) is not None else 0
        try:
            _check_size(*im.size, allow_huge, 8 if im.mode == "F" else len(im.getbands()) * 2, held)
        except PhotoError:
            im.close()
            raise
    return im, layout


def _check_size(w: int, h: int, allow_huge: bool, per_pixel: int, held: int = 0) -> None:
    """Refuse, before anything is decoded, an invalid size, one over :data:`MAX_PIXELS` (unless
    ``allow_huge``), and a huge one whose decode would not fit in available memory.

    ``per_pixel`` is the bytes one pixel takes as decoded (before our float32 RGB and alpha); ``held``
    is what else is in memory meanwhile (the file, for a two-pass 16-bit decode).
    """
    if w <= 0 or h <= 0:
        raise PhotoError(f"invalid image size {w}x{h}")
    if w * h > MAX_PIXELS and not allow_huge:
        raise PhotoError(
            f"image claims {w}x{h} pixels ({w * h / 1e6:.0f} MP), over the {MAX_PIXELS // 1_000_000} MP "
            "safety limit (possible decompression bomb); pass --allow-huge if it is real"
        )
    if w * h <= MAX_PIXELS:
        return
    need = w * h * (per_pixel + 16) + held  # + float32 RGB + alpha
    avail = _memory_available()
    if avail is not None and need > avail:
        raise PhotoError(
            f"decoding {w}x{h} pixels needs about {need / 2**30:.1f} GiB of memory, "
            f"only {avail / 2**30:.1f} GiB is available"
        )


def _memory_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# Pillow decodes 16-bit RGB(A) to 8 bits by taking each sample's most significant byte. Decoding once more
# with the opposite byte order's rawmode yields the least significant bytes; together they are exact.
_LOW_BYTE_RAWMODE = {
    "RGB;16B": "RGB;16L", "RGB;16L": "RGB;16B",
    "RGBA;16B": "RGBA;16L", "RGBA;16L": "RGBA;16B",
    "RGBX;16B": "RGBX;16L", "RGBX;16L": "RGBX;16B",
}
_NATIVE_OTHER = "B" if sys.byteorder == "little" else "L"


def _low_rawmode(rawmode: str) -> str | None:
    if rawmode.endswith(";16N"):
        return rawmode[:-1] + _NATIVE_OTHER
    return _LOW_BYTE_RAWMODE.get(rawmode)


def _low_byte_rawmodes(im: Image.Image) -> list[str] | None:
    """For a 16-bit RGB(A) PNG/TIFF that Pillow decodes to 8 bits, the rawmodes that decode its low bytes
    (a second pass, see :func:`_decode_16bit_rgb`); None for every other image."""
    if im.format not in ("PNG", "TIFF") or im.mode not in ("RGB", "RGBA") or not im.tile:
        return None
    lows = [_low_rawmode(r) if r else None for r in (tile_rawmode(t.args) for t in im.tile)]
    if any(low is None for low in lows):
        return None
    return [low for low in lows if low is not None]


def _snapshot(im: Image.Image) -> tuple[Image.Image, bytes]:
    """The file behind ``im`` read once into memory (as far as the image can need, see
    :func:`_snapshot_limit`), and the image opened anew from those bytes.

    A 16-bit RGB(A) file is decoded twice (high bytes, then low bytes): from the file on disk, a file
    replaced or rewritten between the passes mixed two photos silently. From one in-memory copy both
    passes, and the metadata, see the same bytes; a file that changed between the header read and the
    copy is refused.
    """
    data = _file_start(im, _snapshot_limit(im))
    again = Image.open(io.BytesIO(data), formats=[im.format])
    if again.size != im.size or again.mode != im.mode or again.tile != im.tile:
        again.close()
        raise PhotoError("the file changed while it was being read: try again")
    return again, data


def _decode_16bit_rgb(im: Image.Image, snapshot: bytes | None) -> tuple[np.ndarray, bool] | None:
    """(uint16 H x W x C, grayscale) for a 16-bit RGB(A) or gray+alpha file that Pillow would decode to
    8 bits; None for anything else. ``snapshot`` is the file's bytes that ``im`` was opened from, for the
    second pass (see :func:`_snapshot`)."""
    if im.mode not in ("RGB", "RGBA") or not im.tile:
        return None
    raws = [tile_rawmode(t.args) for t in im.tile]
    if im.format == "PNG" and raws == ["LA;16B"] * len(raws):
        # 16-bit gray+alpha has the byte layout of 8-bit RGBA: (L hi, L lo, A hi, A lo).
        im.tile = [t._replace(args=swap_rawmode(t.args, "RGBA")) for t in im.tile]
        im.load()
        b = np.asarray(im).astype(np.uint16)
        gray = (b[..., 0] << 8) | b[..., 1]
        alpha = (b[..., 2] << 8) | b[..., 3]
        return np.stack([gray, alpha], axis=-1), True
    lows = _low_byte_rawmodes(im)
    if lows is None or snapshot is None:
        return None
    tiles = list(im.tile)
    im.load()
    hi = np.asarray(im)
    with Image.open(io.BytesIO(snapshot), formats=[im.format]) as again:
        again.tile = [t._replace(args=swap_rawmode(t.args, low)) for t, low in zip(tiles, lows, strict=True)]
        again.load()
        lo = np.asarray(again)
    return (hi.astype(np.uint16) << 8) | lo, False


class _Pixels(NamedTuple):
    """Decoded samples (uint8, uint16 or float32 H x W x C; alpha last when C is 2 or 4) and what they are."""

    samples: np.ndarray
    grayscale: bool
    bit_depth: int  #: 8 or 16: the depth the output keeps
    maxval: float  #: the sample value that means 1.0
    info: dict  #: the image's info once loaded (PNG text/eXIf after IDAT only appear then)
    icc: bytes | None


def _decode(
    path: Path, im: Image.Image, warns: list[str], float_layout: FloatLayout | None, snapshot: bytes | None
) -> Photo:
    fmt = im.format or "?"
    frames = int(getattr(im, "n_frames", 1) or 1)
    if frames > 1 and fmt != "MPO":
        kind = "pages" if fmt == "TIFF" else "frames"
        warns.append(f"{'multi-page' if fmt == 'TIFF' else 'animated'} {fmt} with {frames} {kind}: "
                     f"only the first is processed and the output is a single image")
    if im.mode in ("I", "I;32", "I;32S"):
        raise PhotoError("32-bit integer images are not supported: export a 16-bit TIFF or PNG")
    if im.mode == "LAB":
        raise PhotoError("CIELab images are not supported: export an RGB TIFF")

    # A TIFF's EXIF is read lazily from the open file, which loading the pixels closes: take it first.
    tiff_exif = tiff_exif_block(im, warns) if fmt == "TIFF" else None
    source_mode = im.mode
    info = dict(im.info)
    dpi = _dpi(info)
    px = _decode_pixels(im, float_layout, snapshot, info.get("icc_profile") or None, warns)
    info = px.info
    color = px.samples[..., :1] if px.grayscale else px.samples[..., :3]
    alpha_u = px.samples[..., -1] if px.samples.shape[-1] in (2, 4) else None

    exif, exif_parsed, orientation = source_exif(tiff_exif if fmt == "TIFF" else info.get("exif"), warns,
                                                 isobmff=fmt in ("HEIF", "AVIF"))
    if info.get("original_orientation") is not None:  # pillow-heif already applied the HEIF transforms
        orientation = 1
    rgb, alpha = _to_float(_orient(color, orientation),
                           None if alpha_u is None else _orient(alpha_u, orientation), px.maxval)

    xmp = info.get("xmp") or None
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    photoshop, iptc, xmp_ext = source_photoshop_iptc(im, fmt)
    png_text: dict[str, str] = {}
    if fmt == "PNG":
        png_text = {k: v for k, v in getattr(im, "text", {}).items()
                    if k != "XML:com.adobe.xmp" and not (exif and k.lower().startswith("raw profile type exif"))}
    return Photo(
        path=path, rgb=rgb, alpha=alpha, format=fmt, mode=source_mode, bit_depth=px.bit_depth,
        grayscale=px.grayscale, icc_profile=px.icc, exif=exif, exif_parsed=exif_parsed, orientation=orientation,
        xmp=xmp, xmp_extension=xmp_ext, iptc=iptc, photoshop=photoshop, dpi=dpi, png_text=png_text,
        frames=frames, warnings=warns,
    )


def _decode_pixels(
    im: Image.Image, float_layout: FloatLayout | None, snapshot: bytes | None, icc: bytes | None, warns: list[str]
) -> _Pixels:
    """The samples at the depth the file has: 32-bit float, 16 bits (also where Pillow alone gives 8), or 8."""
    wide = _decode_16bit_rgb(im, snapshot) if im.format in ("PNG", "TIFF") else None
    if im.mode == "F":
        samples = decode_float(im, float_layout, warns)
        info = dict(im.info)
        return _Pixels(samples, samples.shape[-1] in (1, 2), 16, 1.0, info, info.get("icc_profile") or icc)
    if wide is not None:
        info = dict(im.info)
        return _Pixels(wide[0], wide[1], 16, 65535.0, info, info.get("icc_profile") or icc)
    min_is_white = _min_is_white_16bit(im)
    if im.format in ("JPEG", "MPO"):
        check_jpeg_data(_file_start(im, max_jpeg_bytes(*im.size, len(im.getbands()))))
    im.load()
    info = dict(im.info)
    px = _decode_8bit(im, info, info.get("icc_profile") or icc, warns)
    if min_is_white:
        px = px._replace(samples=np.uint16(65535) - px.samples)
    return px


def _file_start(im: Image.Image, limit: int) -> bytes:
    """The first ``limit`` bytes (at most) of the file ``im`` was opened from, read through its own file
    object (its position kept). The limit is what the image can need: a hostile file with gigabytes of
    trailing data must not be read whole for the sake of a few megapixels."""
    fp = im.fp
    assert fp is not None
    position = fp.tell()
    try:
        size = fp.seek(0, os.SEEK_END)  # read(limit) would allocate all of a limit beyond the end
        fp.seek(0)
        return fp.read(min(limit, size))
    finally:
        fp.seek(position)


def _snapshot_limit(im: Image.Image) -> int:
    """Most bytes a 16-bit RGB(A) PNG/TIFF of this size can need: its samples stored uncompressed, twice
    over (no codec expands that much), plus 16 MiB of metadata (profiles, XMP, text)."""
    w, h = im.size
    return 2 * w * h * len(im.getbands()) * 2 + 16 * 2**20


#: Pillow's rawmodes that hand 16-bit gray samples over unchanged (as opposed to inverting ones).
_PLAIN_16BIT_RAWMODES = frozenset({"I;16", "I;16N", "I;16B", "I;16L"})


def _min_is_white_16bit(im: Image.Image) -> bool:
    """Whether ``im`` is a 16-bit MinIsWhite (photometric 0) TIFF whose samples Pillow leaves as stored.

    Pillow inverts 8-bit MinIsWhite while decoding but not 16-bit, and our writer says MinIsBlack: without
    the inversion here a 16-bit scan of a document came out as its negative. Checked on the tile rawmodes
    (before loading) so that a Pillow that learns to invert them itself is not inverted a second time.
    """
    if im.format != "TIFF" or not im.mode.startswith("I;16") or getattr(im, "tag_v2", {}).get(262) != 0:
        return False
    return bool(im.tile) and all(tile_rawmode(t.args) in _PLAIN_16BIT_RAWMODES for t in im.tile)


def _decode_8bit(im: Image.Image, info: dict, icc: bytes | None, warns: list[str]) -> _Pixels:
    """Pixels Pillow decodes itself, converted to L, LA, RGB, RGBA (or 16-bit gray) when they are not."""
    source = im  # ``im`` may be replaced by a converted copy, which has lost the file's metadata
    mode = im.mode
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if ("transparency" in info or mode == "PA") else "RGB")
        warns.append(f"palette image: written as {im.mode}")
    elif mode == "1":
        im = im.convert("L")
        warns.append("1-bit black-and-white image: written as 8-bit grayscale")
    elif mode in ("L", "RGB") and "transparency" in info:
        im = im.convert("LA" if mode == "L" else "RGBA")
    elif mode in ("La", "RGBa"):
        im = im.convert("LA" if mode == "La" else "RGBA")
    elif mode in ("RGBX", "YCbCr"):
        im = im.convert("RGB")
    elif mode == "CMYK":
        im, icc = _cmyk_to_rgb(im, icc, info, warns)
    if im.mode.startswith("I;16"):
        return _Pixels(np.asarray(im).astype(np.uint16)[..., None], True, 16, 65535.0, info, icc)
    if im.mode not in ("L", "LA", "RGB", "RGBA"):
        raise PhotoError(f"unsupported image mode {im.mode}")
    samples = np.asarray(im)
    if samples.ndim == 2:
        samples = samples[..., None]
    if source.format in ("PNG", "TIFF") and _declared_16bit(source):
        warns.append("16-bit image that Pillow can only decode at 8 bits: output is 8-bit")
    return _Pixels(samples, im.mode in ("L", "LA"), 8, 255.0, info, icc)


def _to_float(color: np.ndarray, alpha: np.ndarray | None, maxval: float) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 RGB (gray replicated) and alpha in [0, 1], C-contiguous."""
    rgb = color.astype(np.float32)
    rgb /= np.float32(maxval)  # division is correctly rounded: v / maxval exactly as float32 can hold it
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    rgb = np.ascontiguousarray(rgb)
    if alpha is None:
        return rgb, None
    out = np.ascontiguousarray(alpha.astype(np.float32))
    out /= np.float32(maxval)
    return rgb, out


def _declared_16bit(im: Image.Image) -> bool:
    tag = getattr(im, "tag_v2", None)
    if tag is not None:
        bits = tag.get(258)
        return bool(bits) and max(bits if isinstance(bits, tuple) else (bits,)) == 16
    return False


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None, info: dict, warns: list[str]) -> tuple[Image.Image, bytes | None]:
    """CMYK/YCCK to RGB through the embedded profile when there is one (then tagged sRGB)."""
    kind = "YCCK" if info.get("adobe_transform") == 2 else "CMYK"
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            out = ImageCms.profileToProfile(im, src, srgb, outputMode="RGB",
                                            renderingIntent=ImageCms.Intent.PERCEPTUAL)
            assert out is not None
            warns.append(f"{kind} image converted to RGB through its ICC profile; output is tagged sRGB")
            return out, srgb.tobytes()
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass
    warns.append(f"{kind} image converted to RGB without a colour profile (colours are approximate)")
    return im.convert("RGB"), None


def _dpi(info: dict) -> tuple[float, float] | None:
    dpi = info.get("dpi")
    try:
        if dpi and len(dpi) == 2 and all(float(d) > 0 for d in dpi):
            return float(dpi[0]), float(dpi[1])
    except (TypeError, ValueError):
        pass
    return None


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an H x W [x C] array, as ImageOps.exif_transpose does."""
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1]
    if orientation == 5:
        return a.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(a, -1)
    if orientation == 7:
        return a[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(a, 1)
    return a
