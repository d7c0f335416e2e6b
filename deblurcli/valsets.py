"""Fixed, seeded validation sets in the layout `deblur eval --pairs DIR` reads: blur/*.png + sharp/*.png.

Four families, each answering a different question about a model:

- ``synthetic``: our own training blur (``blur.synthesize`` with the default ``BlurConfig``) at a seeded
  draw. The floor: a model must clearly beat the blurry input here, since it trained on this family.
- ``heldout``: a blur family we never train on, mirroring the blind-deblurring protocol (Levin et al.
  2009; Sun et al. 2013): uniform blur by camera-shake-like kernels of 13-27 px, applied in sRGB, 1%
  Gaussian noise, no JPEG. The kernels come from a different generator with different statistics
  (``heldout_kernels``: smooth spline curves through a momentum random walk, with a varying speed so the
  intensity varies along the streak, and a slight optical softening), so a model that merely learned the
  training generator's quirks is caught. It is the proxy for "blur nobody here synthesised".
- ``sharp``: the photos unblurred (``blur == sharp``): the do-no-harm check.
- ``dynamic``: a dynamic scene per photo: a moving object (``blur.synthesize_pair``, the photo's own mirror
  image as its texture) with its own shake over a background that is blurred differently or not at all.
  No single kernel explains such a photo, so it is where the network path is needed and where ``auto``
  must not do worse than the network; the sharp side is the photo with the object pasted in.

Photos are used whole when they fit 768x512 (either orientation), else centre-cropped to it. Every file is
a deterministic function of the source photos and the seed (same seed, same machine: identical bytes);
each photo draws from its own stream seeded by (seed, name), so adding a photo does not change the others.
A ``manifest.json`` (ignored by pair discovery) records what was drawn for each image.
"""

from __future__ import annotations

import io
import json
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deblurcli.atomic import atomic_write_bytes
from deblurcli.blur import BlurConfig, apply_kernels, synthesize, synthesize_pair
from deblurcli.errors import PairsError
from deblurcli.photo import read_photo

__all__ = ["FAMILIES", "MAX_SIZE", "build_valset", "fit_crop", "heldout_kernels"]

FAMILIES = ("synthetic", "heldout", "sharp", "dynamic")
#: Largest (long side, short side) kept; bigger photos are centre-cropped to it.
MAX_SIZE = (768, 512)
#: Held-out protocol: kernel sizes (px, inclusive), sRGB Gaussian noise std.
HELDOUT_SIZES = (13, 27)
HELDOUT_NOISE = 0.01
#: The synthetic family: the training blur as it was when the set was fixed, minus "leave it sharp" (the
#: sharp family covers that). Fields whose training defaults changed since are pinned here, so the set and
#: the figures measured on it stay comparable from run to run.
SYNTHETIC_CONFIG = BlurConfig(sharp_prob=0.0, saturation_prob=0.5, saturation_per_channel=False)
#: The dynamic family: an object on every photo, training synthesis otherwise, nothing left sharp.
DYNAMIC_CONFIG = BlurConfig(sharp_prob=0.0, dynamic_prob=1.0)
_SOURCE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


def _png_bytes(u8: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(u8, mode="RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _to_u8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def fit_crop(rgb: np.ndarray, max_size: tuple[int, int] = MAX_SIZE) -> np.ndarray:
    """Centre crop to at most ``max_size`` (long, short) in the photo's own orientation; smaller kept."""
    h, w = rgb.shape[:2]
    long_side, short_side = max_size
    max_h, max_w = (short_side, long_side) if w >= h else (long_side, short_side)
    top, left = max(0, (h - max_h) // 2), max(0, (w - max_w) // 2)
    return rgb[top : top + min(h, max_h), left : left + min(w, max_w)]


def heldout_kernels(rng: np.random.Generator, sizes: list[int], canvas: int = 33) -> np.ndarray:
    """Camera-shake-like kernels ``(n, canvas, canvas)`` float32 summing to 1, bounding box side = size.

    Deliberately unlike the training generator (constant-speed Boracchi-Foi paths): 5-8 control points
    from a random walk with momentum, joined by a Catmull-Rom spline; the camera's speed along the curve
    varies smoothly by up to ~3x, so slow parts are brighter, as in recorded kernels; points are
    accumulated with bilinear weights, centred on the centroid, then softened by a Gaussian of 0.4-0.7 px
    (real kernels are never one pixel thin). Lopsided curves that would not fit are shrunk.
    """
    out = np.zeros((len(sizes), canvas, canvas), dtype=np.float64)
    c = (canvas - 1) / 2
    grid = np.arange(canvas)
    for i, size in enumerate(sizes):  # one kernel per validation photo: a handful, not a hot path
        m = int(rng.integers(5, 9))
        turn = rng.uniform(0.4, 1.4)
        angle = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, turn, m - 1))
        steps = np.exp(rng.normal(0, 0.35, m - 1))[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
        ctrl = np.vstack([np.zeros(2), np.cumsum(steps, 0)])
        ctrl = np.vstack([2 * ctrl[0] - ctrl[1], ctrl, 2 * ctrl[-1] - ctrl[-2]])  # end tangents
        t = np.linspace(0, 1, 64, endpoint=False)[:, None]
        segs = []
        for p0, p1, p2, p3 in zip(ctrl[:-3], ctrl[1:-2], ctrl[2:-1], ctrl[3:]):
            segs.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                               + (3 * p1 - p0 - 3 * p2 + p3) * t**3))
        curve = np.vstack(segs + [ctrl[-2][None]])
        # Time spent per point ~ 1 / speed: resample by cumulative arc length / speed profile.
        seg_len = np.linalg.norm(np.diff(curve, axis=0), axis=1)
        speed = np.exp(np.convolve(rng.normal(0, 1.0, len(seg_len)), np.ones(48) / np.sqrt(48), "same") * 0.5)
        time = np.concatenate([[0], np.cumsum(seg_len / speed)])
        pts = np.stack([np.interp(np.linspace(0, time[-1], 2048), time, curve[:, k]) for k in range(2)], 1)
        pts -= pts.mean(0)
        pts *= (size - 1) / max(np.ptp(pts, 0).max(), 1e-9)
        pts *= min(1.0, (c - 2) / np.abs(pts).max())
        wx = np.clip(1 - np.abs(pts[:, 0, None] + c - grid), 0, None)
        wy = np.clip(1 - np.abs(pts[:, 1, None] + c - grid), 0, None)
        k = wy.T @ wx
        sigma = rng.uniform(0.4, 0.7)
        g = np.exp(-0.5 * ((np.arange(7) - 3) / sigma) ** 2)
        g /= g.sum()
        k = np.apply_along_axis(np.convolve, 0, k, g, "same")
        k = np.apply_along_axis(np.convolve, 1, k, g, "same")
        out[i] = k / k.sum()
    return out.astype(np.float32)


