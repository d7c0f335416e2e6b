"""The figures of docs/performance.md: tiled speed and peak memory per architecture, tiling overhead, tile sizes,
precision, each from a command that can be rerun.

    python bench/perf_report.py table --mp 12 --threads 1,2            # every generator preset, fp32 and auto
    python bench/perf_report.py table --only nafnet-s,nafnet-w32 --mp 12 --threads 1
    python bench/perf_report.py tiling --mp 2 --threads 1              # tiled vs whole, same photo, interleaved
    python bench/perf_report.py tiles --mp 3 --sizes 256,384,512,768   # CPU tile-size sweep
    python bench/perf_report.py precision --size 512 --threads 1       # fp32 vs bf16: speed and PSNR
    python bench/perf_report.py backends --threads 1 --mp 12           # torch fp32/bf16 vs OpenVINO: tile and photo, FLOPs, share of the bf16 peak

``table`` runs each (architecture, threads, precision) in a fresh child process, so its peak resident memory
(``wait4``'s ru_maxrss of the child alone) is that run's, and reports the model time of ``engine.deblur_array``
on a synthetic photo (decode and encode are not included: ``bench/infer_speed.py`` times the CLI end to end).
Weights are random (speed and memory depend on the architecture, not the values); NAFNet's ``beta``/``gamma``
are made non-zero so every branch does real work and the bf16 check sees a realistic network. On a machine
shared with other work, compare figures from the same run only, and prefer ``--threads 1`` and CPU time
(``time.process_time``, reported next to wall time): with one thread it counts the work done whatever the
load, while wall time counts the waits for a core; an OpenMP thread that waits for a busy core makes two
threads slower than one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

GIB = 1 << 30
GENERATORS = ("nafnet-s", "nafnet-w32", "nafnet-w64", "dgf-light", "dgf")
#: Published GoPro PSNR (dB) of the presets that have one (FACTS.md).
PUBLISHED_PSNR = {"nafnet-w32": 32.87, "nafnet-w64": 33.71}


def synthetic_photo(megapixels: float, seed: int = 0) -> np.ndarray:
    """A 4:3 float32 photo with gradients and texture (every tile differs, as in a real photo)."""
    width = round((megapixels * 1e6 * 4 / 3) ** 0.5) // 8 * 8
    height = round(width * 3 / 4) // 8 * 8
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.empty((height, width, 3), np.float32)
    rgb[..., 0] = xx / width
    rgb[..., 1] = yy / height
    rgb[..., 2] = 0.5 + 0.3 * np.sin(xx / 37.0) * np.cos(yy / 53.0)
    rgb *= 0.85
    rgb += 0.15 * rng.random((height, width, 3), dtype=np.float32)
    return rgb


def build_preset(name: str) -> Any:
    """Preset ``name`` with seeded random weights, in eval mode, configured as inference runs it."""
    import torch

    from deblurcli.models.registry import build, preset

    arch, config = preset(name)
    torch.manual_seed(0)
    model = build(arch, config).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith(("beta", "gamma")):
                p.normal_(0.0, 0.1)
    return model


def child(args: argparse.Namespace) -> None:
    """One timed tiled run in this process; prints one JSON line."""
    model, rgb = _setup(args)
    session = _session(model, args, args.tile, args.batch)
    session.run_network(rgb[:256, :256].copy())
    seconds, cpu = _timed(lambda: session.run_network(rgb))
    mp = rgb.shape[0] * rgb.shape[1] / 1e6
    row = {"seconds": seconds, "cpu_seconds": cpu, "mp": mp, "mp_per_s": mp / seconds, "mp_per_cpu_s": mp / cpu}
    assert session.plan is not None
    print(json.dumps({**row, "tile": session.plan.tile, "precision": str(session.precision)}))


def run_child(arch: str, mp: float, threads: int, precision: str, tile: int | None, batch: int) -> dict[str, Any]:
    """Run ``child`` in a fresh interpreter; its JSON plus its own peak RSS."""
    cmd = [sys.executable, __file__, "_child", "--arch", arch, "--mp", str(mp), "--threads", str(threads)]
    cmd += ["--precision", precision, "--batch", str(batch)] + (["--tile", str(tile)] if tile else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage: its peak RSS
        out.seek(0)
        err.seek(0)
        text, errors = out.read(), err.read()
    if os.waitstatus_to_exitcode(status) != 0 or not text.strip():
        raise SystemExit(f"{arch}: child failed:\n{errors[-2000:]}")
    row = json.loads(text.strip().splitlines()[-1])
    scale = 1 if sys.platform == "darwin" else 1024
    row["peak_rss_gib"] = usage.ru_maxrss * scale / GIB
    return row


def table(args: argparse.Namespace) -> None:
    import torch
    from model_cost import count_macs

    names = args.only.split(",") if args.only else list(GENERATORS)
    threads = [int(t) for t in args.threads.split(",")]
    precisions = args.precisions.split(",")
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs visible, torch {torch.__version__}")
    print("| model | params | GMAC/MP | threads | precision | MP | tile | wall s | MP/s | CPU s | MP/CPU-s | peak RSS GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = {}
    for name in names:
        model = build_preset(name)
        params = sum(p.numel() for p in model.parameters())
        macs = count_macs(model, torch.rand(1, 3, 256, 256)) / (256 * 256 / 1e6) / 1e9
        del model
        for n in threads:
            for precision in precisions:
                row = run_child(name, args.mp, n, precision, args.tile, args.batch)
                rows[(name, n, precision)] = row
                print(
                    f"| {name} | {params / 1e6:.2f} M | {macs:.1f} | {n} | {row['precision'].replace('torch.', '')} | "
                    f"{row['mp']:.1f} | {row['tile']} | {row['seconds']:.1f} | {row['mp_per_s']:.3f} | "
                    f"{row['cpu_seconds']:.1f} | {row['mp_per_cpu_s']:.3f} | {row['peak_rss_gib']:.2f} |",
                    flush=True,
                )
    base = [k for k in rows if k[0] == "nafnet-s"]
    for key in base:
        other = ("nafnet-w32", key[1], key[2])
        if other in rows:
            ratio = rows[other]["cpu_seconds"] / rows[key]["cpu_seconds"]
            print(f"nafnet-s is {ratio:.2f}x the speed of nafnet-w32 (CPU time, {key[1]} threads, {key[2]}); "
                  f"w32 published GoPro PSNR {PUBLISHED_PSNR['nafnet-w32']} dB")


def _timed(fn: Any) -> tuple[float, float]:
    """(wall, CPU) seconds for ``fn()``. CPU seconds of this process count the work done whatever the load
    (on a shared machine wall-clock time mostly measures the other processes); on a quiet machine wall time
    is what a user waits, and with N threads CPU time is up to N times it."""
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu_start


def _setup(args: argparse.Namespace) -> tuple[Any, np.ndarray]:
    """Threads, allocator, model (prepared as a Session prepares it) and synthetic photo: every timed run's set-up."""
    import torch

    from deblurcli.devices import keep_host_memory
    from deblurcli.engine import prepare_model

    torch.set_num_threads(int(args.threads))
    keep_host_memory()  # as the CLI does
    return prepare_model(build_preset(args.arch), torch.device("cpu")), synthetic_photo(args.mp)


