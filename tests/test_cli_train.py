"""``deblur train`` from the command line: flags, one-line errors, a tiny run, and a SIGKILL then --resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_startup import torch_imported_by
from click.testing import CliRunner
from PIL import Image

from deblurcli.cli import group
from deblurcli.models.nafnet import NAFNet
from deblurcli.train import checkpoint as ckpt
from deblurcli.weights import save_generator


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    """Tiny models gain nothing from threads, and on a busy machine OpenMP threads mostly wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


FLAGS = (
    "--pairs", "--synthetic", "--side-by-side", "--output", "--batch-size", "--crop", "--max-steps", "--max-minutes",
    "--lr", "--lpips", "--no-lpips", "--lpips-net", "--adv", "--gan", "--diffaug", "--device", "--resume", "--seed", "--sharp-prob",
    "--threads",
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        small = (rng.random((10, 12, 3)) * 255).astype(np.uint8)
        Image.fromarray(small).resize((96, 80), Image.BICUBIC).save(photos / f"{i}.png")
    torch.manual_seed(0)
    weights = root / "tiny.safetensors"
    save_generator(NAFNet(width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1], local_pool=32), weights, {})
    return photos, weights


def base_args(photos: Path, weights: Path, run: Path) -> list[str]:
    return ["train", "--synthetic", str(photos), "--weights", str(weights), "-o", str(run), "--batch-size", "2",
            "--crop", "32", "--lpips", "0", "--device", "cpu"]


def test_help_lists_the_documented_flags() -> None:
    result = CliRunner().invoke(group, ["train", "--help"])
    assert result.exit_code == 0
    for flag in FLAGS:
        assert flag in result.output


def test_usage_errors_are_one_line(tmp_path: Path, setup: tuple[Path, Path]) -> None:
    photos, weights = setup
    result = CliRunner().invoke(group, ["train", "-o", str(tmp_path / "r")])
    assert result.exit_code == 2  # a usage error, and it names the option as the command spells it
    assert result.output.strip().splitlines() == ["error: give exactly one of --synthetic DIR, --pairs DIR or --csv-pairs FILE"]
    result = CliRunner().invoke(group, [*base_args(photos, weights, tmp_path / "r"), "--diffaug", "zoom"])
    assert result.exit_code == 2 and "zoom" in result.output
    result = CliRunner().invoke(group, [*base_args(photos, weights, tmp_path / "r"), "--sharp-prob", "1"])
    assert result.exit_code == 2 and "--sharp-prob" in result.output
    result = CliRunner().invoke(group, [*base_args(photos, weights, tmp_path / "r"), "--arch", "resnet"])
    assert result.exit_code == 2 and "'resnet' is not one of" in result.output and "'nafnet-w32'" in result.output


def test_tiny_run_then_refuses_to_overwrite(tmp_path: Path, setup: tuple[Path, Path]) -> None:
    photos, weights = setup
    run = tmp_path / "run"
    args = [*base_args(photos, weights, run), "--adv", "0.01", "--max-steps", "2", "--val-every", "2"]
    try:
        result = CliRunner().invoke(group, [*args, "--threads", "2"])
        assert torch.get_num_threads() == 2  # the module runs on one thread; --threads set two
    finally:
        torch.set_num_threads(1)
    assert result.exit_code == 0, result.output
    assert (run / "last.safetensors").is_file()
    # best.safetensors only for a model that beats the blurry input, which a random tiny model may not
    assert (run / "best.safetensors").is_file() is ("not saved as best" not in result.output)
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "log.csv").is_file()
    again = CliRunner().invoke(group, args)
    assert again.exit_code == 1 and "--resume" in again.output


def test_missing_lpips_backbone_is_a_clear_error(
    tmp_path: Path, setup: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    photos, weights = setup
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*_a: object, **_k: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    args = [*base_args(photos, weights, tmp_path / "run"), "--lpips", "0.1", "--max-steps", "1"]
    result = CliRunner().invoke(group, args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "TORCH_HOME" in lines[0] and "--no-lpips" in lines[0]


def test_sigkill_then_resume_loses_nothing(tmp_path: Path, setup: tuple[Path, Path]) -> None:
    """A real process killed with SIGKILL mid-run resumes from its last checkpoint and finishes."""
    photos, weights = setup
    run = tmp_path / "run"
    args = [*base_args(photos, weights, run), "--adv", "0", "--max-steps", "100000", "--checkpoint-every", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "deblurcli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    path = ckpt.checkpoint_path(run)
    deadline = time.monotonic() + 120
    while not path.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # let it get past the first checkpoint, possibly into the middle of writing another
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert path.exists(), proc.stderr.read().decode() if proc.stderr else ""
    saved = ckpt.load_checkpoint(path)["step"]  # never torn: the atomic write left a whole file
    assert saved >= 2
    final = saved + 2
    resume = [a if a != "100000" else str(final) for a in args] + ["--resume"]
    result = CliRunner().invoke(group, resume)
    assert result.exit_code == 0, result.output
    assert ckpt.load_checkpoint(path)["step"] == final
    leftovers = [p.name for p in [*run.iterdir(), *path.parent.iterdir()] if p.name.startswith(".")]
    assert not leftovers  # temporary files of the killed process are gone


def test_train_help_does_not_import_torch() -> None:
    """`deblur train --help` answers without torch's two-second import (the loss choices are torch-free names)."""
    assert not torch_imported_by(["train", "--help"], expect="wgan-gp")
