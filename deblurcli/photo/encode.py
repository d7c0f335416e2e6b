"""Writing a photo: the format follows the suffix; every piece of metadata goes where the format holds it.

Three encoders: Pillow for JPEG, WebP, AVIF and 8-bit PNG; our own 16-bit PNG writer (Pillow writes a
1x1 template carrying the metadata chunks, we write IHDR/IDAT); our own TIFF writer at 8 or 16 bits
(Pillow writes a 1x1 template IFD carrying the metadata, we patch its geometry and append Deflate strips).
"""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, PngImagePlugin, features

from deblurcli._version import __version__
from deblurcli.atomic import atomic_output
from deblurcli.errors import PhotoError
from deblurcli.photo.common import Photo, collect_warnings, one_line
from deblurcli.photo.exif import (
    MAX_IFD_ENTRIES,
    TIFF_STRUCTURE_TAGS,
    ExifBlock,
    ExifFormatError,
    restore_tag_types,
)
from deblurcli.photo.metadata import XMP_EXT_SIG, copy_sidecar, patch_xmp

#: Suffixes we write; the output format follows the suffix. (AVIF only where the AVIF plugin is present.)
WRITABLE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".avif")

_SUFFIX_FORMAT = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".png": "PNG", ".webp": "WEBP",
    ".tif": "TIFF", ".tiff": "TIFF", ".avif": "AVIF",
}
_SOFTWARE = f"deblurcli {__version__}"


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
    xmp = patch_xmp(source.xmp, orientation_applied=source.orientation != 1, size=(w, h)) if source.xmp else None
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
        return ExifBlock(source.exif).edited(w, h, _SOFTWARE)
    except (ExifFormatError, struct.error, ValueError) as e:
        warns.append(f"EXIF could not be updated ({one_line(e)}): dropped")
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
        extra += b"".join(b"\xff\xe1" + struct.pack(">H", 2 + len(XMP_EXT_SIG) + len(p)) + XMP_EXT_SIG + p
                          for p in meta.xmp_extension if len(p) + len(XMP_EXT_SIG) <= 65533)
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
            if fmt == "JPEG":
                with _jpeg_buffer_for(img, kwargs):
                    img.save(buf, fmt, **kwargs)
            else:
                img.save(buf, fmt, **kwargs)
            return buf.getvalue()
        except (ValueError, OSError) as e:  # e.g. "EXIF data is too long" for a JPEG APP1 segment
            msg = one_line(e)
            culprit = next((k for k in ("exif", "xmp") if k in kwargs and k in msg.lower()), None)
            if culprit is None:
                raise PhotoError(f"cannot encode {fmt}: {msg}") from None
            kwargs.pop(culprit)
            warns.append(f"{culprit.upper()} dropped: {fmt} refused it ({msg})")


_MAXBLOCK_LOCK = threading.Lock()


