"""Reading and writing photos with everything they carry.

A photographer's output must be the same photo, only sharper. So reading keeps aside, untouched, every
piece of the file that is not pixels (EXIF, ICC profile, XMP, IPTC/Photoshop resources, PNG text, dpi,
alpha, bit depth, grayscale-ness), and writing puts each of them back into the output format that can
hold it, saying in a one-line warning whatever had to change or be dropped.

Decisions (tested in tests/test_photo.py and tests/test_hostile_files.py):

* **Orientation** is applied to the pixels when reading; the written EXIF (and XMP) say Orientation 1, so
  every viewer shows the output the same way up.
* **EXIF** is edited in place, never re-serialised from a parsed dict: Orientation, the pixel-dimension
  tags and Software are patched inside the original block and the embedded thumbnail is unlinked (and cut
  off when it is the tail of the block). Every other byte stays where it was, so unknown tags, their types
  and maker notes that use absolute offsets survive JPEG/PNG/WebP round trips byte for byte. An EXIF block
  we cannot parse is carried over unchanged (then the pixels are not rotated either, so the output looks
  as the input did) or, where the format refuses it, dropped, with a warning either way. TIFF outputs hold
  EXIF as a sub-IFD that Pillow lays out anew, so there a maker note with absolute offsets can break.
* **Colour**: pixels stay in the file's own encoding (Display P3 stays P3) and the ICC profile is copied
  byte for byte. CMYK/YCCK JPEGs and CMYK TIFFs become RGB (through their embedded profile when they have
  one, then tagged sRGB) with a warning.
* **Bit depth**: 16-bit PNG/TIFF are read at full depth (Pillow decodes 16-bit RGB(A) only to 8 bits, so
  the file is decoded a second time for the low bytes) and written at 16 bits by our own PNG/TIFF pixel
  writers, with Pillow writing a 1x1 template that carries the metadata.
* **32-bit float TIFF** (gray, gray+alpha, RGB, RGBA; any compression Pillow has, predictors 1-3) is
  read and processed as display values in 0..1, the only range the model knows: no tone mapping, values
  outside 0..1 clipped and NaN/inf zeroed, each with a warning, and the output is 16-bit (a warning says
  so). Pillow reads only one-channel float TIFFs, so multi-channel ones are opened through a rewritten
  first IFD (see :func:`_open_float_tiff`). 16/64-bit float, planar float and tiled float files with a
  predictor are refused with a message saying to export a 16-bit TIFF.
* **Animation**: animated WebP/PNG/AVIF and multi-page TIFFs are read as their first frame/page with a
  warning, and written as a still image. GIF is refused (a 256-colour palette format, not a photo format).
* **Decompression bombs**: an image over :data:`MAX_PIXELS` is refused before its pixels are decoded
  unless ``allow_huge``; even then it is refused if decoding it would not fit in available memory.
* **Atomic writes**: outputs are written to a hidden temporary file in the output folder, fsynced and
  renamed; any failure (disk full, read-only folder, Ctrl-C) removes the temporary file, and an existing
  file is replaced only when ``overwrite`` is asked for. A process killed outright (SIGKILL, power loss)
  cannot clean up: its leftover is hidden, skipped by input scans, and removed by the next run through
  :func:`remove_stale_temp_files`, which tells leftovers from live writes by the writer's flock.
* **XMP sidecars** (``photo.xmp`` or ``photo.jpg.xmp`` beside the input) are copied beside the output by
  :func:`write_photo` itself (through :func:`copy_sidecar`), with their orientation patched too.

This module never imports torch: it is used by the CLI, training and evaluation alike.
"""

from __future__ import annotations

import errno
import io
import logging
import mmap
import os
import re
import secrets
import stat
import struct
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageCms, PngImagePlugin, features

from deblurcli import __version__
from deblurcli.errors import PhotoError

try:
    import fcntl
except ImportError:  # Windows: no flock, so stale temporary files are never removed automatically
    fcntl = None  # type: ignore[assignment]

# Pillow logs some complaints about a broken file (e.g. "More samples per pixel than can be decoded")
# before raising; we report each file's problem as one PhotoError line, so without this handler they would
# reach stderr a second time, raw and without the file's name, through logging's last-resort handler. They
# still propagate to any handler the application configures.
logging.getLogger("PIL").addHandler(logging.NullHandler())

__all__ = [
    "MAX_PIXELS",
    "READ_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "TEMP_TAG",
    "WRITABLE_SUFFIXES",
    "DiskFullError",
    "Photo",
    "atomic_output",
    "atomic_write_bytes",
    "copy_sidecar",
    "find_sidecar",
    "is_temp_file",
    "read_photo",
    "remove_stale_temp_files",
    "write_photo",
]

#: Suffixes we read (lower case, with the dot). HEIC/HEIF need ``pillow-heif``; AVIF needs a Pillow built
#: with AVIF or ``pillow-avif-plugin``. Without them such files fail with a message naming the extra.
SUPPORTED_SUFFIXES: tuple[str, ...] = (
    ".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif",
)
READ_SUFFIXES = SUPPORTED_SUFFIXES
#: Suffixes we write; the output format follows the suffix. (AVIF only where the AVIF plugin is present.)
WRITABLE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".avif")

#: Largest image read without ``allow_huge``: above the biggest single-shot camera sensors (150 MP), far
#: below what a forged header can claim (a 100000x100000 PNG would need 120 GB as float32).
MAX_PIXELS = 180_000_000

#: Marker in the names of our temporary files (hidden: they also start with a dot), so that input scans
#: can skip them and a crashed run's leftovers are recognisable.
TEMP_TAG = ".deblurcli-tmp-"

_SUFFIX_FORMAT = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".png": "PNG", ".webp": "WEBP",
    ".tif": "TIFF", ".tiff": "TIFF", ".avif": "AVIF",
}
_RAW_SUFFIXES = {
    ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".raf", ".orf", ".rw2",
    ".pef", ".srw", ".x3f", ".3fr", ".iiq", ".erf", ".mef", ".mos", ".kdc", ".rwl",
}
_HEIF_EXTRA = "pip install 'deblurcli[heif]'"
_AVIF_EXTRA = "pip install 'deblurcli[avif]'"
_SOFTWARE = f"deblurcli {__version__}"
_PIL_OPEN_LOCK = threading.Lock()  # guards the temporary change of Image.MAX_IMAGE_PIXELS
_UMASK_LOCK = threading.Lock()


class DiskFullError(PhotoError):
    """The output device is full (ENOSPC/EDQUOT): every further write there would fail too, so a batch
    should stop rather than report the same error for each remaining file."""


@dataclass
class Photo:
    """A decoded photo plus everything needed to write it back without losing anything.

    ``rgb`` is float32 H x W x 3 in [0, 1], orientation applied, in the file's own colour encoding
    (grayscale replicated to 3 channels). ``alpha`` is float32 H x W in [0, 1] or None. The remaining
    fields describe the source so that :func:`write_photo` can rebuild the same kind of file.
    """

    path: Path
    rgb: np.ndarray
    alpha: np.ndarray | None = None
    format: str = "PNG"  #: Pillow's format name of the source ("JPEG", "PNG", "TIFF", "WEBP", ...)
    mode: str = "RGB"  #: Pillow mode as decoded ("RGB", "I;16", "P", "CMYK", ...)
    bit_depth: int = 8  #: bits per channel the output should keep (8 or 16)
    grayscale: bool = False
    icc_profile: bytes | None = None  #: profile describing ``rgb`` (byte for byte from the file)
    exif: bytes | None = None  #: raw TIFF-structured EXIF block, without the "Exif\0\0" prefix
    exif_parsed: bool = False  #: whether the block could be parsed (else it is carried over unchanged)
    orientation: int = 1  #: the EXIF orientation that was applied to the pixels when reading
    xmp: bytes | None = None
    xmp_extension: list[bytes] = field(default_factory=list)  #: JPEG ExtendedXMP APP1 payloads
    iptc: bytes | None = None  #: IPTC-NAA records
    photoshop: bytes | None = None  #: Photoshop image resources (8BIM blocks), thumbnails removed
    dpi: tuple[float, float] | None = None
    png_text: dict[str, str] = field(default_factory=dict)
    frames: int = 1
    warnings: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the oriented pixels."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


# --------------------------------------------------------------------------------------------- reading