def _session(model: Any, args: argparse.Namespace, tile: int | None, batch: int | None = None) -> Any:
    """The network of a CLI run (``--method network``) around ``model``, with ``tile`` (None: auto plan)."""
    from deblurcli.session import Session

    return Session(
        "network", module=model, device="cpu", precision=args.precision, tile=tile, overlap=args.overlap, batch_size=batch,
        backend=args.backend,
    )


def tiling(args: argparse.Namespace) -> None:
    """Same photo tiled (auto plan) and whole, interleaved, best of ``--reps``: the tiling overhead."""
    model, rgb = _setup(args)
    tiled_run, whole_run = _session(model, args, args.tile), _session(model, args, 0)
    assert tiled_run.plan is not None
    tile = tiled_run.plan.tile
    whole_run.run_network(rgb[:256, :256].copy())
    tiled, whole = [], []
    for _ in range(args.reps):
        tiled.append(_timed(lambda: tiled_run.run_network(rgb)))
        whole.append(_timed(lambda: whole_run.run_network(rgb)))
    a, b = tiled_run.run_network(rgb), whole_run.run_network(rgb)
    psnr = -10 * np.log10(np.mean((a.astype(np.float64) - b) ** 2) + 1e-30)
    h, w, _ = rgb.shape
    (tw, tc), (ww, wc) = min(tiled), min(whole)
    print(f"{args.arch}, {w}x{h}, {args.threads} thread(s), {whole_run.precision}, tile {tile} overlap {args.overlap}: tiled "
          f"{tw:.2f} s ({tc:.2f} CPU s), whole {ww:.2f} s ({wc:.2f} CPU s) -> overhead {100 * (tw / ww - 1):+.1f}% "
          f"wall, {100 * (tc / wc - 1):+.1f}% CPU (tiled vs whole {psnr:.1f} dB)")


