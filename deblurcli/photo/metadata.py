"""XMP, IPTC and Photoshop resources from the source file, and XMP sidecars beside it.

XMP is kept consistent with the written pixels (orientation 1 once rotated, the new dimensions); a sidecar
(``photo.xmp`` or ``photo.jpg.xmp``) is copied beside the output with the same patch.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import struct
from pathlib import Path

from PIL import Image

from deblurcli.atomic import atomic_write_bytes
from deblurcli.errors import PhotoError


def source_photoshop_iptc(im: Image.Image, fmt: str) -> tuple[bytes | None, bytes | None, list[bytes]]:
    """Photoshop resources (thumbnails removed), IPTC records, JPEG ExtendedXMP payloads."""
    block: bytes | None = None
    iptc: bytes | None = None
    xmp_ext: list[bytes] = []
    if fmt in ("JPEG", "MPO"):
        parts = []
        for marker, payload in getattr(im, "applist", []):
            if marker == "APP13" and payload.startswith(b"Photoshop 3.0\x00"):
                parts.append(payload[14:])
            elif marker == "APP1" and payload.startswith(XMP_EXT_SIG):
                xmp_ext.append(payload[len(XMP_EXT_SIG):])
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


XMP_EXT_SIG = b"http://ns.adobe.com/xmp/extension/\x00"


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


_XMP_PATTERNS = {
    "orientation": re.compile(rb"(tiff:Orientation\s*=\s*[\"'])\s*\d+\s*([\"'])|"
                              rb"(<tiff:Orientation>)\s*\d+\s*(</tiff:Orientation>)"),
    "width": re.compile(rb"((?:exif:PixelXDimension|tiff:ImageWidth)\s*=\s*[\"'])\s*\d+\s*([\"'])|"
                        rb"(<(?:exif:PixelXDimension|tiff:ImageWidth)>)\s*\d+\s*(</)"),
    "height": re.compile(rb"((?:exif:PixelYDimension|tiff:ImageLength)\s*=\s*[\"'])\s*\d+\s*([\"'])|"
                         rb"(<(?:exif:PixelYDimension|tiff:ImageLength)>)\s*\d+\s*(</)"),
}


def patch_xmp(xmp: bytes, *, orientation_applied: bool, size: tuple[int, int] | None) -> bytes:
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


#: Largest XMP sidecar copied: Lightroom/darktable sidecars with long edit histories stay in the low MB.
MAX_SIDECAR_BYTES = 32 * 2**20


def find_sidecar(photo_path: str | os.PathLike[str]) -> Path | None:
    """The XMP sidecar of a photo: ``photo.xmp`` (Lightroom style) or ``photo.jpg.xmp`` (darktable).

    The candidates are looked at without following links (``lstat``), so a symbolic link named like a
    sidecar is found, and then refused by :func:`copy_sidecar`, rather than silently read through.
    """
    p = Path(photo_path)
    for cand in (p.with_suffix(".xmp"), p.with_suffix(".XMP"), p.with_name(p.name + ".xmp"),
                 p.with_name(p.name + ".XMP")):
        try:
            mode = cand.lstat().st_mode
        except OSError:
            continue
        if not stat.S_ISDIR(mode):
            return cand
    return None


def _read_sidecar(src: Path) -> bytes:
    """The bytes of a sidecar that is a regular file of its own, read through one descriptor.

    A sidecar is data from the input tree copied into the output tree, which others may read: a link to
    ``/proc/self/environ`` or to someone's 0600 file must not become a world-readable copy. ``O_NOFOLLOW``
    refuses a link in the last component even if it was swapped in after :func:`find_sidecar` looked,
    ``O_NONBLOCK`` keeps a FIFO from hanging the open, and ``fstat`` on the open descriptor checks the
    very file that is read. Raises OSError or ValueError with the reason.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    if src.is_symlink():  # also where O_NOFOLLOW does not exist
        raise ValueError("is a symbolic link")
    try:
        fd = os.open(src, flags)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ValueError("is a symbolic link") from None
        raise
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("is not a regular file")
        if st.st_size > MAX_SIDECAR_BYTES:
            raise ValueError(f"is larger than {MAX_SIDECAR_BYTES // 2**20} MiB")
        data = fh.read(MAX_SIDECAR_BYTES + 1)
    if len(data) > MAX_SIDECAR_BYTES:  # grew after the fstat
        raise ValueError(f"is larger than {MAX_SIDECAR_BYTES // 2**20} MiB")
    return data


def copy_sidecar(
    src_photo_path: str | os.PathLike[str],
    dst_path: str | os.PathLike[str],
    *,
    orientation_applied: bool = False,
    overwrite: bool = False,
) -> list[str]:
    """Copy the input's XMP sidecar beside ``dst_path`` (same naming style); returns warnings.

    :func:`write_photo` calls this itself. When the pixels were rotated, the copy's tiff:Orientation is
    set to 1 so that editors reading the sidecar do not rotate the output a second time. Only a regular
    file of at most :data:`MAX_SIDECAR_BYTES` is copied (see :func:`_read_sidecar`), and the copy gets the
    output photo's permissions, never the source's.
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
        data = _read_sidecar(src)
    except ValueError as e:
        return [f"XMP sidecar '{src.name}' {e}: not copied"]
    except OSError as e:
        return [f"XMP sidecar '{src.name}' could not be read ({e.strerror or e}): not copied"]
    if orientation_applied:
        data = patch_xmp(data, orientation_applied=True, size=None)
    try:
        atomic_write_bytes(dst, data)
        if not same:
            os.chmod(dst, stat.S_IMODE(dst_photo.stat().st_mode))
    except PhotoError as e:
        return [f"XMP sidecar not copied: {e}"]
    except OSError as e:
        return [f"XMP sidecar '{dst.name}' written, but its permissions could not be set ({e.strerror or e})"]
    return []
