"""``deblur train`` under torchrun: two gloo processes on the CPU train in lockstep, rank 0 alone writes,
and the checkpoint resumes with another number of processes (1) and with the same (2, through the CLI).

Run as a script, this file is the torchrun worker: it trains a tiny run and dumps what its rank holds
(weights, random state, data share, and every write it made inside the run folder) for the test to compare.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from deblurcli.models.nafnet import NAFNet
from deblurcli.train import checkpoint as ckpt
from deblurcli.train import distributed, losses
from deblurcli.train.loop import Trainer
from deblurcli.train.options import TrainOptions
from deblurcli.weights import read_state_dict, save_generator

#: the tiny run every process trains: NAFNet width 8, crops 32, batch 2, the WGAN-GP critic (so the gradient
#: penalty's double backward goes through DDP too), no LPIPS (its backbone would need a download).
TINY = {"batch_size": 2, "crop": 32, "val_crop": 32, "lpips": 0.0, "adv": 0.01, "gan": "wgan-gp", "val_every": 2,
        "log_every": 1, "warmup_steps": 0, "device": "cpu", "lpips_pretrained": False}


def _options(run: Path, photos: Path, weights: Path, max_steps: int, resume: bool) -> TrainOptions:
    return TrainOptions(output=run, synthetic=photos, weights=weights, max_steps=max_steps, resume=resume, **TINY)


def _record_writes(root: Path, sink: list[str]) -> None:
    """Note every file opened for writing, renamed, created or removed under ``root`` by this process."""
    prefix = str(root.resolve())
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and isinstance(args[0], (str, os.PathLike)):
            mode, flags = args[1], args[2]
            if (mode is not None and any(c in mode for c in "wax+")) or (mode is None and flags & writing):
                paths = [args[0]]
            else:
                return
        elif event in ("os.rename", "os.replace", "os.mkdir", "os.remove", "os.unlink"):
            paths = [a for a in args[:2] if isinstance(a, (str, os.PathLike))]
        else:
            return
        for p in paths:
            if os.path.abspath(os.fspath(p)).startswith(prefix):
                sink.append(f"{event} {p}")

    sys.addaudithook(hook)


def worker(run: Path, photos: Path, weights: Path, out: Path, max_steps: int) -> None:
    """One torchrun process: train, then save what this rank holds to ``out/rank<R>.pt``."""
    torch.set_num_threads(1)
    writes: list[str] = []
    _record_writes(run, writes)
    with distributed.session("cpu") as dist:
        assert dist is not None and dist.backend == "gloo"
        trainer = Trainer(_options(run, photos, weights, max_steps, False), Console(file=io.StringIO()), dist)
        result = trainer.run()
        assert trainer.critic is not None
        dump = {
            "rank": dist.rank, "steps": result.steps, "writes": writes, "bank": len(trainer.bank),
            "generator": trainer.generator.state_dict(), "ema": trainer.ema.state_dict(),
            "critic": trainer.critic.state_dict(), "data_rng": trainer.gens["data"].get_state(),
        }
    torch.save(dump, out / f"rank{dump['rank']}.pt")


# ------------------------------------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ddp")
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(3)
    for i in range(6):
        small = (rng.random((10, 12, 3)) * 255).astype(np.uint8)
        Image.fromarray(small).resize((96, 80), Image.BICUBIC).save(photos / f"p{i}.png")
    torch.manual_seed(0)
    weights = root / "tiny.safetensors"
    save_generator(NAFNet(width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1], local_pool=32), weights, {})
    return photos, weights


def torchrun(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in distributed.ENV_VARS}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=timeout)


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_ranks_train_in_lockstep_and_resume_with_one_then_two(setup: tuple[Path, Path], tmp_path: Path) -> None:
    photos, weights = setup
    run = tmp_path / "run"
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    proc = torchrun([__file__, str(run), str(photos), str(weights), str(dumps), "4"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (torch.load(dumps / f"rank{r}.pt", weights_only=True) for r in (0, 1))

    # Same weights on both ranks, G, EMA and critic alike: gradients (the critic's too) were averaged.
    assert r0["steps"] == r1["steps"] == 4
    for part in ("generator", "ema", "critic"):
        assert same_tensors(r0[part], r1[part]), part
    start, _ = read_state_dict(weights)
    assert not same_tensors(start, r0["generator"])  # and they did train
    # Each rank drew its own crops from its own share of the training photos (5 of 6; 1 is held out).
    assert not torch.equal(r0["data_rng"], r1["data_rng"])
    assert (r0["bank"], r1["bank"]) in ((3, 2), (2, 3))
    # Rank 0 alone wrote to the run folder.
    assert r1["writes"] == []
    assert any("last.pt" in w for w in r0["writes"]) and any("log.csv" in w for w in r0["writes"])
    steps = [row.split(",")[0] for row in (run / "log.csv").read_text().splitlines()[1:]]
    assert steps == ["1", "2", "2", "3", "4", "4"]  # one row per step plus validations: written once
    state = ckpt.load_checkpoint(ckpt.checkpoint_path(run))
    assert state["step"] == 4 and state["world_size"] == 2
    assert not any(k.startswith("module.") for k in [*state["generator"], *state["critic"]])  # unwrapped
    assert same_tensors(state["ema"], r0["ema"])
    assert same_tensors(read_state_dict(run / "last.safetensors")[0], r0["ema"])

    # The world size changes: one process picks it up (rank 0's random state) ...
    single = Trainer(_options(run, photos, weights, 6, True), Console(file=io.StringIO()))
    assert single.step == 4 and same_tensors(single.generator.state_dict(), r0["generator"])
    assert torch.equal(single.gens["data"].get_state(), r0["data_rng"])
    assert single.run().steps == 6
    assert ckpt.load_checkpoint(ckpt.checkpoint_path(run))["world_size"] == 1

    # ... and two again, through the real command line under torchrun.
    proc = torchrun(["-m", "deblurcli", "train", "--synthetic", str(photos), "--weights", str(weights), "-o", str(run),
                     "--batch-size", "2", "--crop", "32", "--val-crop", "32", "--lpips", "0", "--adv", "0.01",
                     "--val-every", "2", "--device", "cpu", "--max-steps", "8", "--resume"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stderr.count("finished at step 8") == 1  # rank 0 reports, rank 1 is quiet
    state = ckpt.load_checkpoint(ckpt.checkpoint_path(run))
    assert state["step"] == 8 and state["world_size"] == 2
    assert json.loads(state["data"])["photos"] == 5  # the same split as one process: the held-out photo stays out


@pytest.fixture
def world_of_one(tmp_path: Path) -> Any:
    """A real gloo process group of one process: the DDP code paths, in-process and fast."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield distributed.Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="gloo")
    dist.destroy_process_group()


