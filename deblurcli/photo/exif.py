"""The EXIF byte editor: EXIF blocks parsed just enough to be patched in place, never re-serialised.

Orientation, the pixel-dimension tags and Software are patched inside the original block and the embedded
thumbnail is unlinked (and cut off when it is the tail of the block). Every other byte stays where it was,
so unknown tags, their types and maker notes that use absolute offsets survive JPEG/PNG/WebP round trips
byte for byte. The same parser reads TIFF file headers (a TIFF file is an EXIF-structured block).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO, overload

from PIL import Image

from deblurcli.photo.common import one_line


class ExifFormatError(ValueError):
    pass


class FileWindow:
    """A file seen as a read-only byte string that reads only the bytes asked for (seek + read).

    For parsing a TIFF file's IFDs: reading it whole would cost the file's size, and memory-mapping it
    killed the process with SIGBUS when the file shrank meanwhile (another program saving over it). A
    read past the end here is an :class:`ExifFormatError` instead.
    """

    def __init__(self, fp: BinaryIO) -> None:
        self._fp = fp
        self._size = fp.seek(0, os.SEEK_END)

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, key: int) -> int: ...

    @overload
    def __getitem__(self, key: slice) -> bytes: ...

    def __getitem__(self, key: int | slice) -> int | bytes:
        if isinstance(key, int):
            return self[key:key + 1][0]
        start, stop, step = key.indices(self._size)
        if step != 1:
            raise ValueError("FileWindow slices have no step")
        self._fp.seek(start)
        data = self._fp.read(max(0, stop - start))
        if len(data) != max(0, stop - start):
            raise ExifFormatError("the file is shorter than it was (it changed while being read)")
        return data


#: What an :class:`ExifBlock` can parse: the block's bytes, or a TIFF file through a :class:`FileWindow`.
Blob = bytes | bytearray | FileWindow


#: Most entries an IFD may have: real ones have tens to a few hundred; more is a forged block, which would
#: cost time (65,535 entries) and which a TIFF output could not carry.
MAX_IFD_ENTRIES = 4096

TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}


@dataclass
class Entry:
    pos: int  # offset of the 12-byte entry
    tag: int
    type: int
    count: int
    value_at: int | None  # offset of the value bytes (pos + 8 when inline); None when unlocatable
    nbytes: int


@dataclass
class Ifd:
    offset: int
    entries: dict[int, Entry]
    next_pos: int | None  # where the next-IFD pointer lives, when inside the block
    next_offset: int

    def extents(self) -> list[tuple[int, int]]:
        table_end = self.offset + 2 + 12 * len(self.entries) + (4 if self.next_pos is not None else 0)
        ext = [(self.offset, table_end)]
        for e in self.entries.values():
            if e.value_at is not None and e.nbytes > 4:
                ext.append((e.value_at, e.value_at + e.nbytes))
        return ext


class ExifBlock:
    """A TIFF-structured EXIF block, parsed just enough to patch it in place.

    Patching in place rather than re-serialising keeps every byte we do not need to change where it
    was: unknown tags, their original types, and maker notes whose internal offsets are absolute.
    """

    def __init__(self, blob: Blob) -> None:
        if len(blob) < 8 or blob[:2] not in (b"II", b"MM"):
            raise ExifFormatError("no TIFF header")
        self.blob = blob
        self.e = "<" if blob[:2] == b"II" else ">"
        if self._u16(2) != 42:
            raise ExifFormatError("bad TIFF magic number")
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
        return struct.unpack(self.e + "H", self.blob[at:at + 2])[0]

    def _u32(self, at: int) -> int:
        return struct.unpack(self.e + "I", self.blob[at:at + 4])[0]

    def _sub(self, parent: Ifd, tag: int, name: str) -> Ifd | None:
        entry = parent.entries.get(tag)
        if entry is None:
            return None
        value = self._int(entry)
        ifd = self._parse_ifd(value, strict=False) if value is not None else None
        if ifd is None:
            self.problems.append(f"{name} is unreadable")
        return ifd

    def _parse_ifd(self, offset: int, *, strict: bool, chained: bool = False) -> Ifd | None:
        """One IFD; ``chained`` IFDs (IFD0, IFD1) end with a next-IFD pointer, sub-IFDs often do not."""
        n = len(self.blob)
        if offset < 8 or offset + 2 > n:
            if strict:
                raise ExifFormatError(f"IFD offset {offset} outside the {n}-byte block")
            return None
        count = self._u16(offset)
        if offset + 2 + 12 * count > n or count > MAX_IFD_ENTRIES:
            if strict:
                raise ExifFormatError(f"IFD with {count} entries overruns the block")
            return None
        entries: dict[int, Entry] = {}
        for k in range(count):
            pos = offset + 2 + 12 * k
            tag, typ, cnt = struct.unpack(self.e + "HHI", self.blob[pos:pos + 8])
            size = TYPE_SIZES.get(typ)
            value_at: int | None = None
            nbytes = 0
            if size is not None:
                nbytes = size * cnt
                value_at = pos + 8 if nbytes <= 4 else self._u32(pos + 8)
                if value_at + nbytes > n:
                    value_at = None
            entries[tag] = Entry(pos, tag, typ, cnt, value_at, nbytes)
        next_pos = offset + 2 + 12 * count
        if chained and next_pos + 4 <= n:
            next_offset = self._u32(next_pos)
            if next_offset >= n:
                next_offset = 0
        else:
            next_pos, next_offset = None, 0  # type: ignore[assignment]
        return Ifd(offset, entries, next_pos, next_offset)

    def _int(self, entry: Entry) -> int | None:
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
        assert not isinstance(self.blob, FileWindow), "only a block in memory is edited"
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
        if (entry is not None and entry.type == 2 and entry.value_at is not None and entry.nbytes >= len(value) > 4
                and not _overlapping(entry.value_at, entry.value_at + entry.nbytes, self._kept(but=entry))):
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

    def _set_int(self, buf: bytearray, entry: Entry | None, value: int) -> None:
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
        kept = self._kept()
        if max(e for _, e in kept) <= cut:
            del buf[cut:]
        elif thumb:  # zeroed where it is the thumbnail's alone: a forged pointer may cover IFD0 and its values
            for start, stop in _uncovered(thumb, kept):
                buf[start:stop] = bytes(stop - start)

    def _kept(self, but: Entry | None = None) -> list[tuple[int, int]]:
        """Byte ranges the edited block keeps: the header, the IFD tables and their out-of-line values
        (except those of entry ``but``)."""
        kept = [(0, 8)]
        for ifd in (self.ifd0, self.exif, self.gps, self.interop):
            if ifd is not None:
                kept += ifd.extents()
        if but is not None and but.value_at is not None and but.nbytes > 4:
            kept.remove((but.value_at, but.value_at + but.nbytes))
        return kept

    def _append(self, buf: bytearray, data: bytes) -> int:
        if len(buf) % 2:
            buf.append(0)
        at = len(buf)
        buf.extend(data)
        return at


def _overlapping(start: int, stop: int, ranges: list[tuple[int, int]]) -> bool:
    return any(start < b and a < stop for a, b in ranges)


def _uncovered(span: tuple[int, int], ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``span`` that none of ``ranges`` covers."""
    pieces = [span]
    for a, b in ranges:
        pieces = [p for start, stop in pieces
                  for p in ((start, min(stop, a)), (max(start, b), stop)) if p[0] < p[1]]
    return pieces


