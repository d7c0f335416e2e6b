"""A folder of photos: total wall time against the model's time alone (issue 9's "Batch" target).

What the difference measures is everything a folder run adds to the model: decoding, metadata, encoding,
atomic writes and Python. Three measurements, interleaved round by round so that a machine whose load
changes (other jobs, thermal limits) affects them alike:

  * model alone: ``runner.model_stage`` (the tiled engine and ``--strength``) over the photos already
    decoded in memory;
  * folder, sequential: ``runner.run_jobs(..., overlap_io=False)`` -- read, deblur, write, one photo after
    another (what ``deblur DIR -o OUT`` did before the overlap);
  * folder, overlapped: ``runner.run_jobs(...)`` as the CLI runs it -- one reader and one writer thread
    decode and save the neighbouring photos while the model works.

Both folder runs write JPEGs with EXIF; the bench checks that the two write the same bytes. The default
model's bundled weights are used when present, else the same architecture with random weights (speed does
not depend on weight values). Run from the repository root:

    python bench/folder_speed.py                          # 20 photos of 1 MP, 2 rounds
    python bench/folder_speed.py --mp 0.25 --threads 1    # small photos on a busy machine
    python bench/folder_speed.py --device cuda --mp 12    # on a GPU: 20 photos of 12 MP
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import piexif
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infer_speed import default_model, make_photo


def add_exif(path: Path, seed: int) -> None:
    """Give the photo camera EXIF, so the metadata path (parse, patch, re-attach) is part of the cost."""
    exif = {
        "0th": {piexif.ImageIFD.Make: b"Bench", piexif.ImageIFD.Model: f"Cam {seed}".encode(), piexif.ImageIFD.Orientation: 1},
        "Exif": {piexif.ExifIFD.ExposureTime: (1, 60), piexif.ExifIFD.ISOSpeedRatings: 400},
    }
    with Image.open(path) as im:
        im.load()
        im.save(path, quality=92, exif=piexif.dump(exif))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20, help="photos in the folder (default 20)")
    parser.add_argument("--mp", type=float, default=1.0, help="megapixels per photo (default 1)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: PyTorch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    parser.add_argument("--tile", type=int, help="tile size (default: the engine's auto plan, made once)")
    args = parser.parse_args()

    import torch

    from deblurcli.batch import find_inputs, plan_jobs
    from deblurcli.devices import keep_host_memory, resolve_device
    from deblurcli.engine import prepare_model
    from deblurcli.runner import Outcome, Settings, model_stage, read_stage, run_jobs
    from deblurcli.session import Session

    if args.threads:
        torch.set_num_threads(args.threads)
    keep_host_memory()  # as the CLI does
    device = resolve_device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        model, _, described = default_model(tmp)
        session = Session("network", module=prepare_model(model, device), device=str(device), tile=args.tile)
        folder = tmp / "in"
        folder.mkdir()
        for i in range(args.count):
            make_photo(folder / f"{i:03d}.jpg", args.mp, seed=i)
            add_exif(folder / f"{i:03d}.jpg", i)
        inputs, _ = find_inputs([folder], recursive=False)
        assert session.plan is not None
        tile, batch = session.plan.tile, session.plan.batch_size
        settings = Settings(overwrite=True)
        jobs = plan_jobs(inputs, tmp / "out")
        photos = [read_stage(job, settings) for job in jobs]
        megapixels = sum(p.rgb.shape[0] * p.rgb.shape[1] for p in photos) / 1e6
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {device}; model: {described}\n"
            f"{len(photos)} JPEG photos with EXIF, {megapixels / len(photos):.2f} MP each, tile {tile}, batch {batch}"
        )
        model_stage(photos[0], session)  # warm-up: allocator, kernels, page cache of the inputs
        sync()

        def model_alone() -> float:
            start = time.perf_counter()
            for photo in photos:
                model_stage(photo, session)
            sync()
            return time.perf_counter() - start

        def folder_run(overlap: bool, out: Path) -> tuple[float, list[Outcome]]:
            outcomes: list[Outcome] = []
            run_plan = plan_jobs(inputs, out)
            start = time.perf_counter()
            end = run_jobs(run_plan, session, settings, on_result=lambda _i, o: outcomes.append(o), overlap_io=overlap)
            sync()
            seconds = time.perf_counter() - start
            if end != "completed" or any(o.status != "done" for o in outcomes):
                raise SystemExit(f"folder run did not complete: {end}, {[o.reason for o in outcomes if o.reason]}")
            return seconds, outcomes

        rows: dict[str, list[float]] = {"model": [], "sequential": [], "overlapped": []}
        for r in range(args.rounds):
            t_model = model_alone()
            t_seq, seq = folder_run(False, tmp / "seq")
            t_ovl, ovl = folder_run(True, tmp / "ovl")
            rows["model"].append(t_model)
            rows["sequential"].append(t_seq)
            rows["overlapped"].append(t_ovl)
            # Each folder run also times its own model calls: wall / that sum is immune to load that
            # changes between the three measurements (the model and the codecs share the same minutes).
            in_seq, in_ovl = (sum(o.model_seconds for o in run) for run in (seq, ovl))
            print(
                f"round {r + 1}: model alone {t_model:.2f} s; folder sequential {t_seq:.2f} s "
                f"(its own model time {in_seq:.2f} s: +{100 * (t_seq / in_seq - 1):.1f}%); folder overlapped "
                f"{t_ovl:.2f} s (its own model time {in_ovl:.2f} s: +{100 * (t_ovl / in_ovl - 1):.1f}%)",
                flush=True,
            )
        same = all((tmp / "seq" / j.rel).read_bytes() == (tmp / "ovl" / j.rel).read_bytes() for j in jobs)
        med = {k: statistics.median(v) for k, v in rows.items()}
        print(
            f"median of {args.rounds}: model alone {med['model']:.2f} s ({megapixels / med['model']:.3f} MP/s); "
            f"sequential {med['sequential']:.2f} s = model +{100 * (med['sequential'] / med['model'] - 1):.1f}%; "
            f"overlapped {med['overlapped']:.2f} s = model +{100 * (med['overlapped'] / med['model'] - 1):.1f}% "
            f"(target: within 10%); outputs byte-identical: {same}"
        )
        return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
