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
  the file is read once into memory and decoded from there a second time for the low bytes) and written
  at 16 bits by our own PNG/TIFF pixel writers, with Pillow writing a 1x1 template that carries the
  metadata. 16-bit MinIsWhite gray TIFFs are inverted on reading (Pillow inverts only 8-bit ones).
* **32-bit float TIFF** (gray, gray+alpha, RGB, RGBA; any compression Pillow has, predictors 1-3) is
  read and processed as display values in 0..1, the only range the model knows: no tone mapping, values
  outside 0..1 clipped and NaN/inf zeroed, each with a warning, and the output is 16-bit (a warning says
  so). Pillow reads only one-channel float TIFFs, so multi-channel ones are opened through a rewritten
  first IFD (see :mod:`.float_tiff`). 16/64-bit float, planar float and tiled float files with a
  predictor are refused with a message saying to export a 16-bit TIFF.
* **Animation**: animated WebP/PNG/AVIF and multi-page TIFFs are read as their first frame/page with a
  warning, and written as a still image. GIF is refused (a 256-colour palette format, not a photo format).
* **Decompression bombs**: an image over :data:`.decode.MAX_PIXELS` is refused before its pixels are decoded
  unless ``allow_huge``; even then it is refused if decoding it would not fit in available memory.
  Pillow's own limit is lifted while a photo is opened and decoded (ours replaces it). A JPEG is refused
  when its data end early behind an appended end marker (libjpeg would decode the rest as grey) or are
  too few for the size it claims (see :mod:`.jpeg`).
* **Atomic writes**: outputs are written through :mod:`deblurcli.atomic` (a hidden temporary file in the
  output folder, fsynced and renamed; nothing is left behind on failure), and an existing file is replaced
  only when ``overwrite`` is asked for.
* **XMP sidecars** (``photo.xmp`` or ``photo.jpg.xmp`` beside the input) are copied beside the output by
  :func:`write_photo` itself (through :func:`.metadata.copy_sidecar`), with their orientation patched too.

Where each concern lives: :mod:`.decode` (plugins, bombs, modes, 16-bit, orientation), :mod:`.float_tiff`,
:mod:`.jpeg` (truncated JPEG data), :mod:`.exif` (the EXIF byte editor), :mod:`.metadata` (XMP, IPTC,
sidecars), :mod:`.encode` (the three encoders), :mod:`.common` (the :class:`Photo` record). This package
never imports torch: it is used by the CLI, training and evaluation alike.
"""

from __future__ import annotations

from deblurcli.photo.common import Photo
from deblurcli.photo.decode import SUPPORTED_SUFFIXES, read_photo
from deblurcli.photo.encode import WRITABLE_SUFFIXES, encode_png, encode_preview_jpeg, write_photo

__all__ = [
    "SUPPORTED_SUFFIXES",
    "WRITABLE_SUFFIXES",
    "Photo",
    "encode_png",
    "encode_preview_jpeg",
    "read_photo",
    "write_photo",
]