def _sources(src_dir: Path) -> list[Path]:
    if not src_dir.is_dir():
        raise PairsError(f"validation photo folder {src_dir} does not exist")
    files = sorted(p for p in src_dir.iterdir() if p.is_file() and p.suffix.lower() in _SOURCE_SUFFIXES)
    if not files:
        raise PairsError(f"no photos (.jpg/.png/.tif/.bmp/.webp) in {src_dir}")
    stems = [p.stem for p in files]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise PairsError(f"{src_dir}: several photos share the name {dupes[0]!r}; rename one")
    return files


def _prepare_out(out_dir: Path) -> None:
    """Create ``out_dir`` or clear a previous build of ours; never clobber an unrelated folder."""
    if out_dir.exists() and any(p.name not in {"blur", "sharp", "manifest.json"} for p in out_dir.iterdir()):
        raise PairsError(f"{out_dir} exists and is not a validation set built here; choose an empty folder")
    for sub in ("blur", "sharp"):
        folder = out_dir / sub
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):  # stale pairs from an earlier build with other photos
            old.unlink()


def _stream_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % (2**63)


def build_valset(src_dir: Path, out_dir: Path, *, family: str, seed: int) -> list[Path]:
    """Write the ``family`` validation set for the photos directly in ``src_dir``; return the blurry paths.

    Raises ``PairsError`` for a missing/empty source folder, clashing names or an unrelated non-empty
    ``out_dir``, and ``PhotoError`` for an unreadable photo.
    """
    if family not in FAMILIES:
        raise PairsError(f"unknown validation family {family!r}; choose one of {', '.join(FAMILIES)}")
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    sources = _sources(src_dir)
    _prepare_out(out_dir)
    written: list[Path] = []
    records: dict[str, dict[str, object]] = {}
    for path in sources:
        name = path.stem
        # The CLI's reader (orientation, profiles, bit depth); 8-bit sources keep their exact values.
        sharp = _to_u8(fit_crop(np.asarray(read_photo(path).rgb, dtype=np.float32)))
        record: dict[str, object] = {"source": path.name, "size": [sharp.shape[1], sharp.shape[0]]}
        stream = _stream_seed(seed, name)
        if family == "sharp":
            blurry = sharp
        elif family == "synthetic":
            tensor = torch.from_numpy(sharp.astype(np.float32) / 255).permute(2, 0, 1)[None]
            out = synthesize(tensor, SYNTHETIC_CONFIG, torch.Generator().manual_seed(stream))
            blurry = _to_u8(out[0].permute(1, 2, 0).numpy())
        elif family == "dynamic":
            tensor = torch.from_numpy(sharp.astype(np.float32) / 255).permute(2, 0, 1)[None]
            target, out = synthesize_pair(tensor, DYNAMIC_CONFIG, torch.Generator().manual_seed(stream))
            sharp = _to_u8(target[0].permute(1, 2, 0).numpy())
            blurry = _to_u8(out[0].permute(1, 2, 0).numpy())
        else:
            rng = np.random.default_rng(stream)
            size = int(rng.integers(HELDOUT_SIZES[0], HELDOUT_SIZES[1] + 1))
            kernel = torch.from_numpy(heldout_kernels(rng, [size]))
            tensor = torch.from_numpy(sharp.astype(np.float32) / 255).permute(2, 0, 1)[None]
            out = apply_kernels(tensor, kernel[:, None])[0].permute(1, 2, 0).numpy()
            noise = rng.normal(0.0, HELDOUT_NOISE, out.shape).astype(np.float32)
            blurry = _to_u8(out + noise)
            record.update(kernel_size=size, noise_std=HELDOUT_NOISE)
        atomic_write_bytes(out_dir / "sharp" / f"{name}.png", _png_bytes(sharp))
        atomic_write_bytes(out_dir / "blur" / f"{name}.png", _png_bytes(blurry))
        written.append(out_dir / "blur" / f"{name}.png")
        records[name] = record
    manifest = {"family": family, "seed": seed, "source": src_dir.name, "images": records}
    atomic_write_bytes(out_dir / "manifest.json", (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    return written