@contextmanager
def _jpeg_buffer_for(img: Image.Image, kwargs: dict[str, object]) -> Iterator[None]:
    """Give Pillow's JPEG encoder a buffer that holds the largest JPEG this image can become.

    With ``optimize`` libjpeg writes the whole entropy-coded image in one go at the end and cannot suspend,
    so it must fit Pillow's buffer, which Pillow sizes at 1 (quality < 95) or 2 (>= 95) bytes per pixel:
    grainy photos at quality 91-94 or 99-100, and thin images (33000x2: one MCU row is 8 pixels tall),
    failed after the whole model run with libjpeg's "Suspension not allowed here". The bound is
    libjpeg-turbo's (``tj3JPEGBufSize``): 2 bytes per sample of the MCU-padded image, plus 2 KiB of
    headers, plus the metadata segments. Pillow reads it from ``ImageFile.MAXBLOCK`` (its minimum buffer
    size), which is set for the duration of the save only, under a lock.
    """
    w, h = img.size
    channels = len(img.getbands())
    bound = ((w + 15) // 16 * 16) * ((h + 15) // 16 * 16) * 2 * channels + 2048
    bound += sum(2 * len(v) + 1024 for v in kwargs.values() if isinstance(v, bytes))  # EXIF, ICC, XMP, extra
    with _MAXBLOCK_LOCK:
        saved = ImageFile.MAXBLOCK
        ImageFile.MAXBLOCK = max(saved, bound)
        try:
            yield
        finally:
            ImageFile.MAXBLOCK = saved


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
    template = _tiff_template(c, meta, warns)
    tiff = ExifBlock(bytes(template))  # same IFD structure as EXIF: reuse the parser
    e = tiff.e
    ifd = tiff.ifd0
    if meta.exif:
        restore_tag_types(template, tiff, meta.exif)
    strips, rows_per_strip = _tiff_strips(pixels, bits, e)

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


def _tiff_template(c: int, meta: _Meta, warns: list[str]) -> bytearray:
    """A 1x1 uncompressed ``c``-channel TIFF from Pillow whose IFD carries all of ``meta``.

    EXIF values Pillow cannot lay out are dropped with a warning, keeping XMP, IPTC and Photoshop.
    """
    with collect_warnings(warns, "EXIF for TIFF"):  # Pillow parses the EXIF again here
        tags = _tiff_tags(meta, warns)
        kwargs: dict[str, object] = {"exif": tags}
        if meta.icc:
            kwargs["icc_profile"] = meta.icc
        if meta.dpi:
            kwargs["dpi"] = meta.dpi
        buf = io.BytesIO()
        try:
            _pil_image(np.zeros((1, 1, c), np.uint8)).save(buf, "TIFF", compression="raw", **kwargs)
        except Exception as e:  # odd EXIF values Pillow cannot lay out: keep the rest
            warns.append(f"EXIF dropped: TIFF cannot hold it ({one_line(e)})")
            keep = {t: tags[t] for t in (700, 33723, 34377, 317) if t in tags}
            tags = Image.Exif()
            for t, v in keep.items():
                tags[t] = v
            buf = io.BytesIO()
            _pil_image(np.zeros((1, 1, c), np.uint8)).save(buf, "TIFF", compression="raw", **{**kwargs, "exif": tags})
    return bytearray(buf.getvalue())


def _tiff_tags(meta: _Meta, warns: list[str]) -> Image.Exif:
    """The template's tags: the EXIF (minus the source TIFF's layout tags), XMP, IPTC, Photoshop, Predictor."""
    tags = Image.Exif()
    if meta.exif:
        try:
            tags.load(b"Exif\x00\x00" + meta.exif)
            for tag in list(tags):
                if tag in TIFF_STRUCTURE_TAGS:
                    del tags[tag]
            largest = max(len(tags), *(len(tags.get_ifd(t)) for t in (0x8769, 0x8825)))
            if largest + len(TIFF_STRUCTURE_TAGS) > MAX_IFD_ENTRIES:  # a forged block (65,535 entries)
                warns.append(f"EXIF dropped: an IFD of {largest} entries is more than a TIFF output carries "
                             f"({MAX_IFD_ENTRIES})")
                return _with_other_tags(Image.Exif(), meta)
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
            warns.append(f"EXIF dropped: TIFF cannot hold it ({one_line(e)})")
            tags = Image.Exif()
    return _with_other_tags(tags, meta)


def _with_other_tags(tags: Image.Exif, meta: _Meta) -> Image.Exif:
    """``tags`` plus XMP, IPTC, Photoshop resources and the Predictor of the strips we append."""
    if meta.xmp:
        tags[700] = meta.xmp
    if meta.iptc:
        tags[33723] = meta.iptc
    if meta.photoshop:
        tags[34377] = meta.photoshop
    tags[317] = 2  # Predictor: Pillow copies the tag verbatim; it describes the strips we append
    return tags


def _tiff_strips(pixels: np.ndarray, bits: int, e: str) -> tuple[list[bytes], int]:
    """Deflate strips of about 1 MiB of horizontally differenced samples, and the rows per strip."""
    h, w, c = pixels.shape
    sample = np.dtype(e + ("u2" if bits == 16 else "u1"))
    diff = pixels.copy()
    diff[:, 1:] -= pixels[:, :-1]  # unsigned: wraps modulo 2^bits, as the TIFF predictor expects
    row_bytes = w * c * sample.itemsize
    rows_per_strip = max(1, min(h, (1 << 20) // row_bytes))
    rows = diff.astype(sample).reshape(h, w * c).view(np.uint8)
    strips = [zlib.compress(rows[y:y + rows_per_strip].tobytes(), 6) for y in range(0, h, rows_per_strip)]
    return strips, rows_per_strip


def encode_preview_jpeg(pixels: np.ndarray, source: Photo, quality: int = 90, *, comment: bytes = b"") -> bytes:
    """An 8-bit RGB picture made from ``source`` (a compare strip) as JPEG, with the photo's ICC profile when
    it describes RGB, so the strip shows the colours the photo shows, and ``comment`` as its JPEG comment
    (the mark by which a later run knows the strip for a picture of ours, not a photo)."""
    icc = source.icc_profile if source.icc_profile and _icc_colour_space(source.icc_profile) == b"RGB " else None
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality, icc_profile=icc, comment=comment)
    return buffer.getvalue()


def encode_png(pixels: np.ndarray) -> bytes:
    """A plain 8-bit PNG (a kernel picture): no metadata to carry."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()
