"""32-bit float TIFF: read through Pillow, which by itself opens only one-channel float files.

A multi-channel float TIFF is handed to Pillow as a one-channel image ``samples`` times wider (a rewritten
first IFD over the same bytes), so every codec Pillow has decompresses it; the predictor, whose stride is
the sample count, is undone here afterwards. Values are read as display values in 0..1 (no tone mapping).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from deblurcli.errors import PhotoError
from deblurcli.photo.common import one_line, swap_rawmode
from deblurcli.photo.exif import ExifBlock, ExifFormatError, FileWindow


@dataclass(frozen=True)
class FloatLayout:
    """How a multi-channel 32-bit float TIFF was opened as a one-channel float image ``samples`` times
    wider (see :func:`open_float_tiff`), and what is left to undo after decoding."""

    samples: int  #: samples per pixel: 2 (gray + alpha), 3 (RGB) or 4 (RGBA)
    predictor: int  #: 1 none, 2 horizontal, 3 floating point: 2 and 3 are undone by us
    byteorder: str  #: "<" or ">", the file's


_FLOAT_TIFF_TAGS = {256: 4, 258: 3, 262: 3, 277: 3, 317: 3, 322: 4, 339: 3}  # tags the view rewrites: type


#: Compressed strips or tiles larger than this many times their decoded size plus 4 KiB are forged: no TIFF
#: codec expands data that much (LZW, the worst, by 1.5x).
_MAX_EXPANSION = 2

#: A file may hold this much besides the data the view reads (unreferenced gaps) before it is refused.
_MAX_SLACK = 16 * 2**20


def open_float_tiff(path: Path, check_size: Callable[[int, int, int], None]) -> tuple[Image.Image, FloatLayout] | None:
    """Open a 32-bit float RGB(A) or gray+alpha TIFF, which Pillow refuses, through Pillow all the same.

    Pillow reads only one-channel float TIFFs (mode "F"). A contiguous float TIFF of width W with S
    samples per pixel has exactly the rows of a one-channel float TIFF of width W*S, so we give Pillow the
    file's bytes with a new first IFD saying just that (every other entry copied, so compression, strips
    or tiles, resolution, ICC, XMP and the EXIF pointer all still point into the same bytes); it then
    decompresses with every codec it has. The predictor is turned off in the view because its stride is
    the sample count: :func:`_undo_float_predictor` applies it afterwards. Returns None when the file is
    not a float TIFF (the caller's refusal then stands); raises PhotoError for float layouts we refuse.

    The header is parsed through bounded reads, ``check_size(width, height, samples)`` (the caller's bomb
    and memory check, which raises PhotoError) runs before any pixel data is read, and then only the bytes
    the image refers to are read: the whole file used to be read, and copied twice, first (a 16x16 float
    TIFF with a 1 GB tail took 3.6 GB).
    """
    try:
        with open(path, "rb") as fh:
            block = ExifBlock(FileWindow(fh))
            return _open_view(fh, block, check_size)
    except MemoryError:
        raise PhotoError("not enough memory to open this image") from None
    except OSError as e:
        raise PhotoError(f"cannot open: {e.strerror or e}") from None
    except (ExifFormatError, struct.error):
        return None


def _open_view(
    fh: BinaryIO, block: ExifBlock, check_size: Callable[[int, int, int], None]
) -> tuple[Image.Image, FloatLayout] | None:
    entries = block.ifd0.entries

    def ints(tag: int, default: int, limit: int = 64) -> list[int]:
        entry = entries.get(tag)
        if entry is None or entry.value_at is None or entry.type not in (1, 3, 4) or not 0 < entry.count <= limit:
            return [default]
        fmt = {1: "B", 3: "H", 4: "I"}[entry.type]
        raw = block.blob[entry.value_at:entry.value_at + entry.nbytes]
        return list(struct.unpack(f"{block.e}{entry.count}{fmt}", raw))

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
    width, height = ints(256, 0)[0], ints(257, 0)[0]
    new_values = {256: width * samples, 258: 32, 262: 1, 277: 1, 317: 1, 339: 3}
    if tiled:
        new_values[322] = ints(322, 0)[0] * samples
    if max(new_values.values()) > 0xFFFFFFFF:  # only the widths grow; a forged one must not overflow the LONG
        raise PhotoError(f"floating-point TIFF {width} pixels wide is too wide to read")
    check_size(width, height, samples)
    end = _data_end(block, ints, width, height, samples, tiled)
    table = {tag: block.blob[entry.pos:entry.pos + 12] for tag, entry in entries.items() if tag != 338}
    for tag, value in new_values.items():
        typ = _FLOAT_TIFF_TAGS[tag]
        packed = struct.pack(e + "HH", value, 0) if typ == 3 else struct.pack(e + "I", value)
        table[tag] = struct.pack(e + "HHI", tag, typ, 1) + packed
    at = end + (end & 1)
    ifd = struct.pack(e + "H", len(table)) + b"".join(table[t] for t in sorted(table)) + bytes(4)
    view = bytearray(at + len(ifd))  # the file's bytes up to ``end``, then the new IFD; read in place
    fh.seek(0)
    if fh.readinto(memoryview(view)[:end]) != end:
        raise ExifFormatError("the file is shorter than it was (it changed while being read)")
    view[at:] = ifd
    struct.pack_into(e + "I", view, 4, at)
    try:
        im = Image.open(io.BytesIO(view), formats=["TIFF"])
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError, TypeError) as err:
        raise PhotoError(f"corrupt floating-point TIFF ({one_line(err)})") from None  # (raised in a handler)
    if im.mode != "F":
        im.close()
        raise PhotoError("unsupported floating-point TIFF layout: export a 16-bit TIFF")
    return im, FloatLayout(samples, predictor, e)


def _data_end(
    block: ExifBlock, ints: Callable[[int, int, int], list[int]], width: int, height: int, samples: int, tiled: bool
) -> int:
    """Where the last byte the view needs ends: strips or tiles, and the IFDs with their values.

    A strip or tile that claims far more bytes than it can decode to is refused, and so is a file whose
    referenced bytes are spread over much more than their own size: either would make the view read
    (and hold) data that cannot belong to the image.
    """
    n = len(block.blob)
    if tiled:
        tw, th = ints(322, 0, 1)[0], ints(323, 0, 1)[0]
        pieces = max(1, -(-width // max(tw, 1)) * -(-height // max(th, 1)))
        decoded = tw * th * samples * 4
        offsets, counts = ints(324, -1, pieces), ints(325, -1, pieces)
    else:
        rows = min(max(ints(278, height, 1)[0], 1), max(height, 1))
        pieces = -(-height // rows)
        decoded = rows * width * samples * 4
        offsets, counts = ints(273, -1, pieces), ints(279, -1, pieces)
        if counts == [-1] and ints(259, 1, 1)[0] == 1:  # optional for uncompressed strips: their full size
            counts = [decoded] * (pieces - 1) + [(height - rows * (pieces - 1)) * width * samples * 4]
    if len(offsets) != pieces or len(counts) != pieces or min(offsets + counts) < 0:
        raise PhotoError("corrupt floating-point TIFF (strip or tile table missing or of the wrong size)")
    if max(counts) > _MAX_EXPANSION * decoded + 4096:
        raise PhotoError(f"corrupt floating-point TIFF (a {width}x{height} image with a {max(counts)}-byte "
                         "strip or tile)")
    extents = [(o, o + c) for o, c in zip(offsets, counts, strict=True)]
    for ifd in (block.ifd0, block.exif, block.gps, block.interop):
        if ifd is not None:
            extents += ifd.extents()
    end = max(stop for _, stop in extents)
    if end > n:
        raise PhotoError("truncated floating-point TIFF (its strips or tiles lie beyond the end of the file)")
    if end > sum(stop - start for start, stop in extents) + _MAX_SLACK:
        raise PhotoError(f"corrupt floating-point TIFF (its {end}-byte span is mostly data it does not refer to)")
    return end


def decode_float(im: Image.Image, layout: FloatLayout | None, warns: list[str]) -> np.ndarray:
    """float32 H x W x C in [0, 1] from a 32-bit float TIFF: non-finite samples zeroed, others clipped.

    Float TIFFs hold scene-linear or HDR values that may leave 0..1; the model knows only display values,
    so they are read as such (no tone mapping) and what had to be clipped is said in a warning.
    """
    # libtiff hands Pillow native-order floats but Pillow then byte-swaps big-endian files a second time
    # (garbage values, silently): tell it the data are native.
    im.tile = [t._replace(args=swap_rawmode(t.args, "F;32NF")) if t[0] == "libtiff" else t for t in im.tile]
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


def _undo_float_predictor(a: np.ndarray, layout: FloatLayout) -> np.ndarray:
    """Apply TIFF predictor 2 (horizontal, on the 32-bit words) or 3 (floating point: bytes split into
    planes, most significant first, then differenced) to rows decoded without it."""
    h, n = a.shape
    words = a.view(np.uint32).reshape(h, n // layout.samples, layout.samples)
    if layout.predictor == 2:
        return np.cumsum(words, axis=1, dtype=np.uint32).view(np.float32).reshape(h, n)
    stream = words.astype(np.dtype(layout.byteorder + "u4")).view(np.uint8).reshape(h, -1, layout.samples)
    stream = np.cumsum(stream, axis=1, dtype=np.uint8).reshape(h, 4, n)
    return np.ascontiguousarray(stream.transpose(0, 2, 1)).view(">f4").astype(np.float32).reshape(h, n)