def test_non_finite_steps_roll_back_through_the_ddp_wrappers(
    setup: tuple[Path, Path], tmp_path: Path, world_of_one: distributed.Dist, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dropped critic step leaves G's DDP forward without a backward, a dropped G step leaves its
    gradients unapplied; training must go on through both (DDP must not wait for a missing reduction)."""
    photos, weights = setup
    calls = {"d": 0, "g": 0}
    real_d, real_pixel = losses.d_loss, losses.pixel_loss

    def d_nan_once(*args: Any) -> torch.Tensor:
        calls["d"] += 1
        return real_d(*args) * (float("nan") if calls["d"] == 2 else 1.0)

    def g_nan_once(*args: Any) -> torch.Tensor:
        calls["g"] += 1
        return real_pixel(*args) * (float("nan") if calls["g"] == 3 else 1.0)

    monkeypatch.setattr(losses, "d_loss", d_nan_once)
    monkeypatch.setattr(losses, "pixel_loss", g_nan_once)
    trainer = Trainer(_options(tmp_path / "run", photos, weights, 4, False), Console(file=io.StringIO()), world_of_one)
    assert isinstance(trainer.g_train, torch.nn.parallel.DistributedDataParallel)
    result = trainer.run()
    assert result.steps == 4 and trainer.lr_scale == 0.25
    assert all(torch.isfinite(p).all() for p in trainer.generator.parameters())
    assert ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "run"))["step"] == 4


def test_single_process_has_no_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in distributed.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node=1 on one node: plain run
    assert not distributed.requested() and distributed.env_rank() == 0
    with distributed.session("cpu") as dist:
        assert dist is None and not torch.distributed.is_initialized()


def test_rank_seeds_differ_per_rank_and_step_and_repeat() -> None:
    seeds = {distributed.rank_seed(0, stream, rank, step) for stream in range(4) for rank in range(8) for step in (0, 100)}
    assert len(seeds) == 4 * 8 * 2
    assert distributed.rank_seed(5, 1, 3, 100) == distributed.rank_seed(5, 1, 3, 100)
    assert all(0 <= s < 2**63 for s in seeds)


if __name__ == "__main__":
    _run, _photos, _weights, _out, _steps = sys.argv[1:6]
    worker(Path(_run), Path(_photos), Path(_weights), Path(_out), int(_steps))
