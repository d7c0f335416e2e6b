"""Inference speed and memory of the default command and model, tiled, on a 12 MP photo (and a 24 MP memory check).

Prints:
  * end to end: ``deblur photo.jpg -o out.jpg`` as a fresh process (interpreter start, imports, model load,
    JPEG decode/encode and the tiled run all included), in megapixels per second, and that process's peak
    resident memory (``wait4``'s ru_maxrss of the child alone), with the method ``auto`` chose: on the
    sharp test photo (auto leaves it unchanged, so this times the estimate), on the same photo shaken by a
    21 px hand-shake kernel with 1 % noise (the default command on a blurry photo), and ``--method
    network`` on the shaken photo (the network path whatever auto would choose);
  * model time alone: ``engine.deblur_array`` on the decoded photo, in this process, after a warm-up;
  * a 24 MP end-to-end run (``--method network``) whose peak resident memory must stay under 3 GiB (issue 3's
    target);
  * the same on CUDA when a GPU is present (model time and peak GPU memory).

The default model's bundled weights may not exist yet (not trained): the benchmark then builds the same
architecture with random weights, says so, and passes it to the CLI with ``--weights`` -- speed and memory
depend on the architecture, not on the weight values. Run from the repository root:

    python bench/infer_speed.py              # about 5-10 minutes on a 2-core CPU
    python bench/infer_speed.py --threads 1  # on a machine busy with other work (OpenMP threads that
                                             # wait for a busy core make 2 threads slower than 1)
    python bench/infer_speed.py --mp 2 --big-mp 0   # a quick smoke run
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling bench scripts

if TYPE_CHECKING:
    from torch import nn

GIB = 1 << 30
RSS_LIMIT = 3 * GIB


def make_photo(path: Path, megapixels: float, seed: int = 0, shaken: bool = False) -> tuple[int, int]:
    """A 4:3 JPEG of ``perf_report.synthetic_photo`` (compresses and decodes like a real photo), optionally
    blurred by a 21 px kernel of ``bench/shake_kernels.py`` (``blur.apply_kernels``) plus 1 % noise."""
    from perf_report import synthetic_photo

    rgb = synthetic_photo(megapixels, seed)
    if shaken:
        import torch

        from deblurcli.blur import apply_kernels
        from shake_kernels import shake_kernel

        kernel = torch.from_numpy(shake_kernel(np.random.default_rng(seed), 21).astype(np.float32))[None, None]
        image = torch.from_numpy(rgb).permute(2, 0, 1)[None]
        blurred = apply_kernels(image, kernel, method="fft")[0].permute(1, 2, 0).numpy()
        rgb = blurred + 0.01 * np.random.default_rng(seed + 1).standard_normal(blurred.shape).astype(np.float32)
    Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)).save(path, quality=92)
    return rgb.shape[1], rgb.shape[0]


def chosen_method(stderr_tail: str) -> str:
    """The method a ``-v`` run reported for its photo (``...: method kernel, kernel 21 px, ...``)."""
    for line in reversed(stderr_tail.splitlines()):
        if ": method " in line:
            return line.split(": method ", 1)[1].split(",")[0]
    return "?"


def run_cli(args: list[str]) -> tuple[float, int, int, str]:
    """(seconds, exit code, peak RSS bytes, stderr tail) of ``python -m deblurcli ARGS`` as a fresh process."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "deblurcli", *args], stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode("utf-8", "replace")[-2000:]
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return seconds, proc.returncode, usage.ru_maxrss * scale, tail


def default_model(tmp: Path) -> tuple[nn.Module, list[str], str]:
    """(model, extra CLI args, description): the bundled default, or its architecture with random weights."""
    import torch

    from deblurcli import weights
    from deblurcli.errors import WeightsError
    from deblurcli.models.registry import build

    name = weights.default_model_name()
    try:
        return weights.load_generator(name), [], f"{name} (bundled weights)"
    except WeightsError as exc:
        entry = weights.get_entry(name)
        torch.manual_seed(0)
        model = build(entry.arch, {**entry.config, **entry.for_inference}).eval()
        path = tmp / "random.safetensors"
        weights.save_generator(model, path, {"name": f"{name}-random"})
        return model, ["--weights", str(path)], f"{name} with RANDOM weights (bundled file absent: {exc})"