def read_photo(path: str | os.PathLike[str], *, allow_huge: bool = False) -> Photo:
    """Decode a photo into float RGB (+ alpha) and keep its metadata aside.

    Raises :class:`PhotoError` with a one-line reason for empty, truncated, corrupt, unsupported or
    too-large files. Images over :data:`MAX_PIXELS` (decompression bombs) are refused unless
    ``allow_huge``. Animated WebP/PNG/AVIF and multi-page TIFF: the first frame/page is read and a
    warning is added to ``Photo.warnings``. 32-bit float TIFF is read as 0..1 display values (clipped,
    with a warning) and written back as 16-bit. GIF is refused (see module doc).
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
        im, float_layout = _open_image(path, head, allow_huge)
    try:
        with warnings.catch_warnings(record=True) as caught_decoding:
            warnings.simplefilter("always")
            photo = _decode(path, im, warns, float_layout)
        caught += caught_decoding
        for msg in dict.fromkeys(_one_line(w.message) for w in caught):  # Pillow's complaints, once each
            photo.warnings.append(f"decoder: {msg}")
        return photo
    except PhotoError:
        raise
    except MemoryError:
        w, h = im.size
        raise PhotoError(f"not enough memory to decode a {w}x{h} image") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError, TypeError) as e:
        raise PhotoError(f"truncated or corrupt {im.format or 'image'} data ({_one_line(e)})") from None
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


def _open_image(path: Path, head: bytes, allow_huge: bool) -> tuple[Image.Image, _FloatLayout | None]:
    """Open (header only) with Pillow's own bomb check replaced by ours, which can be lifted.

    Returns the image and, for a multi-channel float TIFF opened through :func:`_open_float_tiff`, how
    its samples are laid out (else None).
    """
    layout: _FloatLayout | None = None
    with _PIL_OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            im = Image.open(path, formats=_read_formats())
        except Image.UnidentifiedImageError:
            other = _sniff(head)
            opened = _open_float_tiff(path) if other == "TIFF layout" else None
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
            raise PhotoError(f"corrupt image header ({_one_line(e)})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    w, h = im.size
    if layout is not None:
        w //= layout.samples  # the float view is samples-times wider than the photo
    if w <= 0 or h <= 0:
        im.close()
        raise PhotoError(f"invalid image size {w}x{h}")
    if w * h > MAX_PIXELS and not allow_huge:
        im.close()
        raise PhotoError(
            f"image claims {w}x{h} pixels ({w * h / 1e6:.0f} MP), over the {MAX_PIXELS // 1_000_000} MP "
            "safety limit (possible decompression bomb); pass --allow-huge if it is real"
        )
    if w * h > MAX_PIXELS:
        _check_memory(w, h, im, 1 if layout is None else layout.samples)
    return im, layout


def _check_memory(w: int, h: int, im: Image.Image, samples: int) -> None:
    """Refuse, before allocating, an image whose decode would not fit in available memory.

    ``samples`` is the number of samples per pixel behind each band: more than 1 for a float TIFF view.
    """
    if im.mode == "F":  # float32 decoded, then a float32 copy per sample
        per_pixel = 8 * samples
    else:  # up to 16 bits per band decoded
        per_pixel = len(im.getbands()) * 2
    need = w * h * (per_pixel + 16)  # + float32 RGB + alpha
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


@dataclass(frozen=True)
class _FloatLayout:
    """How a multi-channel 32-bit float TIFF was opened as a one-channel float image ``samples`` times
    wider (see :func:`_open_float_tiff`), and what is left to undo after decoding."""

    samples: int  #: samples per pixel: 2 (gray + alpha), 3 (RGB) or 4 (RGBA)
    predictor: int  #: 1 none, 2 horizontal, 3 floating point: 2 and 3 are undone by us
    byteorder: str  #: "<" or ">", the file's


_FLOAT_TIFF_TAGS = {256: 4, 258: 3, 262: 3, 277: 3, 317: 3, 322: 4, 339: 3}  # tags the view rewrites: type


def _open_float_tiff(path: Path) -> tuple[Image.Image, _FloatLayout] | None:
    """Open a 32-bit float RGB(A) or gray+alpha TIFF, which Pillow refuses, through Pillow all the same.

    Pillow reads only one-channel float TIFFs (mode "F"). A contiguous float TIFF of width W with S
    samples per pixel has exactly the rows of a one-channel float TIFF of width W*S, so we give Pillow the
    file's bytes with a new first IFD saying just that (every other entry copied, so compression, strips
    or tiles, resolution, ICC, XMP and the EXIF pointer all still point into the same bytes); it then
    decompresses with every codec it has. The predictor is turned off in the view because its stride is
    the sample count: :func:`_undo_float_predictor` applies it afterwards. Returns None when the file is
    not a float TIFF (the caller's refusal then stands); raises PhotoError for float layouts we refuse.
    """
    try:
        data = path.read_bytes()
        block = _ExifBlock(data)
    except MemoryError:
        raise PhotoError("not enough memory to open this image") from None
    except OSError as e:
        raise PhotoError(f"cannot open: {e.strerror or e}") from None
    except (_ExifFormatError, struct.error):
        return None
    entries = block.ifd0.entries

    def ints(tag: int, default: int) -> list[int]:
        entry = entries.get(tag)
        if entry is None or entry.value_at is None or entry.type not in (1, 3, 4) or not 0 < entry.count <= 64:
            return [default]
        fmt = {1: "B", 3: "H", 4: "I"}[entry.type]
        return list(struct.unpack_from(f"{block.e}{entry.count}{fmt}", data, entry.value_at))

    if set(ints(339, 1)) != {3}:
        return None  # not floating point: some other layout Pillow cannot read
    bits, samples, photometric = ints(258, 1), ints(277, 1)[0], ints(262, -1)[0]
    extra, predictor, tiled = ints(338, -1), ints(317, 1)[0], 322 in entries
    if set(bits) != {32}:
        raise PhotoError(f"{max(bits)}-bit floating-point TIFF is not supported: export a 16-bit TIFF")
    colours = {1: 1, 2: 3}.get(photometric)
    if colours is None or samples != colours + (1 if 338 in entries and len(extra) == 1 else 0) or samples < 2:
        raise PhotoError("unsupported floating-point TIFF layout (only gray, gray+alpha, RGB and RGBA are read): "
                         "export a 16-bit TIFF")
    if ints(284, 1)[0] != 1:
        raise PhotoError("planar floating-point TIFF is not supported: export it with interleaved samples")
    if predictor not in (1, 2, 3) or (predictor != 1 and tiled):
        raise PhotoError("tiled floating-point TIFF with a predictor is not supported: export it without "
                         "a predictor or as a 16-bit TIFF")
    e = block.e
    table = {tag: data[entry.pos:entry.pos + 12] for tag, entry in entries.items() if tag != 338}
    width = ints(256, 0)[0]
    new_values = {256: width * samples, 258: 32, 262: 1, 277: 1, 317: 1, 339: 3}
    if tiled:
        new_values[322] = ints(322, 0)[0] * samples
    for tag, value in new_values.items():
        typ = _FLOAT_TIFF_TAGS[tag]
        if value > 0xFFFFFFFF:  # only the widths grow; a forged one must not overflow the LONG
            raise PhotoError(f"floating-point TIFF {width} pixels wide is too wide to read")
        packed = struct.pack(e + "HH", value, 0) if typ == 3 else struct.pack(e + "I", value)
        table[tag] = struct.pack(e + "HHI", tag, typ, 1) + packed
    at = len(data) + (len(data) & 1)
    ifd = struct.pack(e + "H", len(table)) + b"".join(table[t] for t in sorted(table)) + bytes(4)
    view = bytearray(data) + bytes(at - len(data)) + ifd
    struct.pack_into(e + "I", view, 4, at)
    try:
        im = Image.open(io.BytesIO(bytes(view)), formats=["TIFF"])
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError, TypeError) as err:
        raise PhotoError(f"corrupt floating-point TIFF ({_one_line(err)})") from None  # (raised in a handler)
    if im.mode != "F":
        im.close()
        raise PhotoError("unsupported floating-point TIFF layout: export a 16-bit TIFF")
    return im, _FloatLayout(samples, predictor, e)


def _decode_float(im: Image.Image, layout: _FloatLayout | None, warns: list[str]) -> np.ndarray:
    """float32 H x W x C in [0, 1] from a 32-bit float TIFF: non-finite samples zeroed, others clipped.

    Float TIFFs hold scene-linear or HDR values that may leave 0..1; the model knows only display values,
    so they are read as such (no tone mapping) and what had to be clipped is said in a warning.
    """
    # libtiff hands Pillow native-order floats but Pillow then byte-swaps big-endian files a second time
    # (garbage values, silently): tell it the data are native.
    im.tile = [t._replace(args=_swap_rawmode(t.args, "F;32NF")) if t[0] == "libtiff" else t for t in im.tile]
    im.load()
    samples = 1 if layout is None else layout.samples
    a = np.asarray(im, dtype=np.float32)
    if layout is not None and layout.predictor != 1:
        a = _undo_float_predictor(a, layout)
    a = a.reshape(a.shape[0], a.shape[1] // samples, samples)
    finite = np.isfinite(a)
    warns.append("32-bit floating-point TIFF read as display values 0..1 (no tone mapping): output is 16-bit")
    if not finite.all():
        warns.append(f"{a.size - int(finite.sum())} NaN or infinite samples set to 0")
        a = np.where(finite, a, np.float32(0.0))
    outside = int(np.count_nonzero((a < 0.0) | (a > 1.0)))
    if outside:
        warns.append(f"{100.0 * outside / a.size:.2g}% of the samples lay outside 0..1 (HDR or linear data) "
                     "and were clipped")
        a = np.clip(a, 0.0, 1.0)
    return np.ascontiguousarray(a, dtype=np.float32)


def _undo_float_predictor(a: np.ndarray, layout: _FloatLayout) -> np.ndarray:
    """Apply TIFF predictor 2 (horizontal, on the 32-bit words) or 3 (floating point: bytes split into
    planes, most significant first, then differenced) to rows decoded without it."""
    h, n = a.shape
    words = a.view(np.uint32).reshape(h, n // layout.samples, layout.samples)
    if layout.predictor == 2:
        return np.cumsum(words, axis=1, dtype=np.uint32).view(np.float32).reshape(h, n)
    stream = words.astype(np.dtype(layout.byteorder + "u4")).view(np.uint8).reshape(h, -1, layout.samples)
    stream = np.cumsum(stream, axis=1, dtype=np.uint8).reshape(h, 4, n)
    return np.ascontiguousarray(stream.transpose(0, 2, 1)).view(">f4").astype(np.float32).reshape(h, n)


# Pillow decodes 16-bit RGB(A) to 8 bits by taking each sample's most significant byte. Decoding once more
# with the opposite byte order's rawmode yields the least significant bytes; together they are exact.
_LOW_BYTE_RAWMODE = {
    "RGB;16B": "RGB;16L", "RGB;16L": "RGB;16B",
    "RGBA;16B": "RGBA;16L", "RGBA;16L": "RGBA;16B",
    "RGBX;16B": "RGBX;16L", "RGBX;16L": "RGBX;16B",
}
_NATIVE_OTHER = "B" if sys.byteorder == "little" else "L"


def _tile_rawmode(args: object) -> str | None:
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def _swap_rawmode(args: object, new: str) -> object:
    if isinstance(args, str):
        return new
    assert isinstance(args, tuple)
    return (new, *args[1:])


def _low_rawmode(rawmode: str) -> str | None:
    if rawmode.endswith(";16N"):
        return rawmode[:-1] + _NATIVE_OTHER
    return _LOW_BYTE_RAWMODE.get(rawmode)


def _decode_16bit_rgb(path: Path, im: Image.Image) -> tuple[np.ndarray, bool] | None:
    """(uint16 H x W x C, grayscale) for a 16-bit RGB(A) or gray+alpha file that Pillow would decode to
    8 bits; None for anything else."""
    if im.mode not in ("RGB", "RGBA") or not im.tile:
        return None
    raws = [_tile_rawmode(t.args) for t in im.tile]
    if im.format == "PNG" and raws == ["LA;16B"] * len(raws):
        # 16-bit gray+alpha has the byte layout of 8-bit RGBA: (L hi, L lo, A hi, A lo).
        im.tile = [t._replace(args=_swap_rawmode(t.args, "RGBA")) for t in im.tile]
        im.load()
        b = np.asarray(im).astype(np.uint16)
        gray = (b[..., 0] << 8) | b[..., 1]
        alpha = (b[..., 2] << 8) | b[..., 3]
        return np.stack([gray, alpha], axis=-1), True
    lows = [_low_rawmode(r) if r else None for r in raws]
    if not lows or any(low is None for low in lows):
        return None
    tiles = list(im.tile)
    im.load()
    hi = np.asarray(im)
    with Image.open(path, formats=[im.format]) as again:
        again.tile = [t._replace(args=_swap_rawmode(t.args, low)) for t, low in zip(tiles, lows, strict=True)]
        again.load()
        lo = np.asarray(again)
    return (hi.astype(np.uint16) << 8) | lo, False


def _decode(path: Path, im: Image.Image, warns: list[str], float_layout: _FloatLayout | None = None) -> Photo:
    fmt = im.format or "?"
    source_im = im  # ``im`` may be replaced by a converted copy, which has lost the file's metadata
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
    tiff_exif = _tiff_exif_block(im, path, warns) if fmt == "TIFF" else None
    info = dict(im.info)
    icc = info.get("icc_profile") or None
    dpi = _dpi(info)
    bit_depth = 8
    grayscale = False
    alpha_u: np.ndarray | None = None
    source_mode = im.mode

    wide = _decode_16bit_rgb(path, im) if fmt in ("PNG", "TIFF") else None
    if im.mode == "F":
        pixels = _decode_float(im, float_layout, warns)
        grayscale = pixels.shape[-1] in (1, 2)
        bit_depth, maxval = 16, 1.0
        info = dict(im.info)
        icc = info.get("icc_profile") or icc
    elif wide is not None:
        pixels, grayscale = wide
        bit_depth, maxval = 16, 65535.0
        info = dict(im.info)  # PNG text/eXIf after IDAT only appear once loaded
        icc = info.get("icc_profile") or icc
    else:
        im.load()
        info = dict(im.info)  # PNG text/eXIf after IDAT only appear once loaded
        icc = info.get("icc_profile") or icc
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
            grayscale, bit_depth, maxval = True, 16, 65535.0
            pixels = np.asarray(im).astype(np.uint16)[..., None]
        elif im.mode in ("L", "LA", "RGB", "RGBA"):
            grayscale = im.mode in ("L", "LA")
            maxval = 255.0
            pixels = np.asarray(im)
            if pixels.ndim == 2:
                pixels = pixels[..., None]
        else:
            raise PhotoError(f"unsupported image mode {im.mode}")
        if fmt in ("PNG", "TIFF") and _declared_16bit(source_im) and bit_depth == 8:
            warns.append("16-bit image that Pillow can only decode at 8 bits: output is 8-bit")

    color = pixels[..., :1] if grayscale else pixels[..., :3]
    if pixels.shape[-1] in (2, 4):
        alpha_u = pixels[..., -1]

    exif, exif_parsed, orientation = _source_exif(tiff_exif if fmt == "TIFF" else info.get("exif"), warns)
    if info.get("original_orientation") is not None:  # pillow-heif already applied the HEIF transforms
        orientation = 1
    color = _orient(color, orientation)
    if alpha_u is not None:
        alpha_u = _orient(alpha_u, orientation)

    rgb = color.astype(np.float32)
    rgb /= np.float32(maxval)  # division is correctly rounded: v / maxval exactly as float32 can hold it
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    rgb = np.ascontiguousarray(rgb)
    alpha = None
    if alpha_u is not None:
        alpha = np.ascontiguousarray(alpha_u.astype(np.float32))
        alpha /= np.float32(maxval)

    xmp = info.get("xmp") or None
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    photoshop, iptc, xmp_ext = _source_photoshop_iptc(source_im, fmt)
    png_text: dict[str, str] = {}
    if fmt == "PNG":
        png_text = {k: v for k, v in getattr(source_im, "text", {}).items()
                    if k != "XML:com.adobe.xmp" and not (exif and k.lower().startswith("raw profile type exif"))}
    return Photo(
        path=path, rgb=rgb, alpha=alpha, format=fmt, mode=source_mode, bit_depth=bit_depth,
        grayscale=grayscale, icc_profile=icc, exif=exif, exif_parsed=exif_parsed, orientation=orientation,
        xmp=xmp, xmp_extension=xmp_ext, iptc=iptc, photoshop=photoshop, dpi=dpi, png_text=png_text,
        frames=frames, warnings=warns,
    )


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


# TIFF tags that describe the TIFF's own pixel layout, or that we carry separately: kept out of the EXIF
# block taken from a TIFF input (they would be wrong in any other file).
_TIFF_STRUCTURE_TAGS = {
    254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 288, 289, 290, 291,
    292, 293, 317, 318, 319, 320, 322, 323, 324, 325, 330, 338, 339, 340, 341, 347, 513, 514, 529, 530,
    531, 532, 700, 33723, 34377, 34675, 37724,
}


def _tiff_exif_block(im: Image.Image, path: Path, warns: list[str]) -> bytes | None:
    """A TIFF's EXIF as a standalone block: its IFD0 minus the TIFF's own layout tags, plus sub-IFDs."""
    exif = im.getexif()
    for tag in list(exif):
        if tag in _TIFF_STRUCTURE_TAGS:
            del exif[tag]
    try:
        block = bytearray(_strip_exif_prefix(exif.tobytes())) if len(exif) else None
    except Exception as e:  # Pillow cannot re-serialise some odd tag types
        warns.append(f"EXIF in this TIFF could not be read ({_one_line(e)}): dropped")
        return None
    if block:
        try:  # Pillow re-types some tags when re-serialising: take the types from the file itself
            with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as whole:
                _restore_tag_types(block, _ExifBlock(bytes(block)), whole)
        except (OSError, ValueError, _ExifFormatError, struct.error):
            pass
    return bytes(block) if block else None


def _source_exif(raw: bytes | None, warns: list[str]) -> tuple[bytes | None, bool, int]:
    """(raw EXIF block, parsed?, orientation to apply)."""
    if not raw:
        return None, False, 1
    raw = _strip_exif_prefix(raw)
    try:
        block = _ExifBlock(raw)
    except _ExifFormatError as e:
        warns.append(f"EXIF cannot be parsed ({e}): carried over unchanged, pixels not rotated")
        return raw, False, 1
    for problem in block.problems:
        warns.append(f"EXIF {problem}: carried over unchanged")
    orientation = block.orientation
    if orientation not in range(1, 9):
        warns.append(f"EXIF orientation {orientation} is invalid: ignored")
        orientation = 1
    return raw, True, orientation


def _strip_exif_prefix(raw: bytes) -> bytes:
    if raw.startswith(b"Exif\x00\x00"):
        return raw[6:]
    for marker in (b"II*\x00", b"MM\x00*"):  # HEIF stores a 4-byte offset before the TIFF header
        at = raw.find(marker, 0, 16)
        if at > 0:
            return raw[at:]
    return raw


def _source_photoshop_iptc(im: Image.Image, fmt: str) -> tuple[bytes | None, bytes | None, list[bytes]]:
    """Photoshop resources (thumbnails removed), IPTC records, JPEG ExtendedXMP payloads."""
    block: bytes | None = None
    iptc: bytes | None = None
    xmp_ext: list[bytes] = []
    if fmt in ("JPEG", "MPO"):
        parts = []
        for marker, payload in getattr(im, "applist", []):
            if marker == "APP13" and payload.startswith(b"Photoshop 3.0\x00"):
                parts.append(payload[14:])
            elif marker == "APP1" and payload.startswith(_XMP_EXT_SIG):
                xmp_ext.append(payload[len(_XMP_EXT_SIG):])
        block = b"".join(parts) or None
    elif fmt == "TIFF":
        tag = im.tag_v2
        ps = tag.get(34377)
        block = ps if isinstance(ps, bytes) and ps else None
        raw_iptc = tag.get(33723)
        if isinstance(raw_iptc, bytes) and raw_iptc:
            iptc = raw_iptc
        elif isinstance(raw_iptc, tuple) and raw_iptc and all(isinstance(v, int) for v in raw_iptc):
            size = {1: "B", 3: "H", 4: "I"}.get(tag.tagtype.get(33723, 4), "I")
            iptc = struct.pack(("<" if tag.prefix == b"II" else ">") + size * len(raw_iptc), *raw_iptc)
    if block:
        resources = _parse_8bim(block)
        block = b"".join(raw for rid, raw, _ in resources if rid not in (0x0409, 0x040C)) or None
        if iptc is None:
            iptc = next((data for rid, _, data in resources if rid == 0x0404), None)
    return block, iptc, xmp_ext


_XMP_EXT_SIG = b"http://ns.adobe.com/xmp/extension/\x00"


def _parse_8bim(block: bytes) -> list[tuple[int, bytes, bytes]]:
    """Photoshop image resources as (id, raw bytes of the whole resource, data); stops at garbage."""
    out = []
    i = 0
    while i + 12 <= len(block) and block[i:i + 4] in (b"8BIM", b"MeSa", b"PHUT", b"AgHg", b"DCSR"):
        rid = struct.unpack_from(">H", block, i + 4)[0]
        name_len = block[i + 6]
        j = i + 6 + ((1 + name_len + 1) & ~1)
        if j + 4 > len(block):
            break
        size = struct.unpack_from(">I", block, j)[0]
        start = j + 4
        end = start + size
        if end > len(block):
            break
        nxt = end + (size & 1)
        out.append((rid, block[i:min(nxt, len(block))], block[start:end]))
        i = nxt
    return out


# ------------------------------------------------------------------------------------------ EXIF editor


class _ExifFormatError(ValueError):
    pass


_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}


@dataclass
class _Entry:
    pos: int  # offset of the 12-byte entry
    tag: int
    type: int
    count: int
    value_at: int | None  # offset of the value bytes (pos + 8 when inline); None when unlocatable
    nbytes: int


@dataclass
class _Ifd:
    offset: int
    entries: dict[int, _Entry]
    next_pos: int | None  # where the next-IFD pointer lives, when inside the block
    next_offset: int

    def extents(self) -> list[tuple[int, int]]:
        table_end = self.offset + 2 + 12 * len(self.entries) + (4 if self.next_pos is not None else 0)
        ext = [(self.offset, table_end)]
        for e in self.entries.values():
            if e.value_at is not None and e.nbytes > 4:
                ext.append((e.value_at, e.value_at + e.nbytes))
        return ext


class _ExifBlock:
    """A TIFF-structured EXIF block, parsed just enough to patch it in place.

    Patching in place rather than re-serialising keeps every byte we do not need to change where it
    was: unknown tags, their original types, and maker notes whose internal offsets are absolute.
    """

    def __init__(self, blob: bytes | mmap.mmap) -> None:
        if len(blob) < 8 or blob[:2] not in (b"II", b"MM"):
            raise _ExifFormatError("no TIFF header")
        self.blob = blob
        self.e = "<" if blob[:2] == b"II" else ">"
        if self._u16(2) != 42:
            raise _ExifFormatError("bad TIFF magic number")
        self.problems: list[str] = []
        self.ifd0 = self._parse_ifd(self._u32(4), strict=True, chained=True)
        assert self.ifd0 is not None
        self.exif = self._sub(self.ifd0, 0x8769, "Exif IFD")
        self.gps = self._sub(self.ifd0, 0x8825, "GPS IFD")
        self.interop = self._sub(self.exif, 0xA005, "Interop IFD") if self.exif else None
        self.ifd1 = None
        if self.ifd0.next_offset:
            self.ifd1 = self._parse_ifd(self.ifd0.next_offset, strict=False, chained=True)

    def _u16(self, at: int) -> int:
        return struct.unpack_from(self.e + "H", self.blob, at)[0]

    def _u32(self, at: int) -> int:
        return struct.unpack_from(self.e + "I", self.blob, at)[0]

    def _sub(self, parent: _Ifd, tag: int, name: str) -> _Ifd | None:
        entry = parent.entries.get(tag)
        if entry is None:
            return None
        value = self._int(entry)
        ifd = self._parse_ifd(value, strict=False) if value is not None else None
        if ifd is None:
            self.problems.append(f"{name} is unreadable")
        return ifd

    def _parse_ifd(self, offset: int, *, strict: bool, chained: bool = False) -> _Ifd | None:
        """One IFD; ``chained`` IFDs (IFD0, IFD1) end with a next-IFD pointer, sub-IFDs often do not."""
        n = len(self.blob)
        if offset < 8 or offset + 2 > n:
            if strict:
                raise _ExifFormatError(f"IFD offset {offset} outside the {n}-byte block")
            return None
        count = self._u16(offset)
        if offset + 2 + 12 * count > n or count > 4096:
            if strict:
                raise _ExifFormatError(f"IFD with {count} entries overruns the block")
            return None
        entries: dict[int, _Entry] = {}
        for k in range(count):
            pos = offset + 2 + 12 * k
            tag, typ, cnt = struct.unpack_from(self.e + "HHI", self.blob, pos)
            size = _TYPE_SIZES.get(typ)
            value_at: int | None = None
            nbytes = 0
            if size is not None:
                nbytes = size * cnt
                value_at = pos + 8 if nbytes <= 4 else self._u32(pos + 8)
                if value_at + nbytes > n:
                    value_at = None
            entries[tag] = _Entry(pos, tag, typ, cnt, value_at, nbytes)
        next_pos = offset + 2 + 12 * count
        if chained and next_pos + 4 <= n:
            next_offset = self._u32(next_pos)
            if next_offset >= n:
                next_offset = 0
        else:
            next_pos, next_offset = None, 0  # type: ignore[assignment]
        return _Ifd(offset, entries, next_pos, next_offset)

    def _int(self, entry: _Entry) -> int | None:
        if entry.value_at is None or entry.count < 1:
            return None
        if entry.type == 3:
            return self._u16(entry.value_at)
        if entry.type in (4, 13):
            return self._u32(entry.value_at)
        if entry.type == 1:
            return self.blob[entry.value_at]
        return None

    @property
    def orientation(self) -> int:
        entry = self.ifd0.entries.get(0x0112)
        value = self._int(entry) if entry else None
        return 1 if value is None else value

    def edited(self, width: int, height: int, software: str) -> bytes:
        """The block with Orientation 1, pixel dimensions, Software, and no thumbnail."""
        buf = bytearray(self.blob)
        orientation = self.ifd0.entries.get(0x0112)
        if orientation is not None:  # rewritten whole: a malformed entry (count > 1, odd type) must say 1 too
            buf[orientation.pos:orientation.pos + 12] = struct.pack(self.e + "HHIH2x", 0x0112, 3, 1, 1)
        for ifd, wtag, htag in ((self.exif, 0xA002, 0xA003), (self.ifd0, 0x0100, 0x0101)):
            if ifd is not None:
                self._set_int(buf, ifd.entries.get(wtag), width)
                self._set_int(buf, ifd.entries.get(htag), height)
        if self.ifd0.next_offset and self.ifd0.next_pos is not None:
            struct.pack_into(self.e + "I", buf, self.ifd0.next_pos, 0)
            self._drop_thumbnail(buf)
        value = software.encode("ascii", "replace") + b"\x00"
        entry = self.ifd0.entries.get(0x0131)
        if entry is not None and entry.type == 2 and entry.value_at is not None and entry.nbytes >= len(value) > 4:
            buf[entry.value_at:entry.value_at + entry.nbytes] = value.ljust(entry.nbytes, b"\x00")
            struct.pack_into(self.e + "I", buf, entry.pos + 4, len(value))
            return bytes(buf)
        value_at = self._append(buf, value)
        new_entry = struct.pack(self.e + "HHII", 0x0131, 2, len(value), value_at)
        if entry is not None:
            buf[entry.pos:entry.pos + 12] = new_entry
            return bytes(buf)
        # No Software tag: rebuild IFD0 (entries sorted by tag) at the end, and point the header at it.
        raw_entries = {e.tag: bytes(buf[e.pos:e.pos + 12]) for e in self.ifd0.entries.values()}
        raw_entries[0x0131] = new_entry
        table = struct.pack(self.e + "H", len(raw_entries)) + b"".join(raw_entries[t] for t in sorted(raw_entries))
        table += struct.pack(self.e + "I", 0)
        struct.pack_into(self.e + "I", buf, 4, self._append(buf, table))
        return bytes(buf)

    def _set_int(self, buf: bytearray, entry: _Entry | None, value: int) -> None:
        if entry is None or entry.count != 1 or entry.type not in (3, 4):
            return
        typ = 3 if entry.type == 3 and value <= 0xFFFF else 4
        fmt = "H" if typ == 3 else "I"
        struct.pack_into(self.e + "H", buf, entry.pos + 2, typ)
        buf[entry.pos + 8:entry.pos + 12] = struct.pack(self.e + fmt, value).ljust(4, b"\x00")

    def _drop_thumbnail(self, buf: bytearray) -> None:
        """Cut IFD1 and its thumbnail off the end when nothing we keep lies beyond them, else zero it."""
        ifd1 = self.ifd1
        if ifd1 is None:
            return
        thumb = None
        start_e, len_e = ifd1.entries.get(0x0201), ifd1.entries.get(0x0202)
        if start_e and len_e:
            start, length = self._int(start_e), self._int(len_e)
            if start is not None and length is not None and start + length <= len(self.blob):
                thumb = (start, start + length)
        dropped = ifd1.extents() + ([thumb] if thumb else [])
        cut = min(s for s, _ in dropped)
        kept = [(0, 8)]
        for ifd in (self.ifd0, self.exif, self.gps, self.interop):
            if ifd is not None:
                kept += ifd.extents()
        if max(e for _, e in kept) <= cut and all(s >= cut for s, _ in dropped):
            del buf[cut:]
        elif thumb:
            buf[thumb[0]:thumb[1]] = bytes(thumb[1] - thumb[0])

    def _append(self, buf: bytearray, data: bytes) -> int:
        if len(buf) % 2:
            buf.append(0)
        at = len(buf)
        buf.extend(data)
        return at


_XMP_PATTERNS = {
    "orientation": re.compile(rb"(tiff:Orientation\s*=\s*[\"'])\s*\d+\s*([\"'])|"
                              rb"(<tiff:Orientation>)\s*\d+\s*(</tiff:Orientation>)"),
    "width": re.compile(rb"((?:exif:PixelXDimension|tiff:ImageWidth)\s*=\s*[\"'])\s*\d+\s*([\"'])|"
                        rb"(<(?:exif:PixelXDimension|tiff:ImageWidth)>)\s*\d+\s*(</)"),
    "height": re.compile(rb"((?:exif:PixelYDimension|tiff:ImageLength)\s*=\s*[\"'])\s*\d+\s*([\"'])|"
                         rb"(<(?:exif:PixelYDimension|tiff:ImageLength)>)\s*\d+\s*(</)"),
}


def _patch_xmp(xmp: bytes, *, orientation_applied: bool, size: tuple[int, int] | None) -> bytes:
    """Keep XMP consistent with the pixels: orientation 1 (if we rotated) and the new dimensions."""

    def sub(name: str, value: int, data: bytes) -> bytes:
        v = str(value).encode()
        return _XMP_PATTERNS[name].sub(
            lambda m: (m.group(1) + v + m.group(2)) if m.group(1) else (m.group(3) + v + m.group(4)), data)

    if orientation_applied:
        xmp = sub("orientation", 1, xmp)
    if size is not None:
        xmp = sub("height", size[1], sub("width", size[0], xmp))
    return xmp


# --------------------------------------------------------------------------------------------- writing


def write_photo(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    source: Photo,
    *,
    quality: int = 95,
    overwrite: bool = False,
) -> list[str]:
    """Write ``rgb`` (float32 H x W x 3 in [0, 1]) as ``path``, carrying everything ``source`` had.

    The format follows the suffix. EXIF (Orientation 1, pixel dimensions, Software, no thumbnail), the
    ICC profile (byte for byte), XMP, IPTC/Photoshop resources, dpi, PNG text, alpha, 16-bit depth and
    grayscale are kept wherever the output format can hold them; each thing that cannot is named in a
    returned warning. JPEG is written at ``quality`` with 4:4:4 chroma. The write is atomic and an
    existing ``path`` is replaced only with ``overwrite``. An XMP sidecar beside the source is copied
    beside the output (see :func:`copy_sidecar`). Raises :class:`PhotoError` (:class:`DiskFullError` when
    the disk is full); no partial or temporary file is left behind.
    """
    path = Path(path)
    fmt = _SUFFIX_FORMAT.get(path.suffix.lower())
    if fmt is None:
        raise PhotoError(
            f"cannot write '{path.suffix or path.name}' files; use one of "
            + ", ".join(s for s in WRITABLE_SUFFIXES if s != ".jpe")
        )
    if fmt == "AVIF" and not features.check("avif"):
        raise PhotoError("this Pillow cannot write AVIF; write .jpg, .png, .webp or .tif instead")
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise PhotoError(f"expected an H x W x 3 image, got shape {tuple(rgb.shape)}")
    if not np.isfinite(rgb).all():
        raise PhotoError("refusing to write non-finite pixel values (NaN or infinity)")
    if not overwrite and path.exists():
        raise PhotoError(f"'{path.name}' already exists; pass --overwrite to replace it")
    h, w = rgb.shape[:2]
    warns: list[str] = []

    gray = source.grayscale and fmt in ("JPEG", "PNG", "TIFF")
    bits = 16 if source.bit_depth == 16 and fmt in ("PNG", "TIFF") else 8
    if source.bit_depth == 16 and bits == 8:
        warns.append(f"16-bit image written as 8-bit {fmt} (use .png or .tif to keep 16 bits)")
    alpha = source.alpha
    if gray and alpha is not None and bits == 16 and fmt == "TIFF":
        gray = False  # Pillow (and so deblurcli) cannot read 16-bit gray+alpha TIFF back
        warns.append("16-bit gray+alpha TIFF written as 16-bit RGBA")
    if alpha is not None and fmt == "JPEG":
        warns.append("JPEG has no transparency: the alpha channel was dropped (use .png, .tif or .webp)")
        alpha = None
    if alpha is not None and alpha.shape != (h, w):
        alpha = np.asarray(Image.fromarray(alpha.astype(np.float32), "F").resize((w, h), Image.Resampling.BILINEAR))
        warns.append("alpha channel resized to the output's size")
    pixels = _quantize(rgb, alpha, gray=gray, bits=bits)

    icc = source.icc_profile
    if icc and _icc_colour_space(icc) not in ({b"GRAY"} if gray else {b"RGB "}):
        warns.append(f"ICC profile for {_icc_colour_space(icc).decode('ascii', 'replace').strip()} data does "
                     f"not fit a {'gray' if gray else 'RGB'} output: dropped")
        icc = None
    exif = _exif_for_output(source, w, h, warns)
    xmp = _patch_xmp(source.xmp, orientation_applied=source.orientation != 1, size=(w, h)) if source.xmp else None
    meta = _Meta(icc=icc, exif=exif, xmp=xmp, dpi=source.dpi, photoshop=source.photoshop, iptc=source.iptc,
                 xmp_extension=source.xmp_extension, png_text=source.png_text)

    if fmt == "TIFF":
        with atomic_output(path, overwrite=overwrite) as fh:
            _write_tiff(fh, pixels, bits, meta, warns)
    elif fmt == "PNG" and bits == 16:
        with atomic_output(path, overwrite=overwrite) as fh:
            _write_png16(fh, pixels, meta, warns)
    else:
        data = _encode_with_pillow(fmt, pixels, meta, quality, warns)
        with atomic_output(path, overwrite=overwrite) as fh:
            fh.write(data)
    warns += copy_sidecar(source.path, path, orientation_applied=source.orientation != 1, overwrite=overwrite)
    return warns


@dataclass
class _Meta:
    icc: bytes | None
    exif: bytes | None  # edited block, no prefix
    xmp: bytes | None
    dpi: tuple[float, float] | None
    photoshop: bytes | None
    iptc: bytes | None
    xmp_extension: list[bytes]
    png_text: dict[str, str]


def _quantize(rgb: np.ndarray, alpha: np.ndarray | None, *, gray: bool, bits: int) -> np.ndarray:
    """uint8/uint16 H x W x C (C = 1, 2, 3 or 4) from float [0, 1] colour and alpha."""
    maxval = np.float32(65535.0 if bits == 16 else 255.0)
    dtype = np.uint16 if bits == 16 else np.uint8
    color = rgb.astype(np.float32, copy=False)
    color = color.mean(axis=2, keepdims=True) if gray else color
    planes = [color] if alpha is None else [color, alpha.astype(np.float32, copy=False)[..., None]]
    out = np.concatenate(planes, axis=2) if len(planes) > 1 else color
    out = np.clip(out, 0.0, 1.0) * maxval
    return np.rint(out, out=out).astype(dtype)


def _icc_colour_space(icc: bytes) -> bytes:
    return icc[16:20] if len(icc) >= 20 else b"????"


def _exif_for_output(source: Photo, w: int, h: int, warns: list[str]) -> bytes | None:
    if not source.exif:
        return None
    if not source.exif_parsed:
        return source.exif  # warned when read; carried over unchanged, pixels were not rotated
    try:
        return _ExifBlock(source.exif).edited(w, h, _SOFTWARE)
    except (_ExifFormatError, struct.error, ValueError) as e:
        warns.append(f"EXIF could not be updated ({_one_line(e)}): dropped")
        return None


def _pil_image(pixels: np.ndarray, *, for_webp: bool = False) -> Image.Image:
    c = pixels.shape[2]
    if for_webp and c in (1, 2):  # WebP has no gray modes
        gray = pixels[..., :1]
        pixels = np.concatenate([gray, gray, gray] + ([pixels[..., 1:]] if c == 2 else []), axis=2)
        c = pixels.shape[2]
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[c]
    return Image.fromarray(pixels[..., 0] if c == 1 else pixels, mode)


def _photoshop_segments(meta: _Meta) -> bytes:
    """APP13 segments holding the Photoshop resources (or just the IPTC records) for a JPEG."""
    block = meta.photoshop
    if not block and meta.iptc:
        data = meta.iptc + (b"\x00" if len(meta.iptc) % 2 else b"")
        block = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(meta.iptc)) + data
    if not block:
        return b""
    sig = b"Photoshop 3.0\x00"
    room = 65533 - len(sig)
    return b"".join(b"\xff\xed" + struct.pack(">H", 2 + len(sig) + len(chunk)) + sig + chunk
                    for chunk in (block[i:i + room] for i in range(0, len(block), room)))


def _encode_with_pillow(fmt: str, pixels: np.ndarray, meta: _Meta, quality: int, warns: list[str]) -> bytes:
    """JPEG / WebP / AVIF / 8-bit PNG through Pillow, dropping (with a warning) what the format refuses."""
    img = _pil_image(pixels, for_webp=fmt in ("WEBP", "AVIF"))
    kwargs: dict[str, object] = {}
    if meta.icc:
        kwargs["icc_profile"] = meta.icc
    if meta.exif:
        kwargs["exif"] = b"Exif\x00\x00" + meta.exif
    if fmt == "JPEG":
        kwargs.update(quality=quality, subsampling=0, optimize=True)
        extra = _photoshop_segments(meta)
        extra += b"".join(b"\xff\xe1" + struct.pack(">H", 2 + len(_XMP_EXT_SIG) + len(p)) + _XMP_EXT_SIG + p
                          for p in meta.xmp_extension if len(p) + len(_XMP_EXT_SIG) <= 65533)
        if extra:
            kwargs["extra"] = extra
        if meta.xmp:
            kwargs["xmp"] = meta.xmp
        if meta.dpi:
            kwargs["dpi"] = tuple(round(d) for d in meta.dpi)
    elif fmt in ("WEBP", "AVIF"):
        kwargs["quality"] = quality
        if meta.xmp:
            kwargs["xmp"] = meta.xmp
        if fmt == "WEBP" and img.mode == "RGBA":
            kwargs["exact"] = True  # keep colour under fully transparent pixels untouched
    else:  # 8-bit PNG
        pnginfo = _png_info(meta)
        if pnginfo is not None:
            kwargs["pnginfo"] = pnginfo
        if meta.dpi:
            kwargs["dpi"] = meta.dpi
    if (meta.iptc or meta.photoshop) and fmt != "JPEG":
        warns.append(f"IPTC/Photoshop metadata not carried: {fmt} cannot hold it (XMP is carried)")
    if meta.xmp_extension and fmt != "JPEG":
        warns.append("extended XMP (JPEG-only) not carried")
    while True:
        buf = io.BytesIO()
        try:
            img.save(buf, fmt, **kwargs)
            return buf.getvalue()
        except (ValueError, OSError) as e:  # e.g. "EXIF data is too long" for a JPEG APP1 segment
            msg = _one_line(e)
            culprit = next((k for k in ("exif", "xmp") if k in kwargs and k in msg.lower()), None)
            if culprit is None:
                raise PhotoError(f"cannot encode {fmt}: {msg}") from None
            kwargs.pop(culprit)
            warns.append(f"{culprit.upper()} dropped: {fmt} refused it ({msg})")


def _png_info(meta: _Meta) -> PngImagePlugin.PngInfo | None:
    if not meta.png_text and not meta.xmp:
        return None
    info = PngImagePlugin.PngInfo()
    for key, value in meta.png_text.items():
        if isinstance(value, PngImagePlugin.iTXt):
            info.add_itxt(key, value, value.lang or "", value.tkey or "")
        else:
            try:
                info.add_text(key, value)
            except UnicodeEncodeError:
                info.add_itxt(key, value)
    if meta.xmp:
        info.add_itxt("XML:com.adobe.xmp", meta.xmp.decode("utf-8", "replace"))
    return info


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_template_chunks(pixels: np.ndarray, meta: _Meta) -> list[tuple[bytes, bytes]]:
    """Pillow writes a 1x1 PNG carrying every metadata chunk; we keep all but IHDR/IDAT/IEND."""
    template = _pil_image(np.zeros((1, 1, pixels.shape[2]), np.uint8))
    kwargs: dict[str, object] = {}
    if meta.icc:
        kwargs["icc_profile"] = meta.icc
    if meta.exif:
        kwargs["exif"] = b"Exif\x00\x00" + meta.exif
    if meta.dpi:
        kwargs["dpi"] = meta.dpi
    pnginfo = _png_info(meta)
    if pnginfo is not None:
        kwargs["pnginfo"] = pnginfo
    buf = io.BytesIO()
    template.save(buf, "PNG", **kwargs)
    data = buf.getvalue()
    chunks = []
    i = 8
    while i + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, i)
        chunks.append((kind, data[i + 8:i + 8 + length]))
        i += 12 + length
    return [(k, d) for k, d in chunks if k not in (b"IHDR", b"IDAT", b"IEND")]


def _paeth_filtered_rows(rows: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    """PNG Paeth filter (type 4) of a block of byte rows, vectorised; ``prev`` is the row above."""
    x = rows.astype(np.int16)
    up = np.concatenate([prev[None].astype(np.int16), x[:-1]], axis=0)
    left = np.zeros_like(x)
    left[:, bpp:] = x[:, :-bpp]
    upleft = np.zeros_like(x)
    upleft[:, bpp:] = up[:, :-bpp]
    pa = np.abs(up - upleft)
    pb = np.abs(left - upleft)
    pc = np.abs(left + up - 2 * upleft)
    pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    out = np.empty((x.shape[0], x.shape[1] + 1), np.uint8)
    out[:, 0] = 4
    out[:, 1:] = (x - pred).astype(np.uint8)
    return out


def _write_png16(fh: BinaryIO, pixels: np.ndarray, meta: _Meta, warns: list[str]) -> None:
    """16-bit PNG (gray, gray+alpha, RGB, RGBA): our IHDR/IDAT, Pillow's metadata chunks."""
    h, w, c = pixels.shape
    if meta.iptc or meta.photoshop:
        warns.append("IPTC/Photoshop metadata not carried: PNG cannot hold it (XMP is carried)")
    if meta.xmp_extension:
        warns.append("extended XMP (JPEG-only) not carried")
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = pixels.astype(">u2").view(np.uint8).reshape(h, w * c * 2)
    chunks = _png_template_chunks(pixels, meta)
    fh.write(b"\x89PNG\r\n\x1a\n")
    fh.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)))
    for kind, data in chunks:
        fh.write(_png_chunk(kind, data))
    comp = zlib.compressobj(6)
    step = max(1, (1 << 22) // rows.shape[1])
    prev = np.zeros(rows.shape[1], np.uint8)
    for y in range(0, h, step):
        block = rows[y:y + step]
        piece = comp.compress(_paeth_filtered_rows(block, prev, 2 * c).tobytes())
        prev = block[-1]
        if piece:
            fh.write(_png_chunk(b"IDAT", piece))
    fh.write(_png_chunk(b"IDAT", comp.flush()))
    fh.write(_png_chunk(b"IEND", b""))


def _restore_tag_types(buf: bytearray, written: _ExifBlock, source_exif: bytes | mmap.mmap) -> None:
    """Give tags Pillow re-typed (e.g. a nested MakerNote written as BYTE, not UNDEFINED) their source
    type back, where the value's byte size is the same so only the type field changes."""
    try:
        source = _ExifBlock(source_exif)
    except (_ExifFormatError, struct.error):
        return
    pairs = ((written.ifd0, source.ifd0), (written.exif, source.exif), (written.gps, source.gps),
             (written.interop, source.interop))
    for dst, src in pairs:
        if dst is None or src is None:
            continue
        for tag, entry in dst.entries.items():
            orig = src.entries.get(tag)
            if (orig is not None and tag not in _TIFF_STRUCTURE_TAGS and orig.type != entry.type
                    and orig.count == entry.count and _TYPE_SIZES.get(orig.type) == _TYPE_SIZES.get(entry.type)):
                struct.pack_into(written.e + "H", buf, entry.pos + 2, orig.type)


def _write_tiff(fh: BinaryIO, pixels: np.ndarray, bits: int, meta: _Meta, warns: list[str]) -> None:
    """TIFF at 8 or 16 bits, Deflate + horizontal predictor.

    Pillow writes a 1x1 uncompressed template whose IFD carries all the metadata (EXIF as a proper
    sub-IFD, GPS, ICC, XMP, IPTC, Photoshop, resolution); we patch its geometry, bit depth, compression
    and strip pointers and append our own strips. (Pillow's compressed TIFF writer cannot write the EXIF
    sub-IFD, and it cannot write 16-bit RGB at all.)
    """
    h, w, c = pixels.shape
    if meta.xmp_extension:
        warns.append("extended XMP (JPEG-only) not carried")
    with _collect_warnings(warns, "EXIF for TIFF"):  # Pillow parses the EXIF again here
        tags = Image.Exif()
        if meta.exif:
            try:
                tags.load(b"Exif\x00\x00" + meta.exif)
                for tag in list(tags):
                    if tag in _TIFF_STRUCTURE_TAGS:
                        del tags[tag]
                # Pillow's TIFF writer nests only top-level IFDs: hand it the Interop IFD as a dict so that it
                # is written as a sub-IFD instead of as a stale offset into the old block.
                exif_ifd = tags.get_ifd(0x8769)
                if 0xA005 in exif_ifd:
                    interop = tags.get_ifd(0xA005)
                    if interop:
                        exif_ifd[0xA005] = interop
                    else:
                        del exif_ifd[0xA005]
            except Exception as e:
                warns.append(f"EXIF dropped: TIFF cannot hold it ({_one_line(e)})")
                tags = Image.Exif()
        if meta.xmp:
            tags[700] = meta.xmp
        if meta.iptc:
            tags[33723] = meta.iptc
        if meta.photoshop:
            tags[34377] = meta.photoshop
        tags[317] = 2  # Predictor: Pillow copies the tag verbatim; it describes the strips we append
        kwargs: dict[str, object] = {"exif": tags}
        if meta.icc:
            kwargs["icc_profile"] = meta.icc
        if meta.dpi:
            kwargs["dpi"] = meta.dpi
        buf = io.BytesIO()
        try:
            _pil_image(np.zeros((1, 1, c), np.uint8)).save(buf, "TIFF", compression="raw", **kwargs)
        except Exception as e:  # odd EXIF values Pillow cannot lay out: keep the rest
            warns.append(f"EXIF dropped: TIFF cannot hold it ({_one_line(e)})")
            keep = {t: tags[t] for t in (700, 33723, 34377, 317) if t in tags}
            tags = Image.Exif()
            for t, v in keep.items():
                tags[t] = v
            buf = io.BytesIO()
            _pil_image(np.zeros((1, 1, c), np.uint8)).save(buf, "TIFF", compression="raw", **{**kwargs, "exif": tags})
    template = bytearray(buf.getvalue())
    tiff = _ExifBlock(bytes(template))  # same IFD structure as EXIF: reuse the parser
    e = tiff.e
    ifd = tiff.ifd0
    if meta.exif:
        _restore_tag_types(template, tiff, meta.exif)

    sample = np.dtype(e + ("u2" if bits == 16 else "u1"))
    diff = pixels.copy()
    diff[:, 1:] -= pixels[:, :-1]  # unsigned: wraps modulo 2^bits, as the TIFF predictor expects
    row_bytes = w * c * sample.itemsize
    rows_per_strip = max(1, min(h, (1 << 20) // row_bytes))
    rows = diff.astype(sample).reshape(h, w * c).view(np.uint8)
    strips = [zlib.compress(rows[y:y + rows_per_strip].tobytes(), 6) for y in range(0, h, rows_per_strip)]

    def patch(tag: int, value: int) -> None:
        entry = ifd.entries.get(tag)
        if entry is None:
            raise PhotoError(f"internal error: TIFF template lacks tag {tag}")
        tiff._set_int(template, entry, value)

    patch(256, w)
    patch(257, h)
    patch(259, 8)
    patch(278, rows_per_strip)
    patch(317, 2)
    bps = ifd.entries[258]
    assert bps.value_at is not None
    for k in range(bps.count):
        struct.pack_into(e + "H", template, bps.value_at + 2 * k, bits)
    if len(template) % 2:
        template.append(0)
    n = len(strips)
    counts = [len(s) for s in strips]
    arrays_at = len(template)  # StripOffsets then StripByteCounts, out of line when there are several
    pos = arrays_at + (8 * n if n > 1 else 0)
    offsets = []
    for size in counts:
        offsets.append(pos)
        pos += size + (size & 1)
    if pos >= 1 << 32:
        raise PhotoError("image too large for a classic TIFF (over 4 GiB): write .png instead")
    for k, (tag, values) in enumerate(((273, offsets), (279, counts))):
        entry = ifd.entries[tag]
        if n == 1:
            struct.pack_into(e + "HII", template, entry.pos + 2, 4, 1, values[0])
        else:
            struct.pack_into(e + "HII", template, entry.pos + 2, 4, n, arrays_at + 4 * n * k)
    fh.write(template)
    if n > 1:
        fh.write(struct.pack(e + f"{n}I", *offsets) + struct.pack(e + f"{n}I", *counts))
    for s in strips:
        fh.write(s)
        if len(s) & 1:
            fh.write(b"\x00")


# -------------------------------------------------------------------------------------------- sidecars


def find_sidecar(photo_path: str | os.PathLike[str]) -> Path | None:
    """The XMP sidecar of a photo: ``photo.xmp`` (Lightroom style) or ``photo.jpg.xmp`` (darktable)."""
    p = Path(photo_path)
    for cand in (p.with_suffix(".xmp"), p.with_suffix(".XMP"), p.with_name(p.name + ".xmp"),
                 p.with_name(p.name + ".XMP")):
        if cand.is_file():
            return cand
    return None


def copy_sidecar(
    src_photo_path: str | os.PathLike[str],
    dst_path: str | os.PathLike[str],
    *,
    orientation_applied: bool = False,
    overwrite: bool = False,
) -> list[str]:
    """Copy the input's XMP sidecar beside ``dst_path`` (same naming style); returns warnings.

    :func:`write_photo` calls this itself. When the pixels were rotated, the copy's tiff:Orientation is
    set to 1 so that editors reading the sidecar do not rotate the output a second time.
    """
    src = find_sidecar(src_photo_path)
    if src is None:
        return []
    dst_photo = Path(dst_path)
    if src.name.lower() == Path(src_photo_path).name.lower() + ".xmp":
        dst = dst_photo.with_name(dst_photo.name + src.suffix)
    else:
        dst = dst_photo.with_suffix(src.suffix)
    same = dst.exists() and os.path.samefile(src, dst)
    if same and not orientation_applied:
        return []
    if dst.exists() and not overwrite and not same:
        return [f"XMP sidecar '{dst.name}' already exists: not replaced"]
    try:
        data = src.read_bytes()
    except OSError as e:
        return [f"XMP sidecar '{src.name}' could not be read ({e.strerror or e}): not copied"]
    if orientation_applied:
        data = _patch_xmp(data, orientation_applied=True, size=None)
    try:
        atomic_write_bytes(dst, data)
    except PhotoError as e:
        return [f"XMP sidecar not copied: {e}"]
    return []


# ------------------------------------------------------------------------------------- atomic writing


def is_temp_file(name: str) -> bool:
    """Whether a file name is one of our temporary output files (left by a killed process)."""
    return name.startswith(".") and TEMP_TAG in name


#: A temporary file younger than this is never taken for a killed run's leftover: its writer may not have
#: locked it yet (it locks right after creating it).
STALE_TEMP_AGE_S = 60.0


def _lock_temp(fd: int) -> int:
    """Hold an exclusive flock on a temporary file for as long as the returned descriptor stays open.

    The lock marks the file as live for :func:`remove_stale_temp_files`. It is taken on a duplicate
    descriptor (same open file description) so that it outlives the write handle and covers the rename.
    Returns -1 where flock is unavailable or refused (the file is then protected by its age only).
    """
    if fcntl is None:
        return -1
    lock_fd = os.dup(fd)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock_fd)
        return -1
    return lock_fd


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that killed processes (SIGKILL, power loss) left in ``folder``.

    Only our own names (:func:`is_temp_file`) are considered, and only those no process is writing: a
    live one is flock-ed by its writer for the whole write (see :func:`atomic_output`), and one younger
    than :data:`STALE_TEMP_AGE_S` is left alone as well, so a second ``deblur`` writing into the same folder
    is never disturbed. Not recursive. Without flock (Windows) nothing is removed. Returns what was removed;
    never raises for a folder that is missing or unreadable.
    """
    if fcntl is None:
        return []
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    now = time.time()
    for entry in entries:
        if not is_temp_file(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < STALE_TEMP_AGE_S:
                continue
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its writer is alive
            if os.fstat(fd).st_ino == st.st_ino:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _current_umask() -> int:
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_EDQUOT = getattr(errno, "EDQUOT", -1)  # absent on Windows


def _write_error(e: OSError, path: Path) -> PhotoError:
    reason = {
        errno.ENOSPC: "no space left on device",
        errno.EROFS: "the folder is on a read-only file system",
        errno.EACCES: "permission denied (the folder is not writable)",
        errno.EPERM: "operation not permitted",
        errno.ENOENT: "the folder does not exist",
    }.get(e.errno or 0, e.strerror or str(e))
    if e.errno == _EDQUOT:
        reason = "disk quota exceeded"
    cls = DiskFullError if e.errno in (errno.ENOSPC, _EDQUOT) else PhotoError
    return cls(f"cannot write '{path.name}': {reason}")


@contextmanager
def atomic_output(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file whose content appears at ``path`` only if the block completes.

    The data go to a hidden temporary file in the same folder (``.<name>.deblurcli-tmp-XXXX``), are
    fsynced, and the file is renamed over ``path`` (or, without ``overwrite``, hard-linked so that a file
    that appeared meanwhile is never clobbered). On any exception, KeyboardInterrupt included, the
    temporary file is removed. The temporary file is flock-ed until then, so that
    :func:`remove_stale_temp_files` can tell a live write from a killed process's leftover. Missing parent folders are created. OSErrors become :class:`PhotoError`
    (:class:`DiskFullError` for a full disk) with a one-line reason.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PhotoError(f"cannot create folder '{folder}': {e.strerror or e}") from None
    tmp = folder / f".{path.name}{TEMP_TAG}{secrets.token_hex(4)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    except OSError as e:
        raise _write_error(e, path) from None
    lock_fd = -1
    try:
        lock_fd = _lock_temp(fd)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            mode = 0o666 & ~_current_umask()
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fd = -1
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise PhotoError(f"'{path.name}' already exists; pass --overwrite to replace it") from None
            except OSError as e:  # no hard links on this file system (FAT, some network shares)
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise
                if path.exists():
                    raise PhotoError(f"'{path.name}' already exists; pass --overwrite to replace it") from None
                os.replace(tmp, path)
        _fsync_dir(folder)
    except OSError as e:
        raise _write_error(e, path) from None
    finally:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        except OSError:
            pass
        if lock_fd >= 0:
            os.close(lock_fd)  # only now: the lock covered the rename and the clean-up


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path, overwrite=overwrite) as fh:
        fh.write(data)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable; not possible on every platform, so best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def _collect_warnings(warns: list[str], prefix: str) -> Iterator[None]:
    """Python warnings raised in the block (Pillow's "Corrupt EXIF data", ...) as our one-line warnings,
    instead of raw ``file.py:123: UserWarning`` lines on the user's terminal."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    warns.extend(f"{prefix}: {msg}" for msg in dict.fromkeys(_one_line(w.message) for w in caught))


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:200] or type(e).__name__


def encode_preview_jpeg(pixels: np.ndarray, source: Photo, quality: int = 90) -> bytes:
    """An 8-bit RGB picture made from ``source`` (a compare strip) as JPEG, with the photo's ICC profile when
    it describes RGB, so the strip shows the colours the photo shows."""
    icc = source.icc_profile if source.icc_profile and _icc_colour_space(source.icc_profile) == b"RGB " else None
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality, icc_profile=icc)
    return buffer.getvalue()


def encode_png(pixels: np.ndarray) -> bytes:
    """A plain 8-bit PNG (a kernel picture): no metadata to carry."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()