# TIFF tags that describe the TIFF's own pixel layout, or that we carry separately: kept out of the EXIF
# block taken from a TIFF input (they would be wrong in any other file).
TIFF_STRUCTURE_TAGS = {
    254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 288, 289, 290, 291,
    292, 293, 317, 318, 319, 320, 322, 323, 324, 325, 330, 338, 339, 340, 341, 347, 513, 514, 529, 530,
    531, 532, 700, 33723, 34377, 34675, 37724,
}


def tiff_exif_block(im: Image.Image, warns: list[str]) -> bytes | None:
    """A TIFF's EXIF as a standalone block: its IFD0 minus the TIFF's own layout tags, plus sub-IFDs.

    Read from the image's own open file (``im.fp``) in bounded pieces, not memory-mapped: see
    :class:`FileWindow`.
    """
    exif = im.getexif()
    for tag in list(exif):
        if tag in TIFF_STRUCTURE_TAGS:
            del exif[tag]
    try:
        block = bytearray(strip_exif_prefix(exif.tobytes())) if len(exif) else None
    except Exception as e:  # Pillow cannot re-serialise some odd tag types
        warns.append(f"EXIF in this TIFF could not be read ({one_line(e)}): dropped")
        return None
    if block and im.fp is not None:
        position = im.fp.tell()  # Pillow reads the pixels through the same file object later
        try:  # Pillow re-types some tags when re-serialising: take the types from the file itself
            restore_tag_types(block, ExifBlock(bytes(block)), FileWindow(im.fp))
        except (OSError, ValueError, ExifFormatError, struct.error):
            pass
        finally:
            im.fp.seek(position)
    return bytes(block) if block else None


