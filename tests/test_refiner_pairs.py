"""scripts/make_refiner_pairs.py: the refiner's training pairs are what the kernel method hands it, aligned."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deblurcli.kernel.confidence import kernel_ncc

pytestmark = pytest.mark.usefixtures("one_thread")

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "make_refiner_pairs.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("make_refiner_pairs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_refiner_pairs"] = module
    spec.loader.exec_module(module)
    return module


def scene(h: int, w: int) -> np.ndarray:
    """Random grey rectangles with colour tints: edges of every orientation for the estimator."""
    rng = np.random.default_rng(4)
    img = np.full((h, w, 3), 0.5, np.float32)
    for _ in range(70):
        y, x, dy, dx = rng.integers(0, h), rng.integers(0, w), rng.integers(3, 24), rng.integers(3, 24)
        img[y : y + dy, x : x + dx] = rng.uniform(0.05, 0.95) * rng.uniform(0.8, 1.0, 3)
    return img


def test_a_perturbed_kernel_is_close_to_but_not_the_true_one(script) -> None:
    gen = torch.Generator().manual_seed(3)
    kernel = script.random_kernels(1, script.KERNELS, gen)[0, 0]
    wrong = script.perturb(kernel, gen)
    assert wrong.shape == kernel.shape and float(wrong.min()) >= 0 and abs(float(wrong.sum()) - 1) < 1e-5
    assert 0.5 < kernel_ncc(kernel, wrong) < 0.999


def test_alignment_undoes_a_shift(script) -> None:
    target = torch.from_numpy(scene(80, 90)).permute(2, 0, 1)
    shifted = torch.roll(target, shifts=(3, -2), dims=(1, 2))
    out, ref, psnr = script.align(shifted, target)
    assert out.shape == ref.shape and psnr > 60


def test_the_script_writes_aligned_pairs_and_their_figures(script, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a", "b"):
        Image.fromarray((scene(140, 160) * 255).astype(np.uint8)).save(photos / f"{name}.png")
    (photos / "notes.txt").write_text("not a photo")
    assert script.main([str(photos), "-o", str(tmp_path / "pairs"), "--variants", "2", "--max-side", "120"]) == 0
    blur = sorted(p.name for p in (tmp_path / "pairs" / "blur").iterdir())
    assert blur == ["a_0.png", "a_1.png", "b_0.png", "b_1.png"]
    for name in blur:
        with Image.open(tmp_path / "pairs" / "blur" / name) as b, Image.open(tmp_path / "pairs" / "sharp" / name) as s:
            assert b.size == s.size and max(b.size) <= 120
    with open(tmp_path / "pairs" / "pairs.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and {r["source"] for r in rows} <= {"estimated", "perturbed"}
    assert all(float(r["psnr_deconvolved"]) > 10 for r in rows)
