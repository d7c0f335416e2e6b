"""``deblur PATH...`` end to end with a tiny model: outputs, naming, skips, errors, Ctrl-C, disk full, two runs.

The tiny model is a real NAFNet saved with ``weights.save_generator`` and passed with ``--weights``, so the
whole path (weights file -> registry -> engine -> photo I/O) is exercised. Most tests run the command in
process (CliRunner, fast); Ctrl-C and concurrency also run real processes, since that is where they matter.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from deblurcli import weights
from deblurcli.cli import group
from deblurcli.devices import resolve_precision
from deblurcli.engine import deblur_array, prepare_model
from deblurcli.models.nafnet import NAFNet
from deblurcli.atomic import TEMP_TAG
from deblurcli.runner import label_band_height
from deblurcli.tiling import TilePlan

H, W = 48, 64


def tiny_nafnet() -> NAFNet:
    torch.manual_seed(0)
    net = NAFNet(width=8, enc_blk_nums=[1], middle_blk_num=1, dec_blk_nums=[1], local_pool=16)
    for name, p in net.named_parameters():  # not the identity
        if name.endswith(("beta", "gamma")):
            torch.nn.init.normal_(p, std=0.5)
    return net.eval()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    weights.save_generator(tiny_nafnet(), path, {"name": "tiny"})
    return path


def photo(path: Path, seed: int = 0, size: tuple[int, int] = (H, W)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def expected(path: Path) -> np.ndarray:
    """What the CLI must write for a PNG input: the engine's output, rounded to 8 bits."""
    precision = resolve_precision("auto", torch.device("cpu"), inference=True)  # the CLI's --precision auto
    model = prepare_model(tiny_nafnet(), torch.device("cpu"))  # as the CLI's Session prepares it
    out = deblur_array(model, pixels(path).astype(np.float32) / 255, device="cpu", plan=TilePlan(0), precision=precision)
    return np.rint(np.clip(out, 0, 1) * 255).astype(np.uint8)


def deblur(*args: str | Path) -> Result:
    return CliRunner().invoke(group, [str(a) for a in args], catch_exceptions=False)


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMP_TAG in p.name or (p.is_file() and p.stat().st_size == 0)]


def test_one_photo_to_named_output(tmp_path: Path, model_file: Path) -> None:
    src = photo(tmp_path / "in.png")
    result = deblur(src, "-o", tmp_path / "sharp.png", "--weights", model_file)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{tmp_path / 'sharp.png'}\n"  # results only on stdout
    assert "done 1, skipped 0, failed 0" in result.stderr and "MP/s" in result.stderr
    out = pixels(tmp_path / "sharp.png")
    assert np.array_equal(out, expected(src))
    assert not np.array_equal(out, pixels(src))


def test_default_name_beside_input_strength_zero_and_quiet(tmp_path: Path, model_file: Path) -> None:
    src = photo(tmp_path / "pic.png")
    result = deblur(src, "--weights", model_file, "--strength", "0", "-q")
    assert result.exit_code == 0 and result.output == ""
    assert np.array_equal(pixels(tmp_path / "pic_deblurred.png"), pixels(src))


def test_output_folder_inside_the_input_folder_is_not_reprocessed(tmp_path: Path, model_file: Path) -> None:
    """Without -r the scan stays at the top of in/, so in/out/ is never an input (with -r it is refused:
    tests/test_cli_output_rules.py)."""
    photo(tmp_path / "in" / "a.png")
    for _ in range(2):
        result = deblur(tmp_path / "in", "-o", tmp_path / "in" / "out", "--weights", model_file, "--json")
        assert result.exit_code == 0
    assert [json.loads(line)["input"] for line in result.stdout.splitlines()] == [str(tmp_path / "in" / "a.png")]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")) == ["in/a.png", "in/out/a.png"]


def test_folder_tree_with_a_bad_file(tmp_path: Path, model_file: Path) -> None:
    photo(tmp_path / "in" / "a.png")
    photo(tmp_path / "in" / "sub" / "b.jpg", seed=1)
    (tmp_path / "in" / "broken.jpg").write_bytes(b"this is text, not a JPEG")
    result = deblur(tmp_path / "in", "--recursive", "-o", tmp_path / "out", "--weights", model_file, "--compare")
    assert result.exit_code == 1
    assert (tmp_path / "out" / "a.png").is_file() and (tmp_path / "out" / "sub" / "b.jpg").is_file()
    assert not (tmp_path / "out" / "broken.jpg").exists()
    bad = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert bad == [f"error: {tmp_path / 'in' / 'broken.jpg'}: " + bad[0].split(": ", 2)[2]]  # absolute path, one line
    assert "Traceback" not in result.output and "failed 1" in result.stderr
    compare = pixels(tmp_path / "out" / "a_compare.jpg")
    assert compare.shape == (H + label_band_height(H), 2 * W, 3)  # the labels' band above input | output


