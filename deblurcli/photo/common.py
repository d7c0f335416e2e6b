"""What every photo module shares: the :class:`Photo` record, Pillow tile helpers, one-line warnings."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


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


def tile_rawmode(args: object) -> str | None:
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def swap_rawmode(args: object, new: str) -> object:
    if isinstance(args, str):
        return new
    assert isinstance(args, tuple)
    return (new, *args[1:])


@contextmanager
def collect_warnings(warns: list[str], prefix: str) -> Iterator[None]:
    """Python warnings raised in the block (Pillow's "Corrupt EXIF data", ...) as our one-line warnings,
    instead of raw ``file.py:123: UserWarning`` lines on the user's terminal."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    warns.extend(f"{prefix}: {msg}" for msg in dict.fromkeys(one_line(w.message) for w in caught))


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:200] or type(e).__name__
