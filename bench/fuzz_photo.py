"""Fuzz the photo reader, the EXIF editor and the writers with mutated files, for a bounded time (not in CI).

Each input is one byte that picks what to build, then a payload:

* the payload *is* a file, named ``.jpg``, ``.png``, ``.webp`` or ``.tif``;
* the payload is the EXIF block of an otherwise valid JPEG (APP1) or PNG (eXIf chunk);
* the payload goes straight to the EXIF editor (parse, patch Orientation/size/Software, parse again).

Whatever :func:`deblurcli.photo.read_photo` accepts is checked (float32, finite, in [0, 1], H x W x 3), written
in the format the selector picks, and read back: our own output must always be readable and the same size.
Anything but :class:`PhotoError` escaping is a crash, and so is a Python warning escaping read_photo or
write_photo (it would print as a raw ``file.py:123: UserWarning`` line in the user's terminal). The limit
on pixels is lowered to 4 MP so that a forged header cannot make one input take minutes.

Engines: ``atheris`` (coverage-guided libFuzzer over the instrumented Python of deblurcli.photo and Pillow's
plugins; ``pip install atheris``) or ``mutate`` (a plain random mutator over the same seeds, no extra
dependency). Crashing inputs are saved under ``--crashes`` for turning into regression tests::

    python bench/fuzz_photo.py --seconds 180                    # atheris when installed, else mutate
    python bench/fuzz_photo.py --seconds 60 --engine mutate --seed 3

Figures (issue 19, item 23): the issue asks for 10 minutes with nothing found. Measured here, on a shared
2-core machine: ``--seconds 180 --engine mutate --seed 0`` ran 61,880 inputs in 180 s (344/s) and found
nothing; ``--seconds 600 --engine mutate --seed 1`` (the issue's 10 minutes, after every fix) ran 860,279
inputs in 600 s (1,434/s) with 0 crashes. Before the fixes of issue 19 the mutator itself crashed after 5-21 s (``randrange`` on an empty
input kept in the pool) and, with that fixed, found the EXIF header overwrite and an orientation read
differently once a JPEG's EXIF was written as WebP.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import struct
import sys
import tempfile
import time
import traceback
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SUFFIXES = (".jpg", ".png", ".webp", ".tif")
OUT_SUFFIXES = (".jpg", ".png", ".webp", ".tif")
#: selector % 8: 0-3 file with SUFFIXES[k]; 4 EXIF in a JPEG; 5 EXIF in a PNG; 6-7 the EXIF editor alone.
KINDS = 8


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _encoded(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _exif_block(orientation: int) -> bytes:
    """A camera-like EXIF block (no "Exif\\0\\0" prefix): IFD0, Exif IFD, GPS IFD, IFD1 with a thumbnail."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Canon"
    exif[0x0131] = "Firmware 1.0"
    exif.get_ifd(0x8769).update({0x9003: "2024:05:01 12:00:00", 0x927C: bytes(range(64)), 0xA002: 24, 0xA003: 16})
    exif.get_ifd(0x8825).update({0: b"\x02\x03\x00\x00", 1: "N"})
    return exif.tobytes()[6:]


def _float_tiff(px: np.ndarray) -> bytes:
    """A one-strip little-endian RGB float32 TIFF (the layout only our reader handles)."""
    h, w, c = px.shape
    data = px.astype("<f4").tobytes()
    entries = [(256, 4, w), (257, 4, h), (258, 3, 0), (259, 3, 1), (262, 3, 2), (273, 4, 0), (277, 3, c),
               (278, 4, h), (279, 4, len(data)), (339, 3, 0)]
    arrays_at = 8 + 2 + 12 * len(entries) + 4
    out = b"II*\x00" + struct.pack("<IH", 8, len(entries))
    for tag, typ, value in entries:
        if tag in (258, 339):
            out += struct.pack("<HHII", tag, typ, c, arrays_at + (0 if tag == 258 else 2 * c))
        else:
            if tag == 273:
                value = arrays_at + 4 * c
            out += struct.pack("<HHI", tag, typ, 1) + (struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value))
    return out + bytes(4) + struct.pack(f"<{c}H", *[32] * c) + struct.pack(f"<{c}H", *[3] * c) + data