def model_only(model: nn.Module, photo: Path, device: str) -> tuple[float, float, str]:
    """(seconds, megapixels, plan) of the tiled engine alone on the decoded photo, after a small warm-up."""
    import torch

    from deblurcli.devices import resolve_device
    from deblurcli.engine import prepare_model
    from deblurcli.session import Session

    target = resolve_device(device)
    session = Session("network", module=prepare_model(model, target), device=str(target))  # as the CLI's --method network
    assert session.plan is not None
    dtype, tile, batch = session.precision, session.plan.tile, session.plan.batch_size
    rgb = np.asarray(Image.open(photo).convert("RGB"), dtype=np.float32) / 255.0
    session.run_network(rgb[:256, :256].copy())  # warm-up: allocator, kernels
    if target.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    session.run_network(rgb)
    if target.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    plan = f"tile {tile}, batch {batch}, {str(dtype).replace('torch.', '')}"
    if target.type == "cuda":
        plan += f", peak GPU memory {torch.cuda.max_memory_allocated() / GIB:.2f} GiB"
    return seconds, rgb.shape[0] * rgb.shape[1] / 1e6, plan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mp", type=float, default=12.0, help="megapixels of the speed photo (default 12)")
    parser.add_argument("--big-mp", type=float, default=24.0, help="megapixels of the memory check (0: skip)")
    parser.add_argument("--threads", type=int, help="CPU threads, here and for the CLI (default: PyTorch's)")
    args = parser.parse_args()

    import torch

    threads = ["--threads", str(args.threads)] if args.threads else []
    if args.threads:
        torch.set_num_threads(args.threads)
    from deblurcli.devices import keep_host_memory

    keep_host_memory()  # the model-alone figure runs with the CLI's allocator settings

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {os.cpu_count()} cores visible")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        model, extra, described = default_model(tmp)
        print(f"model: {described}")
        photo, shaken = tmp / "photo.jpg", tmp / "shaken.jpg"
        w, h = make_photo(photo, args.mp)
        make_photo(shaken, args.mp, shaken=True)
        mp = w * h / 1e6
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        failed = False
        runs = {"sharp photo, default command": (photo, []), "shaken photo, default command": (shaken, []),
                "shaken photo, --method network": (shaken, ["--method", "network"])}
        for device in devices:
            for label, (source, more) in runs.items():
                out = tmp / f"out-{device}-{len(more)}-{source.stem}.jpg"
                seconds, rc, peak, tail = run_cli([str(source), "-o", str(out), "-v", "--device", device, *threads, *extra, *more])
                if rc != 0:
                    print(f"[{device}] {label}: end-to-end run failed (exit {rc}):\n{tail}")
                    failed = True
                    continue
                print(
                    f"[{device}] {label} ({chosen_method(tail)}), end to end, {w}x{h} ({mp:.1f} MP): {seconds:.1f} s = "
                    f"{mp / seconds:.3f} MP/s (process start included), peak RSS {peak / GIB:.2f} GiB", flush=True,
                )
            m_seconds, m_mp, plan = model_only(model, photo, device)
            print(f"[{device}] model alone: {m_seconds:.1f} s = {m_mp / m_seconds:.3f} MP/s ({plan})")
        if args.big_mp > 0:
            big = tmp / "big.jpg"
            bw, bh = make_photo(big, args.big_mp, seed=1)
            # The network path: what auto chooses for a blurry photo it cannot vouch a kernel for, and the one
            # that holds tiles, their outputs and the blended photo at once (a sharp photo is left unchanged).
            seconds, rc, peak, tail = run_cli([str(big), "-o", str(tmp / "big-out.jpg"), "--device", "cpu", "--method", "network", *threads, *extra])
            if rc != 0:
                print(f"[cpu] {args.big_mp:g} MP run failed (exit {rc}):\n{tail}")
                return 1
            verdict = "PASS" if peak < RSS_LIMIT else "FAIL"
            print(
                f"[cpu] {bw}x{bh} ({bw * bh / 1e6:.1f} MP) end to end: {seconds:.1f} s, peak RSS "
                f"{peak / GIB:.2f} GiB -> {verdict} (target < {RSS_LIMIT / GIB:.0f} GiB)"
            )
            failed |= verdict == "FAIL"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