def source_exif(raw: bytes | None, warns: list[str], *, isobmff: bool = False) -> tuple[bytes | None, bool, int]:
    """(raw EXIF block, parsed?, orientation to apply). ``isobmff``: the block comes from a HEIF/AVIF
    file (see :func:`strip_exif_prefix`)."""
    if not raw:
        return None, False, 1
    raw = strip_exif_prefix(raw, isobmff=isobmff)
    try:
        block = ExifBlock(raw)
    except ExifFormatError as e:
        warns.append(f"EXIF cannot be parsed ({e}): carried over unchanged, pixels not rotated")
        return raw, False, 1
    for problem in block.problems:
        warns.append(f"EXIF {problem}: carried over unchanged")
    orientation = block.orientation
    if orientation not in range(1, 9):
        warns.append(f"EXIF orientation {orientation} is invalid: ignored")
        orientation = 1
    return raw, True, orientation


def strip_exif_prefix(raw: bytes, *, isobmff: bool = False) -> bytes:
    """The TIFF-structured block without what a container puts before it: JPEG/PNG/WebP's "Exif\\0\\0", or
    in HEIF/AVIF (``isobmff``) the offset that precedes the TIFF header.

    The offset rule is for HEIF and AVIF only: applied to every format, a JPEG block with a few bytes of
    junk before its header was carried unparsed (and its pixels not rotated), then found parseable once
    written as WebP (Pillow drops the "Exif" prefix there), and the copy was rotated a second time.
    """
    if raw.startswith(b"Exif\x00\x00"):
        return raw[6:]
    if isobmff:
        for marker in (b"II*\x00", b"MM\x00*"):
            at = raw.find(marker, 0, 16)
            if at > 0:
                return raw[at:]
    return raw


def restore_tag_types(buf: bytearray, written: ExifBlock, source_exif: Blob) -> None:
    """Give tags Pillow re-typed (e.g. a nested MakerNote written as BYTE, not UNDEFINED) their source
    type back, where the value's byte size is the same so only the type field changes."""
    try:
        source = ExifBlock(source_exif)
    except (ExifFormatError, struct.error):
        return
    pairs = ((written.ifd0, source.ifd0), (written.exif, source.exif), (written.gps, source.gps),
             (written.interop, source.interop))
    for dst, src in pairs:
        if dst is None or src is None:
            continue
        for tag, entry in dst.entries.items():
            orig = src.entries.get(tag)
            if (orig is not None and tag not in TIFF_STRUCTURE_TAGS and orig.type != entry.type
                    and orig.count == entry.count and TYPE_SIZES.get(orig.type) == TYPE_SIZES.get(entry.type)):
                struct.pack_into(written.e + "H", buf, entry.pos + 2, orig.type)