def seeds() -> list[bytes]:
    """Small valid inputs of every kind, each prefixed with its selector byte."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8))
    exif = b"Exif\x00\x00" + _exif_block(6)
    frames = [Image.new("RGB", (8, 6), c) for c in ((255, 0, 0), (0, 255, 0))]
    pal = Image.fromarray((np.arange(48).reshape(6, 8) % 3).astype(np.uint8), "P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    files = {
        0: [_encoded(rgb, "JPEG", exif=exif, quality=80), _encoded(rgb.convert("CMYK"), "JPEG"),
            _encoded(rgb.convert("L"), "JPEG", progressive=True)],
        1: [_encoded(rgb, "PNG", exif=exif), _encoded(pal, "PNG", transparency=1),
            _encoded(Image.fromarray(rng.integers(0, 65536, (6, 8), dtype=np.uint16)), "PNG"),
            _encoded(frames[0], "PNG", save_all=True, append_images=frames[1:])],
        2: [_encoded(rgb, "WEBP", exif=exif, quality=70), _encoded(rgb.convert("RGBA"), "WEBP", lossless=True),
            _encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)],
        3: [_encoded(rgb, "TIFF", exif=Image.Exif()), _encoded(rgb, "TIFF", compression="tiff_deflate"),
            _encoded(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
            _float_tiff(rng.random((6, 8, 3)).astype(np.float32) * 1.2)],
    }
    out = [bytes([k]) + data for k, items in files.items() for data in items]
    out += [bytes([4]) + _exif_block(o) for o in (1, 6, 8)] + [bytes([5]) + _exif_block(3), bytes([6]) + _exif_block(6)]
    return out


class Target:
    """One fuzz input -> build the file, read it, write it, read the output back; PhotoError is fine."""

    def __init__(self, workdir: Path) -> None:
        from deblurcli import photo
        from deblurcli.errors import PhotoError
        from deblurcli.photo import decode, exif

        self.photo, self.exif, self.photo_error = photo, exif, PhotoError
        decode.MAX_PIXELS = 4_000_000  # bounded work per input, whatever a forged header claims
        self.workdir = workdir
        rgb = Image.fromarray(np.random.default_rng(1).integers(0, 256, (12, 16, 3), dtype=np.uint8))
        jpeg = _encoded(rgb, "JPEG", quality=75)
        self.jpeg_body = jpeg[2:]  # after SOI: APP1 goes in front of it
        png = _encoded(rgb, "PNG")
        ihdr_end = 8 + 25
        self.png_head, self.png_tail = png[:ihdr_end], png[ihdr_end:]
        self.runs = 0

    def build(self, selector: int, payload: bytes) -> tuple[str, bytes] | None:
        kind = selector % KINDS
        if kind < 4:
            return SUFFIXES[kind], payload
        if kind == 4:
            app1 = b"Exif\x00\x00" + payload[:65525]
            return ".jpg", b"\xff\xd8\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + self.jpeg_body
        if kind == 5:
            return ".png", self.png_head + _png_chunk(b"eXIf", payload) + self.png_tail
        return None

    def __call__(self, data: bytes) -> None:
        self.runs += 1
        if not data:
            return
        selector, payload = data[0], data[1:]
        built = self.build(selector, payload)
        if built is None:
            self.exif_editor(payload)
            return
        suffix, content = built
        src = self.workdir / f"in{suffix}"
        src.write_bytes(content)
        try:
            with warnings.catch_warnings(record=True) as leaked:  # they would reach the user's terminal raw
                warnings.simplefilter("always")
                photo = self.photo.read_photo(src)
            assert not leaked, f"read_photo leaked a warning: {leaked[0].message}"
        except self.photo_error as e:
            assert "\n" not in str(e), "multi-line error"
            return
        rgb = photo.rgb
        assert rgb.dtype == np.float32 and rgb.ndim == 3 and rgb.shape[2] == 3, rgb.shape
        assert np.isfinite(rgb).all() and rgb.min() >= 0.0 and rgb.max() <= 1.0
        out = self.workdir / f"out{OUT_SUFFIXES[(selector >> 3) % len(OUT_SUFFIXES)]}"
        try:
            with warnings.catch_warnings(record=True) as leaked:
                warnings.simplefilter("always")
                self.photo.write_photo(out, 1.0 - rgb, photo, overwrite=True)
            assert not leaked, f"write_photo leaked a warning: {leaked[0].message}"
        except self.photo_error as e:
            assert "\n" not in str(e), "multi-line error"
            return
        again = self.photo.read_photo(out)  # our own output must always read back
        assert again.size == photo.size, (again.size, photo.size)

    def exif_editor(self, payload: bytes) -> None:
        warns: list[str] = []
        raw, parsed, _ = self.exif.source_exif(payload, warns)
        if raw is None or not parsed:
            return
        edited = self.exif.ExifBlock(raw).edited(123, 45, "deblurcli fuzz")
        assert self.exif.ExifBlock(edited).orientation == 1  # the pixels were rotated: never rotate again


def crash_key(exc: BaseException) -> str:
    """Where a crash happened (exception type + innermost deblurcli frame), to count distinct ones."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "deblurcli" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{type(exc).__name__} at {where}"


