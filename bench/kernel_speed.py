"""What the kernel path costs on a big photo: estimation and deconvolution timed apart, as auto runs them.

    python bench/kernel_speed.py --mp 12 --threads 2

A sharp LIVE1 photo mirrored out to ``--mp`` megapixels (the synthetic test pattern of
``perf_report.synthetic_photo`` when ../shared is absent; its pixel-noise texture misleads the estimator) is blurred
by a 13-15 px camera-shake kernel with 1 % noise; then ``Session(method="kernel")`` estimates its kernel
(``Session.estimate``: two windows of at most 384² px, so the cost barely grows with the photo) and
deconvolves the whole photo through the engine's tiles (``Session.run_kernel``); what ``--blur-domain auto``
adds on a blurred photo (a second estimate in linear light on the same windows, and ``Session.domain_of``) is
timed too. Wall and CPU seconds of each are printed: on a shared machine compare CPU seconds, on a quiet one
wall time is what a user waits.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


LIVE1 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "val" / "live1"


def test_photo(megapixels: float, fallback):  # type: ignore[no-untyped-def]
    """A natural photo of about ``megapixels``: the first LIVE1 photo, mirror-tiled (4:3)."""
    import numpy as np

    from deblurcli.photo import read_photo

    files = sorted(LIVE1.glob("*")) if LIVE1.is_dir() else []
    if not files:
        return fallback(megapixels)
    rgb = read_photo(files[0]).rgb
    width = round((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = round(width * 3 / 4)
    pad = ((0, max(0, height - rgb.shape[0])), (0, max(0, width - rgb.shape[1])), (0, 0))
    return np.ascontiguousarray(np.pad(rgb, pad, mode="symmetric")[:height, :width], dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mp", type=float, default=12.0, help="megapixels of the test photo (default 12)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import torch

    from deblurcli.blur import BlurConfig, apply_kernels, random_kernels
    from deblurcli.devices import keep_host_memory
    from deblurcli.session import Session
    from perf_report import synthetic_photo

    torch.set_num_threads(args.threads)
    keep_host_memory()  # as the CLI does
    sharp = torch.from_numpy(test_photo(args.mp, synthetic_photo)).permute(2, 0, 1)[None]
    shake = BlurConfig(kernel_size=19, min_extent=13.0, max_extent=15.0)
    kernel = random_kernels(1, shake, torch.Generator().manual_seed(3))
    blurry = apply_kernels(sharp, kernel)[0]
    blurry += 0.01 * torch.randn(blurry.shape, generator=torch.Generator().manual_seed(4))
    rgb = blurry.clamp(0, 1).permute(1, 2, 0).contiguous().numpy()
    session = Session("kernel", device="cpu", blur_domain="auto")

    def timed(fn):  # type: ignore[no-untyped-def]
        start, cpu = time.perf_counter(), time.process_time()
        out = fn()
        return out, time.perf_counter() - start, time.process_time() - cpu

    estimate, est_wall, est_cpu = timed(lambda: session.estimate(rgb))
    noise = estimate.details.get("noise")
    linear, lin_wall, lin_cpu = timed(lambda: session.estimate(rgb, domain="linear", like=estimate))
    (domain, _), dom_wall, dom_cpu = timed(lambda: session.domain_of(rgb, estimate.region, linear.kernel.cpu(), noise))
    out, dec_wall, dec_cpu = timed(lambda: session.run_kernel(rgb, estimate.kernel.cpu(), noise))
    h, w, _ = rgb.shape
    mp = h * w / 1e6
    assert np.isfinite(out).all()
    print(f"{w}x{h} ({mp:.1f} MP), {args.threads} thread(s), torch {torch.__version__}: kernel {estimate.size} px, "
          f"confidence {estimate.confidence:.2f}")
    print(f"estimate     {est_wall:6.1f} s wall, {est_cpu:6.1f} CPU s")
    print(f"+ in linear light and the domain test (--blur-domain auto): {lin_wall:6.1f} + {dom_wall:.1f} s wall, "
          f"{lin_cpu:6.1f} + {dom_cpu:.1f} CPU s (chose {domain})")
    print(f"deconvolve   {dec_wall:6.1f} s wall, {dec_cpu:6.1f} CPU s  ({dec_wall / mp:.2f} s/MP)")


if __name__ == "__main__":
    main()
