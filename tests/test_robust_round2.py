"""Issue 19, reliability round 2: the red-team cases about outputs, claims, names and in-place writes.

Each test builds its own small tree and runs the real ``deblur`` command in process (a tiny NAFNet), or
the library function the case is about. Weights and Hub-cache cases are in test_hub.py and
test_weights.py; interrupts and signals in test_robust_interrupts.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from deblurcli.atomic import CLAIM_TAG, NAME_MAX, claim_output, hidden_name, is_temp_file
from deblurcli.batch import Job
from deblurcli.cli import group
from deblurcli.runner import CLAIMED_BY_OTHER_RUN, WRITTEN_BY_OTHER_RUN, Settings, claim_job, stamp


def photo(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
    return path


def deblur(*args: str | Path, model: Path) -> Result:
    return CliRunner().invoke(group, [*map(str, args), "--weights", str(model), "--threads", "1"], catch_exceptions=False)


def records(result: Result) -> dict[str, dict[str, object]]:
    """``--json`` lines by input file name."""
    return {Path(r["input"]).name: r for r in map(json.loads, result.stdout.splitlines())}


def everything(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# ------------------------------------------------------------------------- 21: option and output checks


def test_strength_nan_is_a_usage_error(tmp_path: Path, model_file: Path) -> None:
    src = photo(tmp_path / "a.png")
    result = deblur(src, "-o", tmp_path / "out", "--strength", "nan", model=model_file)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == "error: --strength: strength must be between 0 and 1, got nan"
    assert not (tmp_path / "out").exists()


def test_broken_symlink_at_the_output_is_named_as_such_before_any_work(tmp_path: Path, model_file: Path) -> None:
    photo(tmp_path / "in" / "a.png")
    photo(tmp_path / "in" / "b.png", seed=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").symlink_to(tmp_path / "nowhere.png")
    result = deblur(tmp_path / "in", "-o", out, "--json", model=model_file)
    assert result.exit_code == 1
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "'a.png' is a broken symbolic link (to '" in line and "already exists" not in line
    assert records(result)["a.png"]["status"] == "failed" and records(result)["b.png"]["status"] == "done"
    assert (out / "a.png").is_symlink() and not (tmp_path / "nowhere.png").exists()
    # --overwrite replaces the link itself (never writing through it)
    result = deblur(tmp_path / "in", "-o", out, "--overwrite", model=model_file)
    assert result.exit_code == 0 and not (out / "a.png").is_symlink() and not (tmp_path / "nowhere.png").exists()


# ------------------------------------------------------------------------------------ 22: claims


def test_a_claim_is_exclusive_while_held_and_free_when_its_holder_is_gone(tmp_path: Path) -> None:
    out = tmp_path / "out" / "a.png"
    out.parent.mkdir()
    first = claim_output(out)
    assert first is not None and claim_output(out) is None
    [claim_file] = [p for p in out.parent.iterdir()]
    assert claim_file.name == ".a.png" + CLAIM_TAG and is_temp_file(claim_file.name)
    first.release()
    assert list(out.parent.iterdir()) == []
    # A claim file nobody holds (its run was killed) is taken over, and removed on release.
    claim_file.write_bytes(b"")
    taken = claim_output(out)
    assert taken is not None
    taken.release()
    assert list(out.parent.iterdir()) == []
    # Folders made for a claim go with it when nothing was written into them.
    deeper = tmp_path / "new" / "sub" / "b.png"
    held = claim_output(deeper)
    assert held is not None and deeper.parent.is_dir()
    held.release()
    assert not (tmp_path / "new").exists()


def test_a_photo_another_run_is_working_on_is_skipped_not_redone(tmp_path: Path, model_file: Path) -> None:
    for i in range(3):
        photo(tmp_path / "in" / f"{i}.png", seed=i)
    out = tmp_path / "out"
    other_run = claim_output(out / "1.png")
    assert other_run is not None
    try:
        result = deblur(tmp_path / "in", "-o", out, "--json", model=model_file)
    finally:
        other_run.release()
    assert result.exit_code == 0, result.output
    assert {name: r["status"] for name, r in records(result).items()} == {"0.png": "done", "1.png": "skipped", "2.png": "done"}
    assert records(result)["1.png"]["reason"] == CLAIMED_BY_OTHER_RUN
    assert everything(out) == ["0.png", "2.png"]


def test_a_photo_that_fails_leaves_no_folder_made_for_its_claim(tmp_path: Path, model_file: Path) -> None:
    photo(tmp_path / "in" / "good.png")
    (tmp_path / "in" / "deep" / "er").mkdir(parents=True)
    (tmp_path / "in" / "deep" / "er" / "bad.png").write_bytes(b"not a photo")
    result = deblur(tmp_path / "in", "-r", "-o", tmp_path / "out", model=model_file)
    assert result.exit_code == 1
    assert everything(tmp_path / "out") == ["good.png"]


def test_in_place_photo_rewritten_by_another_run_is_not_deblurred_twice(tmp_path: Path) -> None:
    src = photo(tmp_path / "a.png")
    job = Job(src, src, Path("a.png"))
    before = stamp(src)
    photo(tmp_path / "new.png", seed=1).replace(src)  # what another --in-place run's write does
    held, outcome = claim_job(job, Settings(in_place=True), before)
    assert held is None and outcome is not None
    assert (outcome.status, outcome.reason) == ("skipped", WRITTEN_BY_OTHER_RUN)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ----------------------------------------------------------------------------------- 10: long names


def test_longest_file_names_get_short_working_files(tmp_path: Path, model_file: Path) -> None:
    name = "é" * 121 + ".png"  # 246 bytes in UTF-8; its compare strip's name has 254
    assert len(os.fsencode(name)) == 246
    src = photo(tmp_path / "in" / name)
    out = tmp_path / "out"
    result = deblur(src.parent, "-o", out, "--compare", model=model_file)
    assert result.exit_code == 0, result.output
    assert everything(out) == sorted([name, "é" * 121 + "_compare.jpg"])
    for tag, extra in ((".deblurcli-tmp-", 8), (CLAIM_TAG, 0)):
        hidden = hidden_name(name, tag, extra)
        assert len(os.fsencode(hidden)) + extra <= NAME_MAX and is_temp_file(hidden + "x" * extra)
    assert hidden_name(name, CLAIM_TAG) == hidden_name(name, CLAIM_TAG)  # two runs agree on the claim


# ---------------------------------------------------------------------------------- 8: compare strips


def test_compare_keeps_an_existing_strip_without_overwrite(tmp_path: Path, model_file: Path) -> None:
    src = photo(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_compare.jpg").write_bytes(b"the user's own file")
    result = deblur(src, "-o", out, "--compare", model=model_file)
    assert result.exit_code == 0, result.output
    assert (out / "a_compare.jpg").read_bytes() == b"the user's own file"
    assert "compare strip a_compare.jpg exists and was kept (--overwrite replaces it)" in result.stderr
    assert (out / "a.png").is_file()
    result = deblur(src, "-o", out, "--compare", "--overwrite", model=model_file)
    assert result.exit_code == 0 and (out / "a_compare.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_in_place_compare_never_writes_over_an_input(tmp_path: Path, model_file: Path) -> None:
    photo(tmp_path / "in" / "a.png")
    photo(tmp_path / "in" / "a_compare.jpg", seed=1)
    before = {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()}
    for extra in ([], ["--overwrite"]):
        result = deblur(tmp_path / "in", "--in-place", "--compare", *extra, model=model_file)
        assert result.exit_code == 2, result.output
        assert "--compare would write" in result.stderr and "over the input" in result.stderr
        assert {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()} == before


def test_a_compare_strip_landing_on_another_output_is_a_plan_error(tmp_path: Path, model_file: Path) -> None:
    photo(tmp_path / "in" / "a.png")
    photo(tmp_path / "in" / "a_compare.png", seed=1)
    photo(tmp_path / "in" / "b.jpg", seed=2)
    photo(tmp_path / "in" / "b_compare.jpg", seed=3)
    result = deblur(tmp_path / "in", "-o", tmp_path / "out", "--compare", model=model_file)
    assert result.exit_code == 2 and "b_compare.jpg" in result.stderr and "which is the output of" in result.stderr
    assert not (tmp_path / "out").exists()


# -------------------------------------------------------------------------------------- 15: in place


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="changing a file's owner needs root")
def test_in_place_as_root_keeps_owner_and_mode(tmp_path: Path, model_file: Path) -> None:
    src = photo(tmp_path / "in" / "a.png")
    os.chown(src, 4321, 4322)
    src.chmod(0o640)
    result = deblur(src, "--in-place", model=model_file)
    assert result.exit_code == 0, result.output
    st = src.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (4321, 4322, 0o640)


def test_in_place_refuses_hard_links_and_symlinks_and_leaves_them_intact(tmp_path: Path, model_file: Path) -> None:
    folder = tmp_path / "in"
    plain = photo(folder / "plain.png")
    linked = photo(folder / "linked.png", seed=1)
    os.link(linked, tmp_path / "other-name.png")
    target = photo(tmp_path / "elsewhere" / "real.png", seed=2)
    (folder / "pointer.png").symlink_to(target)
    before = {p: p.read_bytes() for p in (linked, target)}
    plain_before = plain.read_bytes()
    result = deblur(folder, "--in-place", "--json", model=model_file)
    assert result.exit_code == 1
    statuses = {name: (r["status"], r["reason"]) for name, r in records(result).items()}
    assert statuses["plain.png"] == ("done", None)
    assert statuses["linked.png"][0] == "failed" and "2 hard links" in str(statuses["linked.png"][1])
    assert statuses["pointer.png"][0] == "failed" and "symbolic link" in str(statuses["pointer.png"][1])
    assert (folder / "pointer.png").is_symlink() and os.path.samefile(linked, tmp_path / "other-name.png")
    assert {p: p.read_bytes() for p in (linked, target)} == before
    assert plain.read_bytes() != plain_before


# ---------------------------------------------------------------------------------- 17: error lines


def test_a_newline_in_a_file_name_cannot_forge_lines(tmp_path: Path, model_file: Path) -> None:
    folder = tmp_path / "in"
    photo(folder / "good\nerror: forged.png")
    (folder / "bad\nerror: forged too.png").write_bytes(b"not a photo")
    result = deblur(folder, "-o", tmp_path / "out", model=model_file)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bad\\nerror: forged too.png" in errors[0], result.stderr
    [listed] = result.stdout.splitlines()
    assert listed.endswith("good\\nerror: forged.png")
    assert (tmp_path / "out" / "good\nerror: forged.png").is_file()


def test_libtiff_prints_nothing_of_its_own(tmp_path: Path, model_file: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A corrupt LZW strip: libtiff's own "tempfile.tif: Using code not yet in table." went to stderr raw."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "TIFF", compression="tiff_lzw")
    data = bytearray(buffer.getvalue())
    data[200:260] = b"\xff" * 60
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "corrupt.tif").write_bytes(bytes(data))
    capfd.readouterr()
    result = deblur(tmp_path / "in", "-o", tmp_path / "out", model=model_file)
    raw = capfd.readouterr().err
    assert result.exit_code == 1 and "error:" in result.stderr and "corrupt.tif" in result.stderr
    assert raw == "", raw


def test_resume_from_a_checkpoint_with_code_objects_is_one_line(tmp_path: Path) -> None:
    import argparse

    from deblurcli.errors import WeightsError
    from deblurcli.train.checkpoint import load_checkpoint

    path = tmp_path / "last.pt"
    torch.save({"format": "x", "args": argparse.Namespace(a=1)}, path)
    with pytest.raises(WeightsError, match="refused to resume from it") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and "weights_only=False" not in str(info.value)
    path.write_bytes(b"PK\x03\x04 not a zip at all" * 10)
    with pytest.raises(WeightsError, match="not a readable training checkpoint") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------- 19: disk full on a strip


def test_disk_full_on_the_compare_strip_keeps_the_photo_and_a_rerun_makes_the_strip(
    tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deblurcli import runner
    from deblurcli.errors import DiskFullError

    src = photo(tmp_path / "a.png")
    out = tmp_path / "out"

    def full(path: Path, *_args: object, **_kwargs: object) -> None:
        raise DiskFullError(f"cannot write '{path.name}': no space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(runner, "write_compare", full)
        result = deblur(src, "-o", out, "--compare", "--json", model=model_file)
    assert result.exit_code == 0, result.output
    assert records(result)["a.png"]["status"] == "done"  # it was written: not reported failed
    assert "compare strip not written: cannot write 'a_compare.jpg': no space left on device" in result.stderr
    assert everything(out) == ["a.png"]
    result = deblur(src, "-o", out, "--compare", "--json", model=model_file)
    assert result.exit_code == 0, result.output
    record = records(result)["a.png"]
    assert record["status"] == "skipped" and record["compare"] == str(out / "a_compare.jpg")
    assert "compare strip was made" in str(record["reason"])
    with Image.open(out / "a_compare.jpg") as strip:
        assert strip.size == (48, 20 + runner.label_band_height(20))  # with its labels' band
