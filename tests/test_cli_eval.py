"""``deblur eval`` end to end: existing outputs, a tiny model through --weights, reports and failures."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from deblurcli import metrics
from deblurcli.cli import group

H, W = 44, 48


def save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def ref_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture()
def dataset(tmp_path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Three pairs (one nested), and outputs: one perfect, one half-way, one a copy of the blurry input."""
    rng = np.random.default_rng(0)
    data: dict[str, dict[str, np.ndarray]] = {}
    for i, key in enumerate(["a", "b", "sub/c"]):
        sharp = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        blur = np.clip(sharp.astype(int) + rng.integers(-40, 41, sharp.shape), 0, 255).astype(np.uint8)
        out = [sharp, ((blur.astype(int) + sharp) // 2).astype(np.uint8), blur][i]
        save(tmp_path / "pairs" / "blur" / f"{key}.png", blur)
        save(tmp_path / "pairs" / "sharp" / f"{key}.png", sharp)
        save(tmp_path / "outs" / f"{key}.png", out)
        data[key] = {"blur": blur, "sharp": sharp, "out": out}
    return data


def run(*args: str) -> object:
    return CliRunner().invoke(group, ["eval", *args], catch_exceptions=False)


def strict_json(text: str) -> dict:
    def reject(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=reject)


def test_outputs_dir_end_to_end(tmp_path: Path, dataset) -> None:
    args = ("--pairs", str(tmp_path / "pairs"), "--outputs", str(tmp_path / "outs"), "--no-lpips")
    result = run(*args, "--csv", str(tmp_path / "r.csv"), "--compare", str(tmp_path / "cmp"))
    assert result.exit_code == 0, result.output
    assert "MS-SSIM n/a for 3 of 3" in result.stderr and "LPIPS not computed (--no-lpips)" in result.stderr
    for word in ("PSNR", "SSIM", "MS-SSIM", "FSIM", "VIF", "LPIPS", "sub/c", "mean", "gain", "inf"):
        assert word in result.stdout

    as_json = run(*args, "--json")  # JSON on stdout, as every command's --json; the notes stay on stderr
    assert as_json.exit_code == 0 and "MS-SSIM n/a for 3 of 3" in as_json.stderr
    report = strict_json(as_json.stdout)
    assert report["count"] == 3 and [im["key"] for im in report["images"]] == ["a", "b", "sub/c"]
    for block in [report["mean"], *report["images"]]:
        for scope in ("input", "output", "gain"):
            assert set(block[scope]) == set(metrics.METRICS)
    for im in report["images"]:
        d = dataset[im["key"]]
        assert im["input"]["psnr"] == pytest.approx(ref_psnr(d["blur"], d["sharp"]), abs=1e-5)
        assert im["output"]["ms_ssim"] is None and im["output"]["lpips"] is None
        assert im["output"]["ssim"] is not None and im["output"]["vif"] is not None
    a, b, c = report["images"]
    assert a["output"]["psnr"] is None  # identical to sharp: infinite, written as null
    assert a["output"]["ssim"] == pytest.approx(1.0)
    assert b["output"]["psnr"] == pytest.approx(ref_psnr(dataset["b"]["out"], dataset["b"]["sharp"]), abs=1e-5)
    assert c["gain"]["psnr"] == pytest.approx(0.0, abs=1e-9) and c["output"] == c["input"]
    assert report["mean"]["output"]["psnr"] is None  # a mean including an infinite PSNR is infinite
    mean_in = np.mean([im["input"]["psnr"] for im in report["images"]])
    assert report["mean"]["input"]["psnr"] == pytest.approx(mean_in)
    assert report["settings"]["ssim"].startswith("11x11") and report["settings"]["channel"] == "rgb"

    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [r["key"] for r in rows] == ["a", "b", "sub/c", "mean"]
    assert rows[0]["output_psnr"] == "inf" and float(rows[0]["output_psnr"]) == math.inf
    assert rows[0]["output_ms_ssim"] == "" and float(rows[1]["input_ssim"]) == pytest.approx(b["input"]["ssim"])
    assert {f"{s}_{k}" for s in ("input", "output", "gain") for k in metrics.METRICS} <= set(rows[0])

    strip = load(tmp_path / "cmp" / "sub" / "c.png")
    assert strip.shape == (H, 3 * W, 3)
    bottom = slice(H - 8, H)  # below the labels
    assert np.array_equal(strip[bottom, :W], dataset["sub/c"]["blur"][bottom])
    assert np.array_equal(strip[bottom, W : 2 * W], dataset["sub/c"]["out"][bottom])
    assert np.array_equal(strip[bottom, 2 * W :], dataset["sub/c"]["sharp"][bottom])
    assert not np.array_equal(strip[:8, :W], dataset["sub/c"]["blur"][:8])  # the PSNR label is drawn


def test_threads_sets_the_cpu_threads(tmp_path: Path, dataset) -> None:
    """``--threads`` reaches torch (the kernel estimate depends on rounding, so runs compared want one count)."""
    import torch

    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    try:
        result = run("--pairs", str(tmp_path / "pairs"), "--outputs", str(tmp_path / "outs"), "--no-lpips",
                     "--threads", str(target))
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == target
    finally:
        torch.set_num_threads(before)


def test_y_channel_crop_border_and_limit(tmp_path: Path, dataset) -> None:
    result = run(
        "--pairs", str(tmp_path / "pairs"), "--outputs", str(tmp_path / "outs"), "--no-lpips",
        "--y-channel", "--crop-border", "4", "--limit", "2", "--json",
    )
    assert result.exit_code == 0, result.output
    report = strict_json(result.stdout)
    assert [im["key"] for im in report["images"]] == ["a", "b"]
    b = report["images"][1]
    assert (b["width"], b["height"]) == (W - 8, H - 8)
    expected = metrics.image_metrics(
        dataset["b"]["out"] / 255.0, dataset["b"]["sharp"] / 255.0, y_channel=True, crop_border=4
    )
    assert b["output"] == pytest.approx(expected)
    assert report["settings"]["channel"] == "y" and report["settings"]["crop_border"] == 4


def test_lpips_with_a_model_and_without_one(tmp_path: Path, dataset, monkeypatch) -> None:
    real = metrics.make_lpips
    monkeypatch.setattr(metrics, "make_lpips", lambda net="alex": real(net, random_backbone=True))
    result = run("--pairs", str(tmp_path / "pairs"), "--outputs", str(tmp_path / "outs"), "--json")
    assert result.exit_code == 0, result.output
    report = strict_json(result.stdout)
    assert report["images"][0]["output"]["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert report["images"][1]["input"]["lpips"] > report["images"][1]["output"]["lpips"] > 0
    assert report["settings"]["lpips_net"] == "alex"

    note = "LPIPS n/a: its ImageNet backbone is not cached and could not be downloaded (offline); put ..."
    monkeypatch.setattr(metrics, "make_lpips", lambda net="alex": (None, note))
    result = run("--pairs", str(tmp_path / "pairs"), "--outputs", str(tmp_path / "outs"), "--json")
    assert result.exit_code == 0 and note in result.stderr
    report = strict_json(result.stdout)
    assert report["mean"]["output"]["lpips"] is None and note in report["notes"]


def test_failures_are_reported_per_pair_and_exit_1(tmp_path: Path, dataset) -> None:
    (tmp_path / "outs" / "b.png").unlink()
    save(tmp_path / "outs" / "a.png", np.zeros((H, W + 2, 3), np.uint8))
    save(tmp_path / "pairs" / "blur" / "lonely.png", np.zeros((H, W, 3), np.uint8))
    result = run("--pairs", str(tmp_path / "pairs"), "--outputs", str(tmp_path / "outs"), "--no-lpips", "--json")
    assert result.exit_code == 1
    assert "warning:" in result.stderr and "lonely.png" in result.stderr
    assert f"a.png: output is {W + 2}x{H} but the sharp image is {W}x{H}" in result.stderr
    assert "no output image for" in result.stderr and "b.png" in result.stderr
    assert "Traceback" not in result.output
    report = strict_json(result.stdout)
    assert [im["key"] for im in report["images"]] == ["sub/c"] and len(report["errors"]) == 2
    assert any("lonely.png" in p for p in report["problems"])


def test_mismatched_pair_sizes_name_the_file(tmp_path: Path, dataset) -> None:
    save(tmp_path / "pairs" / "sharp" / "a.png", np.zeros((H + 1, W, 3), np.uint8))
    result = run("--pairs", str(tmp_path / "pairs"), "--outputs", str(tmp_path / "outs"), "--no-lpips")
    assert result.exit_code == 1
    assert f"{tmp_path / 'pairs' / 'blur' / 'a.png'}: blurry image is {W}x{H}" in result.stderr


def test_usage_and_setup_errors(tmp_path: Path) -> None:
    assert run("--outputs", str(tmp_path)).exit_code == 2
    (tmp_path / "w.safetensors").write_bytes(b"x")
    both = run("--pairs", str(tmp_path), "--outputs", str(tmp_path), "--weights", str(tmp_path / "w.safetensors"))
    assert both.exit_code == 2 and "--outputs" in both.output
    empty = run("--pairs", str(tmp_path), "--outputs", str(tmp_path))
    assert empty.exit_code == 1 and empty.stderr.startswith("error: ") and "no blurry/sharp pairs" in empty.stderr


def tiny_nafnet(bias: float):
    """A 2-level width-8 NAFNet whose last conv outputs ``bias`` everywhere: output = input + bias."""
    import torch

    from deblurcli.models.registry import build

    model = build(
        "nafnet",
        {"img_channel": 3, "width": 8, "middle_blk_num": 1, "enc_blk_nums": [1, 1], "dec_blk_nums": [1, 1], "local_pool": 16},
    )
    with torch.no_grad():
        model.ending.weight.zero_()
        model.ending.bias.fill_(bias)
    return model


@pytest.mark.parametrize("bias", [0.0, 0.2])  # 0.2 = 51 levels exactly: no rounding ties
def test_tiny_model_through_weights(tmp_path: Path, dataset, bias: float) -> None:
    from deblurcli.weights import save_generator

    weights = tmp_path / "tiny.safetensors"
    save_generator(tiny_nafnet(bias), weights, {"note": "test"})
    result = run(
        "--pairs", str(tmp_path / "pairs"), "--weights", str(weights), "--device", "cpu", "--no-lpips",
        "--json", "--save-outputs", str(tmp_path / "saved"),
    )
    assert result.exit_code == 0, result.output
    report = strict_json(result.stdout)
    assert report["source"] == {"method": "auto", "weights": str(weights), "refiner": "nafnet-s-refiner"}
    for im in report["images"]:
        assert im["method"] == "network"  # auto: photos under 64 px are too small for kernel estimation
        d = dataset[im["key"]]
        expected = np.round(np.clip(d["blur"] / 255.0 + bias, 0, 1) * 255).astype(np.uint8)
        assert np.array_equal(load(tmp_path / "saved" / f"{im['key']}.png"), expected)
        assert im["output"]["psnr"] == pytest.approx(ref_psnr(expected, d["sharp"]), abs=1e-5)
        if bias == 0.0:
            assert im["output"] == im["input"]

    # The saved outputs, scored as --outputs, give exactly the same figures: they are what was scored.
    again = run("--pairs", str(tmp_path / "pairs"), "--outputs", str(tmp_path / "saved"), "--no-lpips", "--json")
    assert again.exit_code == 0
    assert strict_json(again.stdout)["mean"] == report["mean"]


def test_max_shift_forgives_a_displaced_output(tmp_path: Path) -> None:
    """A sharp copy displaced by (2, -1) px is perfect with --max-shift 2 or more, and not without it."""
    rng = np.random.default_rng(1)
    sharp = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    blur = np.clip(sharp.astype(int) + rng.integers(-30, 31, sharp.shape), 0, 255).astype(np.uint8)
    save(tmp_path / "pairs" / "blur" / "a.png", blur)
    save(tmp_path / "pairs" / "sharp" / "a.png", sharp)
    save(tmp_path / "outs" / "a.png", np.roll(sharp, (2, -1), axis=(0, 1)))
    args = ("--pairs", str(tmp_path / "pairs"), "--outputs", str(tmp_path / "outs"), "--no-lpips")

    assert "best over shifts of up to ±2 px" in run(*args, "--max-shift", "2").stdout
    shifted = run(*args, "--max-shift", "2", "--json")
    assert shifted.exit_code == 0, shifted.output
    report = strict_json(shifted.stdout)
    im = report["images"][0]
    assert report["settings"]["max_shift"] == 2
    assert (im["width"], im["height"]) == (W - 4, H - 4)
    assert im["output"]["psnr"] is None and im["output"]["ssim"] == pytest.approx(1.0, abs=1e-6)  # inf -> null
    assert im["input"]["psnr"] == pytest.approx(metrics.shift_tolerant_psnr(blur / 255.0, sharp / 255.0, 2))

    aligned = run(*args, "--json")
    assert aligned.exit_code == 0
    im = strict_json(aligned.stdout)["images"][0]
    assert im["output"]["psnr"] < 15 and im["output"]["ssim"] < 0.2
    one = run(*args, "--max-shift", "1", "--json")
    assert one.exit_code == 0
    assert strict_json(one.stdout)["images"][0]["output"]["psnr"] < 15  # a window too small to undo it

    too_big = run(*args, "--max-shift", "22")
    assert too_big.exit_code == 1 and "max shift of 22 px leaves nothing" in too_big.stderr
    assert "--max-shift" in run("--help").stdout