def tiles(args: argparse.Namespace) -> None:
    """Throughput per tile size on one photo, interleaved rounds, best of ``--reps`` (0 = whole image)."""
    model, rgb = _setup(args)
    sizes = [int(s) for s in args.sizes.split(",")]
    sessions = {s: _session(model, args, s, args.batch) for s in sizes}
    sessions[sizes[0]].run_network(rgb[:256, :256].copy())
    best = {s: (float("inf"), float("inf")) for s in sizes}
    mp = rgb.shape[0] * rgb.shape[1] / 1e6
    for rep in range(args.reps):
        for s in sizes:
            best[s] = min(best[s], _timed(lambda s=s: sessions[s].run_network(rgb)))
            wall, cpu_s = best[s]
            print(f"round {rep + 1}: {args.arch} tile {s} batch {args.batch}, {args.threads} thread(s), "
                  f"{sessions[s].precision}: best {wall:.2f} s = {mp / wall:.3f} MP/s ({cpu_s:.2f} CPU s)", flush=True)


def precision(args: argparse.Namespace) -> None:
    """fp32 vs bf16 autocast on one ``--size`` input: speed (interleaved, best of reps) and PSNR between them."""
    import torch

    torch.set_num_threads(int(args.threads))
    model = build_preset(args.arch).to(memory_format=torch.channels_last)
    x = torch.from_numpy(synthetic_photo(args.size * args.size / 1e6)).permute(2, 0, 1)[None]
    x = x.contiguous(memory_format=torch.channels_last)

    def low() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x).float()

    with torch.inference_mode():
        ref, out = model(x), low()
        t32, t16 = [], []
        for _ in range(args.reps):
            t32.append(_timed(lambda: model(x))[1])
            t16.append(_timed(low)[1])
    mse = float((ref.clamp(0, 1) - out.clamp(0, 1)).double().square().mean())
    print(f"{args.arch} {tuple(x.shape[2:])}, {args.threads} thread(s): fp32 {min(t32) * 1e3:.0f} CPU ms, bf16 "
          f"{min(t16) * 1e3:.0f} CPU ms ({min(t32) / min(t16):.2f}x), bf16 vs fp32 {-10 * np.log10(mse):.1f} dB")


def _median(values: list[float]) -> float:
    return float(np.median(values))


def _ratios(wall: dict[str, float], cpu: dict[str, float], name: str, base: str) -> str:
    """Speed of ``name`` relative to ``base``: wall clock, and CPU time (what counts on a loaded machine)."""
    return f"{wall[base] / wall[name]:.2f}x ({cpu[base] / cpu[name]:.2f}x CPU)"


