"""32-bit float TIFF: read through Pillow, which by itself opens only one-channel float files.

A multi-channel float TIFF is handed to Pillow as a one-channel image ``samples`` times wider (a rewritten
first IFD over the same bytes), so every codec Pillow has decompresses it; the predictor, whose stride is
the sample count, is undone here afterwards. Values are read as display values in 0..1 (no tone mapping).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from deblurcli.errors import PhotoError
from deblurcli.photo.common import one_line, swap_rawmode
from deblurcli.photo.exif import ExifBlock, ExifFormatError


@dataclass(frozen=True)
class FloatLayout:
    """How a multi-channel 32-bit float TIFF was opened as a one-channel float image ``samples`` times
    wider (see :func:`open_float_tiff`), and what is left to undo after decoding."""

    samples: int  #: samples per pixel: 2 (gray + alpha), 3 (RGB) or 4 (RGBA)
    predictor: int  #: 1 none, 2 horizontal, 3 floating point: 2 and 3 are undone by us
    byteorder: str  #: "<" or ">", the file's


_FLOAT_TIFF_TAGS = {256: 4, 258: 3, 262: 3, 277: 3, 317: 3, 322: 4, 339: 3}  # tags the view rewrites: type


def open_float_tiff(path: Path) -> tuple[Image.Image, FloatLayout] | None:
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
        block = ExifBlock(data)
    except MemoryError:
        raise PhotoError("not enough memory to open this image") from None
    except OSError as e:
        raise PhotoError(f"cannot open: {e.strerror or e}") from None
    except (ExifFormatError, struct.error):
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
        raise PhotoError(f"corrupt floating-point TIFF ({one_line(err)})") from None  # (raised in a handler)
    if im.mode != "F":
        im.close()
        raise PhotoError("unsupported floating-point TIFF layout: export a 16-bit TIFF")
    return im, FloatLayout(samples, predictor, e)


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