def test_existing_outputs_are_skipped_unless_overwrite(tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        photo(tmp_path / "in" / f"{i}.png", seed=i)
    loads: list[object] = []
    real_load = weights.load_generator
    # the deblurring model's loads (auto loads the catalogue's refiner beside it)
    monkeypatch.setattr(weights, "load_generator", lambda *a, **k: (k.get("weights") == model_file and loads.append(a)) or real_load(*a, **k))
    assert deblur(tmp_path / "in", "-o", tmp_path / "out", "--weights", model_file).exit_code == 0
    assert len(loads) == 1  # once per run, not per file
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    result = deblur(tmp_path / "in", "-o", tmp_path / "out", "--weights", model_file, "--json")
    assert result.exit_code == 0 and len(loads) == 1  # nothing to do: the model is not even loaded
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["status"] for r in records] == ["skipped"] * 3
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == before
    result = deblur(tmp_path / "in", "-o", tmp_path / "out", "--weights", model_file, "--overwrite", "--json")
    assert [json.loads(line)["status"] for line in result.stdout.splitlines()] == ["done"] * 3


def test_dry_run_writes_nothing(tmp_path: Path, model_file: Path) -> None:
    photo(tmp_path / "in" / "a.png")
    result = deblur(tmp_path / "in", "-o", tmp_path / "out", "--weights", model_file, "--dry-run")
    assert result.exit_code == 0
    assert result.stdout == f"write: {tmp_path / 'in' / 'a.png'} -> {tmp_path / 'out' / 'a.png'}\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "at least one photo"),
        (["{in}", "-o", "{tmp}/x", "--in-place"], "--in-place"),
        (["{in}", "--tile", "16"], "tile 16 is too small"),
        (["{in}", "--tile", "big"], "expected 'auto'"),
        (["{in}", "--strength", "2"], "0.0<=x<=1.0"),
        (["{in}/a.png", "{tmp}/other/a.png", "-o", "{tmp}/out"], "would both be written"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, model_file: Path, args: list[str], message: str) -> None:
    photo(tmp_path / "in" / "a.png")
    photo(tmp_path / "other" / "a.png")
    argv = [a.format(tmp=tmp_path, **{"in": tmp_path / "in"}) for a in args]
    result = deblur(*argv, "--weights", model_file)
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "in_deblurred").exists()


def test_absent_device_is_an_error_not_a_fallback(tmp_path: Path, model_file: Path) -> None:
    photo(tmp_path / "a.png")
    device = "cuda:9" if torch.cuda.is_available() else "cuda"
    result = deblur(tmp_path / "a.png", "--weights", model_file, "--device", device)
    assert result.exit_code == 2 and f"device '{device}'" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "a_deblurred.png").exists()


def test_verbose_says_which_device(tmp_path: Path, model_file: Path) -> None:
    photo(tmp_path / "a.png")
    result = deblur(tmp_path / "a.png", "--weights", model_file, "-v", "--threads", "1")
    picked = str(resolve_precision("auto", torch.device("cpu"), inference=True)).replace("torch.", "")
    assert "device cpu (auto)" in result.stderr and f"precision {picked}" in result.stderr


