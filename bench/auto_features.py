"""What auto sees on each photo, next to what each method would have gained: the data to calibrate it on.

    python bench/auto_features.py --families heldout,synthetic,dynamic --threads 1 --out auto_features.jsonl

For every pair of the seeded validation families (``scripts/make_valsets.py``; ``.data/val/<family>``), one
JSON line: the kernel estimate's scores (confidence, agreement, support share, re-blur and stop-band
ratios, noise), the share of the photo the deconvolution leaves unexplained (``decide`` step 5), how much
the deconvolution raised the photo's measured noise, what auto chose, and the PSNR gain over the blurry
input of the deconvolution alone, the deconvolution with the refiner, and the network. A summary per family
follows on stderr: mean gains, and what a rule that always picked the better of kernel+refiner and network
(the oracle) would have gained.

The families differ in the way that matters for auto: ``heldout`` blurs in sRGB with Gaussian noise (the
kernel path's home ground), ``synthetic`` as the training synthesis does (linear light, camera noise, JPEG,
spatially varying blur), ``dynamic`` adds a moving object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="heldout,synthetic,dynamic")
    parser.add_argument("--val", type=Path, default=Path(".data/val"))
    parser.add_argument("--limit", type=int, default=None, help="at most this many pairs per family")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--blur-domain", default="srgb", choices=("srgb", "linear"),
                        help="where the kernel path estimates and deconvolves, for every photo")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON lines here")
    args = parser.parse_args()

    import torch

    from deblurcli.decide import decide
    from deblurcli.kernel.confidence import noise_sigma
    from deblurcli.metrics import psnr
    from deblurcli.pairs import find_pairs, load_pair
    from deblurcli.kernel.noise import estimate_noise
    from deblurcli.session import Session, luma

    torch.set_num_threads(args.threads)
    auto = Session("auto", device="cpu", blur_domain=args.blur_domain)
    sink = args.out.open("w") if args.out else None
    for family in args.families.split(","):
        folder = args.val / family
        if not folder.is_dir():
            sys.exit(f"no {folder}: make it with scripts/make_valsets.py --family {family}")
        pairs = find_pairs(folder).pairs[: args.limit]
        rows = []
        for pair in pairs:
            blurry, sharp = load_pair(pair)
            before = psnr(blurry, sharp)
            est = auto.estimate(blurry)
            choice = decide(est, method="auto", has_network=True)
            # The kernel path takes the encoded photo's noise (a linear-light estimate measured the decoded one).
            noise = float(est.details.get("noise", 0.0))
            if args.blur_domain == "linear":
                noise = estimate_noise(torch.from_numpy(np.ascontiguousarray(luma(blurry)))[None])
            row = {"family": family, "photo": pair.blur.stem, "choice": choice.method, "confidence": est.confidence,
                   "size": est.size, **{k: float(v) for k, v in est.details.items()}}
            net = auto.run_network(blurry)
            row["network"] = psnr(net, sharp) - before
            if est.size > 1:
                deconvolved = auto.run_kernel(blurry, est.kernel, noise)
                row["unexplained"] = auto.unexplained(blurry, deconvolved, est.kernel, noise)
                grey = torch.from_numpy(np.ascontiguousarray(luma(deconvolved)))
                row["noise_gain"] = noise_sigma(grey) / max(noise, 1e-4)
                row["kernel"] = psnr(deconvolved, sharp) - before
                row["refined"] = psnr(auto.refine(deconvolved), sharp) - before
            rows.append(row)
            line = json.dumps(row)
            print(line, flush=True)
            if sink:
                sink.write(line + "\n")
                sink.flush()
        net = np.mean([r["network"] for r in rows])
        ref = np.mean([r.get("refined", 0.0) for r in rows])
        oracle = np.mean([max(r["network"], r.get("refined", 0.0)) for r in rows])
        print(f"{family}: {len(rows)} pairs, network {net:+.2f} dB, kernel+refiner {ref:+.2f} dB, oracle {oracle:+.2f} dB",
              file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