def matmul_peak(dtype: Any, threads: int, n: int = 2048, reps: int = 3) -> float:
    """GFLOP/s of an ``n x n`` matmul in ``dtype`` with ``threads`` threads, best of ``reps`` by CPU time per
    thread (what the cores can do whatever the load): the peak the network's figure is a share of."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.rand(n, n, dtype=dtype), torch.rand(n, n, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b)[1] for _ in range(reps))
    return 2 * n**3 / (best / threads) / 1e9


def network_gflop(model: Any, x: Any) -> float:
    """Convolution and matmul GFLOP of one forward pass on ``x`` (``torch.utils.flop_counter``; element-wise
    work is not counted, as in every published FLOP figure)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def backends(args: argparse.Namespace) -> None:
    """The backend as a dimension: export/compile cost, one ``--size`` tile (a batch of two, as the Session
    gives OpenVINO) and a ``--mp`` photo through the engine, for torch fp32, torch bf16 and OpenVINO
    (bf16, and f32 for the record); interleaved rounds, medians, PSNR against torch fp32."""
    import torch

    from deblurcli.backends.openvino import OpenVINONetwork
    from deblurcli.engine import bf16_copy, psnr

    model, rgb = _setup(args)
    threads = int(args.threads)
    cache = tempfile.TemporaryDirectory()
    os.environ["XDG_CACHE_HOME"] = cache.name  # a cold cache: the first-run cost below is the export's
    size = args.size
    start = time.perf_counter()
    first = OpenVINONetwork(model, torch.bfloat16, threads)
    first._ir = first._exported()
    exported = time.perf_counter()
    first._queues[(size, size)] = first._compile(size, size)
    compiled = time.perf_counter()
    again = OpenVINONetwork(model, torch.bfloat16, threads)
    again._queues[(size, size)] = again._compile(size, size)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {args.arch}, {threads} thread(s), torch {torch.__version__}, {first.describe()}")
    print(f"first run: export {exported - start:.1f} s, compile {size}² {compiled - exported:.1f} s; "
          f"second run (cached export and blob): {time.perf_counter() - compiled:.1f} s")

    wide = synthetic_photo(3.2 * size * size / 1e6, seed=1)  # at least two tiles wide
    crops = [wide[:size, i * size : (i + 1) * size] for i in range(2)]
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)  # NHWC in memory, as the engine gathers tiles
    f32 = OpenVINONetwork(model, torch.float32, threads)

    low = bf16_copy(model)  # what the engine runs for bf16 on a CPU
    runs = {"torch fp32": lambda: model(x), "torch bf16": lambda: low(x), "openvino bf16": lambda: first(x), "openvino f32": lambda: f32(x)}
    with torch.inference_mode():
        reference = model(x)
        quality = {name: psnr(fn(), reference) for name, fn in runs.items()}  # also the warm-up (and OV's checks)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        for _ in range(args.reps):
            for name, fn in runs.items():
                times[name].append(_timed(fn))
    mp = size * size / 1e6
    gflop = network_gflop(model, x[:1])
    peak = {"fp32": matmul_peak(torch.float32, threads), "bf16": matmul_peak(torch.bfloat16, threads)}
    print(f"network: {gflop:.1f} GFLOP per {size}² tile; {2048}² matmul peak ({threads} thread(s), per CPU-second "
          f"of each thread): fp32 {peak['fp32']:.0f}, bf16 {peak['bf16']:.0f} GFLOP/s")
    print(f"| {size}² tile, {threads} thread(s) | ms per tile | MP/s | CPU ms per tile | vs torch fp32 | vs torch bf16 | "
          "GFLOP/s per thread (% of the bf16 peak) | PSNR vs torch fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    wall = {name: _median([t[0] for t in ts]) / 2 for name, ts in times.items()}
    cpu = {name: _median([t[1] for t in ts]) / 2 for name, ts in times.items()}
    for name in times:
        rate = gflop / (cpu[name] / threads)
        share = f"{rate:.0f} ({100 * rate / peak['bf16']:.0f}%)"
        print(f"| {name} | {wall[name] * 1e3:.0f} | {mp / wall[name]:.2f} | {cpu[name] * 1e3:.0f} | {_ratios(wall, cpu, name, 'torch fp32')} | "
              f"{_ratios(wall, cpu, name, 'torch bf16')} | {share} | {quality[name]:.1f} dB |", flush=True)

    if args.mp <= 0:
        return
    sessions = {
        "torch fp32": ("fp32", "torch"), "torch bf16": ("bf16", "torch"), "openvino bf16": ("bf16", "openvino"),
    }
    from deblurcli.session import Session

    built = {name: Session("network", module=model, device="cpu", precision=p, backend=b, overlap=args.overlap, tile=args.tile) for name, (p, b) in sessions.items()}
    reference_photo = built["torch fp32"].run_network(rgb)  # also the warm-up of each session (and OV's compile)
    agree = {name: psnr(torch.from_numpy(s.run_network(rgb)), torch.from_numpy(reference_photo)) for name, s in built.items() if name != "torch fp32"}
    photo: dict[str, list[tuple[float, float]]] = {name: [] for name in built}
    for _ in range(args.reps):
        for name, session in built.items():
            photo[name].append(_timed(lambda session=session: session.run_network(rgb)))
    h, w, _ = rgb.shape
    plan = built["openvino bf16"].plan
    print(f"| {w}x{h} photo ({h * w / 1e6:.1f} MP), {threads} thread(s), {plan.describe() if plan else ''} | s | MP/s | CPU s | vs torch fp32 | vs torch bf16 | PSNR vs torch fp32 |")
    print("|---|---|---|---|---|---|---|")
    wall = {name: _median([t[0] for t in ts]) for name, ts in photo.items()}
    cpu = {name: _median([t[1] for t in ts]) for name, ts in photo.items()}
    for name in photo:
        db = f"{agree[name]:.1f} dB" if name in agree else "reference"
        print(f"| {name} | {wall[name]:.1f} | {h * w / 1e6 / wall[name]:.2f} | {cpu[name]:.1f} | {_ratios(wall, cpu, name, 'torch fp32')} | "
              f"{_ratios(wall, cpu, name, 'torch bf16')} | {db} |", flush=True)
    cache.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--arch", default="nafnet-s", help="preset (default nafnet-s)")
    common.add_argument("--overlap", type=int, default=32)
    common.add_argument("--tile", type=int, default=None, help="tile side (default: the engine's auto plan)")
    common.add_argument("--batch", type=int, default=1, help="tiles per batch")
    common.add_argument("--reps", type=int, default=2)
    common.add_argument("--backend", default="torch", help="torch (the figures of docs/performance.md), openvino or auto")
    p = sub.add_parser("table", parents=[common], help="speed and peak RSS per architecture")
    p.add_argument("--only", default=None, help=f"comma-separated presets (default {','.join(GENERATORS)})")
    p.add_argument("--mp", type=float, default=12.0)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--precisions", default="fp32", help="comma-separated: fp32, auto, bf16")
    p = sub.add_parser("tiling", parents=[common], help="tiled vs whole")
    p.add_argument("--mp", type=float, default=2.0)
    p.add_argument("--threads", default="1")
    p.add_argument("--precision", default="fp32", help="fp32, auto or bf16")
    p = sub.add_parser("tiles", parents=[common], help="tile-size sweep")
    p.add_argument("--mp", type=float, default=3.0)
    p.add_argument("--threads", default="1")
    p.add_argument("--precision", default="fp32", help="fp32, auto or bf16")
    p.add_argument("--sizes", default="256,384,512,768")
    p = sub.add_parser("precision", parents=[common], help="fp32 vs bf16")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--threads", default="1")
    p = sub.add_parser("backends", parents=[common], help="torch vs OpenVINO: one tile and one photo")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--mp", type=float, default=12.0, help="photo for the end-to-end figures (0: tiles only)")
    p.add_argument("--threads", default="1")
    p = sub.add_parser("_child", parents=[common])
    p.add_argument("--mp", type=float, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    {"table": table, "tiling": tiling, "tiles": tiles, "precision": precision, "backends": backends, "_child": child}[args.cmd](args)


if __name__ == "__main__":
    main()