def test_disk_full_stops_the_batch_without_partial_files(tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        photo(tmp_path / "in" / f"{i}.png", seed=i)
    (tmp_path / "out").mkdir()

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    result = deblur(tmp_path / "in", "-o", tmp_path / "out", "--weights", model_file)
    assert result.exit_code == 1
    assert "no space left on device" in result.stderr and "disk full: stopped, 2 photos not processed" in result.stderr
    assert list((tmp_path / "out").iterdir()) == []  # no output, no temporary file


def test_ctrl_c_in_process_stops_cleanly_and_rerun_finishes(tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(4):
        photo(tmp_path / "in" / f"{i}.png", seed=i)
    real_load = weights.load_generator
    calls = {"n": 0}

    def interrupting_load(*a: object, **k: object) -> torch.nn.Module:
        model = real_load(*a, **k)
        forward = model.forward
        # A whole photo reaches the network mirrored by the tile margin and rounded up to the size multiple.
        pad, mult = 2 * model.tile_margin, model.size_multiple
        whole = (-(-(H + pad) // mult) * mult, -(-(W + pad) // mult) * mult)

        def forward_then_interrupt(x: torch.Tensor) -> torch.Tensor:
            calls["n"] += x.shape[-2:] == whole  # photos, not the tile planner's probe
            if calls["n"] == 3:  # Ctrl-C while the third photo is being deblurred
                raise KeyboardInterrupt
            return forward(x)

        model.forward = forward_then_interrupt  # type: ignore[method-assign]
        return model

    monkeypatch.setattr(weights, "load_generator", interrupting_load)
    # fp32: auto may pick bf16, whose per-run speed check adds forwards that this count must not see
    result = deblur(tmp_path / "in", "-o", tmp_path / "out", "--weights", model_file, "--precision", "fp32")
    assert result.exit_code == 130
    assert "interrupted: 2 photos finished" in result.stderr and "2 not finished" in result.stderr
    assert f"finished: {tmp_path / 'in' / '1.png'} -> {tmp_path / 'out' / '1.png'}" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png"]
    monkeypatch.setattr(weights, "load_generator", real_load)
    result = deblur(tmp_path / "in", "-o", tmp_path / "out", "--weights", model_file)
    assert result.exit_code == 0 and "done 2, skipped 2, failed 0" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png", "2.png", "3.png"]


def test_ctrl_c_during_the_write_leaves_no_partial_file(tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photo(tmp_path / "in" / "a.png")

    def interrupted(_fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    result = deblur(tmp_path / "in", "-o", tmp_path / "out", "--weights", model_file)
    assert result.exit_code == 130 and "0 photos finished" in result.stderr
    assert not (tmp_path / "out").exists()  # not even the folder made for its claim


def test_output_written_meanwhile_by_another_run_is_kept_and_skipped(tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deblurcli import photo as photo_module

    src = photo(tmp_path / "in" / "a.png")
    dst = tmp_path / "out" / "a.png"
    real_read = photo_module.read_photo

    def read_while_other_run_finishes(path: Path, **kwargs: bool) -> photo_module.Photo:
        result = real_read(path, **kwargs)
        photo(dst, seed=99)  # the other process renames its finished output into place now
        return result

    monkeypatch.setattr(photo_module, "read_photo", read_while_other_run_finishes)
    before = pixels(photo(tmp_path / "ref.png", seed=99))
    result = deblur(src, "-o", tmp_path / "out", "--weights", model_file, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["status"] == "skipped"
    assert np.array_equal(pixels(dst), before)  # not clobbered
    assert leftovers(tmp_path / "out") == []


def _cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "deblurcli", *map(str, args), "--threads", "1"]


def test_sigint_to_a_real_process(tmp_path: Path, model_file: Path) -> None:
    for i in range(40):
        photo(tmp_path / "in" / f"{i:02d}.png", seed=i, size=(160, 160))
    out = tmp_path / "out"
    proc = subprocess.Popen(_cli(tmp_path / "in", "-o", out, "--weights", model_file), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300  # generous: a starved CI machine must not send SIGINT before the first file
    while not (out.is_dir() and any(p.suffix == ".png" for p in out.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    finished = sorted(out.glob("*.png"))
    if proc.returncode == 0:  # the machine was fast enough to finish before the signal: nothing to check
        pytest.skip("the batch finished before SIGINT arrived")
    assert proc.returncode == 130, stderr.decode()
    assert b"Traceback" not in stderr and b"interrupted:" in stderr
    reported = sorted(Path(line) for line in stdout.decode().splitlines())
    # Every reported output exists; at most one more (renamed into place just before the signal) may too.
    assert set(reported) <= set(finished) and len(finished) - len(reported) <= 1 and len(finished) < 40
    assert leftovers(out) == []
    for path in finished:
        assert pixels(path).shape == (160, 160, 3)  # complete, decodable files


def test_two_processes_on_the_same_folder(tmp_path: Path, model_file: Path) -> None:
    for i in range(12):
        photo(tmp_path / "in" / f"{i:02d}.png", seed=i)
    out = tmp_path / "out"
    argv = _cli(tmp_path / "in", "-o", out, "--weights", model_file, "--json")
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (_, stderr) in zip(procs, results):
        assert proc.returncode == 0, stderr.decode()
    statuses = [json.loads(line)["status"] for stdout, _ in results for line in stdout.decode().splitlines()]
    assert statuses.count("done") == 12 and set(statuses) <= {"done", "skipped"}  # each photo deblurred once
    assert leftovers(out) == []
    assert sorted(p.name for p in out.iterdir()) == [f"{i:02d}.png" for i in range(12)]
    for i in range(12):
        assert np.array_equal(pixels(out / f"{i:02d}.png"), expected(tmp_path / "in" / f"{i:02d}.png"))


def test_shards_of_a_job_array_cover_the_folder_exactly_once(tmp_path: Path, model_file: Path) -> None:
    for i in range(7):
        photo(tmp_path / "in" / ("sub" if i % 2 else "") / f"{i}.png", seed=i)
    seen: list[str] = []
    for index in (1, 2, 3):
        result = deblur(tmp_path / "in", "-r", "-o", tmp_path / "out", "--weights", model_file, "--json", "--shard", f"{index}/3")
        assert result.exit_code == 0, result.output
        seen += [json.loads(line)["input"] for line in result.stdout.splitlines()]
    assert sorted(seen) == sorted(str(p) for p in (tmp_path / "in").rglob("*.png"))  # each once
    assert sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*.png")) == sorted(
        p.relative_to(tmp_path / "in") for p in (tmp_path / "in").rglob("*.png"))


def test_empty_shard_exits_0_with_a_note(tmp_path: Path, model_file: Path) -> None:
    from deblurcli.batch import shard_of

    src = photo(tmp_path / "in" / "only.png")
    empty = 3 - shard_of("only.png", 2)  # the shard of 2 that the single photo is not in
    result = deblur(tmp_path / "in", "-o", tmp_path / "out", "--weights", model_file, "--shard", f"{empty}/2")
    assert result.exit_code == 0 and result.stdout == ""
    assert f"shard {empty}/2 has no photos (the 1 found all fall in other shards)" in result.stderr
    assert not (tmp_path / "out").exists()
    result = deblur(src, "-o", tmp_path / "out", "--weights", model_file, "--shard", f"{3 - empty}/2")
    assert result.exit_code == 0 and (tmp_path / "out" / "only.png").is_file()


@pytest.mark.parametrize("spec", ["0/4", "5/4", "2", "two/4"])
def test_bad_shard_spec_is_a_usage_error(tmp_path: Path, model_file: Path, spec: str) -> None:
    photo(tmp_path / "in" / "a.png")
    result = deblur(tmp_path / "in", "-o", tmp_path / "out", "--weights", model_file, "--shard", spec)
    assert result.exit_code == 2 and "--shard" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_json_lines_carry_model_time_and_folder_order(tmp_path: Path, model_file: Path) -> None:
    for i in range(5):
        photo(tmp_path / "in" / f"{i}.png", seed=i)
    (tmp_path / "in" / "2.png").write_bytes(b"broken")
    result = deblur(tmp_path / "in", "-o", tmp_path / "out", "--weights", model_file, "--json")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 1 and [Path(r["input"]).name for r in records] == [f"{i}.png" for i in range(5)]
    assert [r["status"] for r in records] == ["done", "done", "failed", "done", "done"]
    assert all(0 < r["model_seconds"] <= r["seconds"] for r in records if r["status"] == "done")
    for i in (0, 1, 3, 4):
        assert np.array_equal(pixels(tmp_path / "out" / f"{i}.png"), expected(tmp_path / "in" / f"{i}.png"))


def test_compile_reaches_the_engine_and_is_off_by_default(tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--compile is passed down to engine.deblur_array (stood in for: compiling takes minutes on a CPU)."""
    from deblurcli import engine

    seen: list[bool] = []

    def record(model: torch.nn.Module, rgb: np.ndarray, **kwargs: object) -> np.ndarray:
        seen.append(kwargs.get("compile", False))
        return rgb

    monkeypatch.setattr(engine, "deblur_array", record)
    photo(tmp_path / "a.png")
    assert deblur(tmp_path / "a.png", "-o", tmp_path / "x.png", "--weights", model_file, "--tile", "0").exit_code == 0
    assert deblur(tmp_path / "a.png", "-o", tmp_path / "y.png", "--weights", model_file, "--tile", "0", "--compile").exit_code == 0
    assert seen == [False, True]