def mutate(data: bytes, rnd: random.Random, pool: list[bytes]) -> bytes:
    """A few random edits: byte flips, interesting values, cuts, duplications, splices from other seeds."""
    buf = bytearray(data)
    for _ in range(rnd.randint(1, 6)):
        if not buf:
            buf.extend(rnd.randbytes(8))
        op = rnd.randrange(7)
        at = rnd.randrange(len(buf))
        if op == 0:
            buf[at] ^= 1 << rnd.randrange(8)
        elif op == 1:
            buf[at] = rnd.choice((0, 1, 0x7F, 0x80, 0xFF))
        elif op == 2:
            width = rnd.choice((2, 4))
            value = rnd.choice((0, 1, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, len(buf), len(buf) + 1, 65536))
            buf[at:at + width] = value.to_bytes(8, rnd.choice(("little", "big")))[:width]
        elif op == 3:
            del buf[at:at + rnd.randint(1, 64)]
        elif op == 4:
            buf[at:at] = buf[at:at + rnd.randint(1, 64)]
        elif op == 5:
            del buf[rnd.randrange(1, len(buf) + 1):]
        else:
            other = rnd.choice(pool) or b"\x00"
            start = rnd.randrange(len(other))
            buf[at:at + rnd.randint(1, 64)] = other[start:start + rnd.randint(1, 64)]
    if buf and rnd.random() < 0.1:
        buf[0] = rnd.randrange(256)  # same bytes, another kind or output format
    return bytes(buf)


def run_mutate(target: Target, seconds: float, seed: int, crashes: Path) -> dict[str, int]:
    rnd = random.Random(seed)
    pool = seeds()
    found: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        data = mutate(rnd.choice(pool), rnd, pool)
        try:
            target(data)
        except Exception as exc:  # noqa: BLE001 - every escape is a finding
            key = crash_key(exc)
            if key not in found:
                name = crashes / f"crash-{hashlib.sha1(data).hexdigest()[:16]}"
                name.write_bytes(data)
                print(f"CRASH {key}: {type(exc).__name__}: {str(exc)[:200]} -> {name}", file=sys.stderr)
            found[key] = found.get(key, 0) + 1
        else:
            if data and rnd.random() < 0.02 and len(pool) < 2000:
                pool.append(data)  # keep some survivors: deeper mutations of inputs that got somewhere
    return found


def run_atheris(workdir: Path, seconds: float, crashes: Path, corpus: Path) -> None:
    import atheris

    with atheris.instrument_imports():
        import PIL.JpegImagePlugin
        import PIL.PngImagePlugin
        import PIL.TiffImagePlugin
        import PIL.WebPImagePlugin  # noqa: F401

        import deblurcli.photo  # noqa: F401
    target = Target(workdir)
    corpus.mkdir(parents=True, exist_ok=True)
    for data in seeds():
        (corpus / hashlib.sha1(data).hexdigest()).write_bytes(data)
    args = [sys.argv[0], str(corpus), f"-max_total_time={int(seconds)}", "-timeout=30", "-rss_limit_mb=3072",
            f"-artifact_prefix={crashes}/", "-print_final_stats=1"]
    atheris.Setup(args, target)
    atheris.Fuzz()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz")
    parser.add_argument("--engine", choices=("auto", "atheris", "mutate"), default="auto")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the mutate engine")
    parser.add_argument("--crashes", type=Path, default=Path("fuzz-crashes"), help="where crashing inputs go")
    parser.add_argument("--corpus", type=Path, default=None, help="atheris corpus folder (default: a temp folder)")
    parser.add_argument("--replay", type=Path, nargs="*", default=(), help="run these saved inputs once and exit")
    args = parser.parse_args()
    args.crashes.mkdir(parents=True, exist_ok=True)
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
        except ImportError:
            engine = "mutate"
        else:
            engine = "atheris"
    with tempfile.TemporaryDirectory(prefix="deblurcli-fuzz-") as tmp:
        workdir = Path(tmp)
        if args.replay:
            target = Target(workdir)
            for path in args.replay:
                try:
                    target(path.read_bytes())
                    print(f"{path}: ok")
                except Exception as exc:  # noqa: BLE001 - show what a saved crash does now
                    print(f"{path}: {crash_key(exc)}: {exc}")
            return
        if engine == "atheris":
            run_atheris(workdir, args.seconds, args.crashes.resolve(), args.corpus or workdir / "corpus")
            return
        target = Target(workdir)
        start = time.monotonic()
        found = run_mutate(target, args.seconds, args.seed, args.crashes)
        took = time.monotonic() - start
    print(f"engine mutate, seed {args.seed}: {target.runs} inputs in {took:.0f} s ({target.runs / took:.0f}/s), "
          f"{len(found)} distinct crashes ({sum(found.values())} crashing inputs)")
    for key, count in sorted(found.items()):
        print(f"  {count:5d}  {key}")


if __name__ == "__main__":
    main()
