"""The stop-band test with known kernels: does it tell the true blur from a spurious kernel, at any noise level?

    python bench/stopband.py --photos 8

``bench/kernel_estimate.py``'s training photos are blurred by held-out shakes (``valsets.heldout_kernels``,
13-27 px) and degraded four ways: 1 % and 0.2 % Gaussian noise, and each saved as a JPEG (quality 75 after
1 %, 90 after 0.2 %). The estimator's window (``region.select_windows``) is scored by
``confidence.stopband_ratios`` under

* the true kernel, and another photo's true kernel ("wrong"), on the blurred photo;
* 7, 11 and 15 px straight streaks and another photo's kernel ("other"), on the sharp photo degraded the same
  way (what a spurious estimate on a sharp photo looks like).

Both ratios are printed per case as min-max over the photos and per photo: against the noise alone, and
against the blur model (the attenuated photo predicted from the pass band, plus noise). A test that works
keeps the true kernel low and the spurious ones high at every noise level; the thresholds it is judged by
are ``confidence.NOISE_STOPBAND`` and ``MODEL_STOPBAND``. Needs ../shared/data/train (absent: exit 0).
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

DEGRADATIONS = {"1%": (0.01, None), "0.2%": (0.002, None), "1% + JPEG 75": (0.01, 75), "0.2% + JPEG 90": (0.002, 90)}


def streak(length: int, angle: float):  # type: ignore[no-untyped-def]
    """A straight ``length`` px line at ``angle`` (rad), normalised."""
    import torch

    k = torch.zeros(length, length)
    c = length // 2
    for t in np.linspace(-c, c, 4 * length):
        k[int(round(c + t * math.sin(angle))), int(round(c + t * math.cos(angle)))] = 1.0
    return k / k.sum()


def degrade(rgb: np.ndarray, noise: float, quality: int | None, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    from deblurcli.metrics import quantize8

    out = quantize8(rgb + rng.normal(0.0, noise, rgb.shape).astype(np.float32))
    if quality is None:
        return out
    buffer = io.BytesIO()
    Image.fromarray(np.rint(out * 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from kernel_estimate import TRAIN, grey_of, photos, true_kernels

    from deblurcli.blur import apply_kernels
    from deblurcli.kernel.confidence import MODEL_STOPBAND, NOISE_STOPBAND, noise_sigma, stopband_ratios
    from deblurcli.kernel.region import select_windows

    if not TRAIN.is_dir():
        print(f"skipped: {TRAIN} is absent (the shared data is not here)")
        return
    torch.set_num_threads(args.threads)
    pics = photos(args.photos)
    kernels = true_kernels("heldout", len(pics), 0)
    rng = np.random.default_rng(2)
    rows: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for i, (_, rgb) in enumerate(pics):
        true, wrong = kernels[i], kernels[(i + 1) % len(pics)]
        r = true.shape[-1] // 2
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
        blurred = apply_kernels(x, true[None, None].float())[0].permute(1, 2, 0).numpy()[r:-r, r:-r]
        for label, (noise, quality) in DEGRADATIONS.items():
            for kind, image in (("blurred", blurred), ("sharp", rgb)):
                grey = grey_of(degrade(image, noise, quality, rng))
                sigma = noise_sigma(grey[:1024, :1024])
                (y0, x0, h, w), = select_windows(grey, 384, 1, sigma, 35)[0]
                window = grey[y0 : y0 + h, x0 : x0 + w]
                cases = ({"true": true, "wrong": wrong} if kind == "blurred" else
                         {"7 px": streak(7, 0.3), "11 px": streak(11, 1.2), "15 px": streak(15, 2.0), "other": true})
                for name, kernel in cases.items():
                    rows.setdefault((kind, name, label), []).append(stopband_ratios(window, kernel, sigma))
    print(f"# {len(pics)} photos; thresholds (start, veto): noise {NOISE_STOPBAND}, blur model {MODEL_STOPBAND}")
    print("| photo | kernel | degradation | against the noise | against the blur model | per photo (blur model) |")
    print("|---|---|---|---|---|---|")
    for (kind, name, label), values in rows.items():
        a = np.array(values)
        per = " ".join(f"{v:.2f}" for v in a[:, 1])
        print(f"| {kind} | {name} | {label} | {a[:, 0].min():.1f}-{a[:, 0].max():.1f} | "
              f"{a[:, 1].min():.2f}-{a[:, 1].max():.2f} | {per} |")


if __name__ == "__main__":
    main()
