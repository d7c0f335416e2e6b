"""JPEG checks that Pillow does not make: image data cut short, and a size the data present cannot hold.

libjpeg treats a marker met inside the entropy-coded data as the end of the data and decodes every
missing block as zero (uniform grey), with only a warning, which Pillow silences. A file cut short with an
end-of-image marker appended is therefore "read" without complaint, grey below the cut; and a 2.7 KB file
of that kind claiming 175 MP was decoded, and run through the model for hours, at 6.6 GB. Both are
refused here, before the photo is decoded, from the file's marker structure and two decodes at 1/8 scale.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image

from deblurcli.errors import PhotoError

_SOF_HUFFMAN = {0xC0, 0xC1, 0xC2}  # baseline, extended sequential, progressive
_SOF_ARITHMETIC = {0xC9, 0xCA}  # extended sequential, progressive
_PROGRESSIVE = {0xC2, 0xCA}
_SOF_OTHER = {0xC3, 0xC5, 0xC6, 0xC7, 0xCB, 0xCD, 0xCE, 0xCF}  # lossless and hierarchical: not checked

#: Fewest bits one 8x8 block can take with Huffman coding: its DC difference is a code of at least one bit.
_HUFFMAN_BITS_PER_BLOCK = 1
#: Arithmetic coding has no such floor (a run of flat blocks costs almost nothing), so the cap there is
#: only against absurd claims: one byte per 1024 blocks (64 K pixels), far below any real photo's.
_ARITHMETIC_BLOCKS_PER_BYTE = 1024


def max_jpeg_bytes(width: int, height: int, components: int) -> int:
    """The most bytes a JPEG of this size can need for its headers and data, however grainy: 2 bytes per
    sample of the MCU-padded image (libjpeg-turbo's ``tj3JPEGBufSize`` bound), plus 16 MiB of metadata
    segments. What lies beyond (a camera trailer, or gigabytes appended by a hostile file) is not read."""
    padded = ((width + 15) // 16 * 16) * ((height + 15) // 16 * 16)
    return padded * 2 * max(components, 1) + 2048 + 16 * 2**20


@dataclass(frozen=True)
class _Scan:
    components: tuple[int, ...]
    ss: int
    se: int
    al: int


@dataclass(frozen=True)
class _Layout:
    """What the markers say: the frame, its scans, and where the entropy-coded data lie."""

    sof: int
    width: int
    height: int
    components: dict[int, tuple[int, int]]  #: component id -> (horizontal, vertical) sampling factor
    scans: list[_Scan]
    data_start: int  #: where the first scan's entropy-coded data begin
    data_end: int  #: the marker that ended the last scan's data (the EOI in a whole file), or len(data)

    def blocks(self) -> int:
        """8x8 blocks of the components that some scan codes a DC coefficient of."""
        coded = {c for scan in self.scans if scan.ss == 0 for c in scan.components}
        hmax = max(h for h, _ in self.components.values())
        vmax = max(v for _, v in self.components.values())
        total = 0
        for cid, (h, v) in self.components.items():
            if cid in coded:
                w = -(-self.width * h // hmax)
                ht = -(-self.height * v // vmax)
                total += -(-w // 8) * -(-ht // 8)
        return total

    def complete_coverage(self) -> bool:
        """Whether every coefficient of every component is coded to its last bit (Al = 0) by some scan."""
        for cid in self.components:
            covered = set()
            for scan in self.scans:
                if cid in scan.components and scan.al == 0:
                    covered.update(range(scan.ss, scan.se + 1))
            if not covered.issuperset(range(64)):
                return False
        return True


def check_jpeg_data(data: bytes) -> None:
    """Refuse a JPEG whose image data end early, or which claims more pixels than its data can code.

    ``data`` is the file, or its first :func:`max_jpeg_bytes`. Raises PhotoError with one line; returns
    quietly for anything it cannot judge (unusual coding processes, data Pillow will refuse by itself).
    """
    layout = _layout(data)
    if layout is None or layout.sof in _SOF_OTHER or not layout.scans:
        return
    present = len(data) - layout.data_start
    blocks = layout.blocks()
    if layout.sof in _SOF_HUFFMAN:
        need = blocks * _HUFFMAN_BITS_PER_BLOCK // 8
    else:
        need = blocks // _ARITHMETIC_BLOCKS_PER_BYTE
    if present < need:
        raise PhotoError(
            f"truncated or forged JPEG: {layout.width}x{layout.height} pixels need at least {need} bytes of "
            f"image data, the file has {max(present, 0)}"
        )
    if layout.data_end >= len(data):
        return  # no marker after the data: Pillow reports the file as truncated itself
    if len(layout.scans) > 1 or layout.sof in _PROGRESSIVE:
        # libjpeg absorbs every scan before it outputs a row, so the decode below cannot tell; a cut
        # leaves the later scans missing instead (a cut inside the last scan is not detected).
        if not layout.complete_coverage():
            raise PhotoError("truncated JPEG: its image data end before all the scans (premature end of data)")
        return
    if _premature_end(data[:layout.data_end]):
        raise PhotoError("truncated JPEG: its image data end early and the rest would be grey "
                         "(premature end of data)")


def _premature_end(body: bytes) -> bool:
    """Whether a single-scan JPEG's data (everything before its end marker) run out before its last row.

    Decoded once with the end marker, where libjpeg fills missing blocks with grey, and once with a few
    bytes of padding and no marker, where it stops and leaves the rows it could not finish unwritten:
    the two agree exactly only when every row was coded. At 1/8 scale (DC only), which is cheap.
    """
    whole = _tiny_decode(body + b"\xff\xd9")
    cut = _tiny_decode(body + bytes(64))  # padding: libjpeg reads a few bytes ahead of the last block
    return whole is None or cut is None or not np.array_equal(whole, cut)


def _tiny_decode(data: bytes) -> np.ndarray | None:
    try:
        im = Image.open(io.BytesIO(data), formats=["JPEG"])
    except (OSError, ValueError, SyntaxError):
        return None
    with im:
        im.draft(im.mode, (1, 1))
        try:
            im.load()
        except (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError):
            im.tile = []  # what was decoded before the data ran out stays in the image
        return np.asarray(im)


def _layout(data: bytes) -> _Layout | None:
    """The frame and scans of the first image in ``data`` (markers walked from the start); None when the
    marker structure is not what a JPEG decoder could read (Pillow then refuses the file itself)."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i, n = 2, len(data)
    sof = width = height = 0
    components: dict[int, tuple[int, int]] = {}
    scans: list[_Scan] = []
    data_start = data_end = 0
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD9:  # EOI
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        segment = data[i + 4:i + 2 + length]
        if length < 2 or len(segment) != length - 2:
            return None
        if marker in _SOF_HUFFMAN | _SOF_ARITHMETIC | _SOF_OTHER and not sof:
            if len(segment) < 6:
                return None
            _, height, width, count = struct.unpack(">BHHB", segment[:6])
            if len(segment) < 6 + 3 * count or count == 0:
                return None
            sof = marker
            for k in range(count):
                cid, hv = segment[6 + 3 * k], segment[7 + 3 * k]
                components[cid] = (max(hv >> 4, 1), max(hv & 15, 1))
        elif marker == 0xDA:  # SOS, then entropy-coded data up to the next marker that is not RSTn
            if not sof or len(segment) < 1 or len(segment) < 1 + 2 * segment[0] + 3:
                return None
            count = segment[0]
            ids = tuple(segment[1 + 2 * k] for k in range(count))
            ss, se, a = segment[1 + 2 * count], segment[2 + 2 * count], segment[3 + 2 * count]
            scans.append(_Scan(ids, ss, min(se, 63), a & 15))
            i += 2 + length
            data_start = data_start or i
            i = data_end = _entropy_end(data, i)
            continue
        i += 2 + length
    if not sof or height == 0:  # height 0 (DNL marker) is not something we judge
        return None
    return _Layout(sof, width, height, components, scans, data_start, data_end)


def _entropy_end(data: bytes, i: int) -> int:
    """Where the entropy-coded data starting at ``i`` end: the first marker that is not a stuffed 0xFF00
    or a restart marker (``len(data)`` if there is none)."""
    n = len(data)
    while True:
        i = data.find(b"\xff", i)
        if i < 0 or i + 1 >= n:
            return n
        nxt = data[i + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
            i += 2
        elif nxt == 0xFF:
            i += 1
        else:
            return i
