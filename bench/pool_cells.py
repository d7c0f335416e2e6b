"""NAFNet's local channel-attention pool on cells against the same pool at every pixel: quality and speed.

    python bench/pool_cells.py --threads 1                 # both: validation families, then one 1024² tile
    python bench/pool_cells.py --skip-speed --weights runs/x/best.safetensors

Quality: the shipped (or ``--weights``) nafnet-s on every pair of ``.data/val/{synthetic,heldout,dynamic}``,
whole photos through a fp32 ``Session``, once with the pool on cells (the model as it ships) and once with
every ``ChannelPool.step`` set to 1 (a box mean at every pixel, the pool before the change); mean gain over
the blurry input per family, and how far the two outputs are apart. Speed: one 1024² tile, torch fp32,
torch bf16 (the cast copy the engine runs) and OpenVINO bf16 (each variant exported on its own) where it is
installed, interleaved rounds, median CPU time (the figure to read on a loaded machine).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf_report import synthetic_photo  # noqa: E402

FAMILIES = ("synthetic", "heldout", "dynamic")


def per_pixel(model: object) -> object:
    """A deep copy of ``model`` whose SCA pools take the box mean at every pixel (``step`` 1)."""
    from deblurcli.models.nafnet.model import ChannelPool

    twin = copy.deepcopy(model)
    for m in twin.modules():  # type: ignore[attr-defined]
        if isinstance(m, ChannelPool):
            m.step = 1
    return twin


def quality(model: object, root: Path) -> None:
    from deblurcli.engine import psnr
    from deblurcli.pairs import find_pairs
    from deblurcli.photo import read_photo
    from deblurcli.session import Session

    import torch

    variants = {"cells": model, "per pixel": per_pixel(model)}
    sessions = {name: Session("network", module=m, device="cpu", precision="fp32") for name, m in variants.items()}
    print("| family | pairs | input dB | per pixel: gain dB | cells: gain dB | cells - per pixel dB | outputs apart (min / median dB) |")
    print("|---|---|---|---|---|---|---|")
    for family in FAMILIES:
        pairs = find_pairs(root / family).pairs
        inp, gains, apart = [], {n: [] for n in variants}, []
        for pair in pairs:
            blurry = read_photo(pair.blur).rgb
            sharp = torch.from_numpy(read_photo(pair.sharp).rgb)
            outs = {n: s.run_network(blurry) for n, s in sessions.items()}
            base = psnr(torch.from_numpy(blurry), sharp)
            inp.append(base)
            for n, out in outs.items():
                gains[n].append(psnr(torch.from_numpy(out), sharp) - base)
            apart.append(psnr(torch.from_numpy(outs["cells"]), torch.from_numpy(outs["per pixel"])))
        g = {n: float(np.mean(v)) for n, v in gains.items()}
        print(f"| {family} | {len(pairs)} | {np.mean(inp):.2f} | {g['per pixel']:+.3f} | {g['cells']:+.3f} | "
              f"{g['cells'] - g['per pixel']:+.3f} | {min(apart):.1f} / {np.median(apart):.1f} |", flush=True)


def _cpu_seconds(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def speed(model: object, size: int, threads: int, reps: int) -> None:
    import torch

    from deblurcli.backends import openvino
    from deblurcli.engine import bf16_copy, prepare_model

    x = torch.from_numpy(synthetic_photo(size * size / 1e6)).permute(2, 0, 1)[None]
    x = x[:, :, :size, :size].contiguous(memory_format=torch.channels_last)
    runs: dict[str, Callable[[], object]] = {}
    for name, m in {"per pixel": per_pixel(model), "cells": model}.items():
        m = prepare_model(m, torch.device("cpu"))
        runs[f"torch fp32, {name}"] = lambda m=m: m(x)
        low = bf16_copy(m)
        runs[f"torch bf16, {name}"] = lambda low=low: low(x)
        if openvino.installed():
            net = openvino.OpenVINONetwork(m, torch.bfloat16, threads)
            runs[f"openvino bf16, {name}"] = lambda net=net: net(x)
    with torch.inference_mode():
        for fn in runs.values():
            fn()  # warm-up (and OpenVINO's export, compile and check)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(reps):
            for name, fn in runs.items():
                times[name].append(_cpu_seconds(fn))
    med = {name: float(np.median(t)) for name, t in times.items()}
    print(f"\n| {size}² tile, {threads} thread(s), median of {reps} interleaved | CPU ms | cells vs per pixel |")
    print("|---|---|---|")
    for name, t in med.items():
        ratio = med[name.replace("cells", "per pixel")] / t if name.endswith("cells") else 1.0
        print(f"| {name} | {t * 1e3:.0f} | {ratio:.2f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=None, help="a nafnet-s file (default: the shipped weights)")
    parser.add_argument("--val", type=Path, default=Path(".data/val"), help="folder with the validation families")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()

    import torch

    from deblurcli.weights import load_generator

    torch.set_num_threads(args.threads)
    os.environ.setdefault("XDG_CACHE_HOME", tempfile.mkdtemp())  # OpenVINO exports go to a throwaway cache
    model = load_generator("nafnet-s" if args.weights is None else None, args.weights).eval()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}, {args.threads} thread(s)")
    if not args.skip_quality:
        if not all((args.val / f).is_dir() for f in FAMILIES):
            sys.exit(f"no validation families under {args.val} (make them with scripts/make_valsets.py)")
        quality(model, args.val)
    if not args.skip_speed:
        speed(model, args.size, args.threads, args.reps)


if __name__ == "__main__":
    main()
