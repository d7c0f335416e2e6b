"""Issue 18, "Output rules", each through the CLI: what ``-o``, ``-``, ``--format`` and ``--suffix`` may
name, what is refused before anything is made (exit 2), hints for photos left out, labelled ``--compare``
strips that are never taken for photos, and one message per mistake."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from deblurcli import runner
from deblurcli.batch import COMPARE_MARKER, FORMAT_SUFFIXES
from deblurcli.cli import deblur as deblur_command
from deblurcli.cli import group

H, W = 48, 64


def photo(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)
    return path


def deblur(*args: str | Path, model: Path, stdin: bytes | None = None) -> Result:
    argv = [str(a) for a in args] + ["--weights", str(model), "--method", "network", "--threads", "1"]
    return CliRunner().invoke(group, argv, input=stdin, catch_exceptions=False)


def everything(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# ------------------------------------------------------------------------------------- -o and one message


@pytest.mark.parametrize("suffix", [".gif", ".bmp", ".heic", ".GIF"])
def test_o_with_a_suffix_we_cannot_write_is_a_usage_error_that_makes_nothing(tmp_path: Path, model_file: Path, suffix: str) -> None:
    photo(tmp_path / "in" / "a.png")
    before = everything(tmp_path)
    result = deblur(tmp_path / "in", "-o", tmp_path / f"y{suffix}", model=model_file)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"cannot write '{suffix.lower()}' files" in result.stderr
    assert all(ext in result.stderr for ext in (".jpg", ".png", ".webp", ".tif"))  # the formats that can be written
    assert everything(tmp_path) == before  # no folder called y.gif


def test_o_avif_without_an_avif_writer_is_a_usage_error(tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import features

    photo(tmp_path / "a.png")
    real = features.check
    monkeypatch.setattr(features, "check", lambda name: False if name == "avif" else real(name))
    result = deblur(tmp_path / "a.png", "-o", tmp_path / "y.avif", model=model_file)
    assert result.exit_code == 2 and "cannot write '.avif' files" in result.stderr
    assert ".avif" not in result.stderr.split("one of", 1)[1]  # not offered as a format that can be written
    assert not (tmp_path / "y.avif").exists()


def test_an_existing_folder_with_an_image_suffix_is_still_a_folder(tmp_path: Path, model_file: Path) -> None:
    photo(tmp_path / "in" / "a.png")
    (tmp_path / "y.gif").mkdir()
    result = deblur(tmp_path / "in", "-o", tmp_path / "y.gif", model=model_file)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "y.gif" / "a.png").is_file()


@pytest.mark.parametrize("name", ["x.gif", "missing.jpg"])
def test_an_input_that_cannot_be_used_is_said_once(tmp_path: Path, model_file: Path, name: str) -> None:
    if name == "x.gif":
        Image.new("P", (8, 8)).save(tmp_path / name)
    result = deblur(tmp_path / name, "-o", tmp_path / "y.jpg", model=model_file)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / name}: "), lines  # no "-o names a file but 0 photos", no "no photos found"
    assert not (tmp_path / "y.jpg").exists()


@pytest.mark.parametrize("where", ["in/out", "in", "in/sub/deeper"])
def test_recursive_output_in_the_input_folder_is_refused(tmp_path: Path, model_file: Path, where: str) -> None:
    photo(tmp_path / "in" / "a.png")
    photo(tmp_path / "in" / "sub" / "b.png", seed=1)
    before = everything(tmp_path)
    result = deblur(tmp_path / "in", "-r", "-o", tmp_path / where, model=model_file)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert ("is the input folder" if where == "in" else "is inside the input folder") in result.stderr
    assert everything(tmp_path) == before


def test_photos_in_sub_folders_without_r_get_a_hint(tmp_path: Path, model_file: Path) -> None:
    photo(tmp_path / "in" / "2024" / "may" / "a.png")
    (tmp_path / "in" / ".hidden").mkdir()
    result = deblur(tmp_path / "in", "-o", tmp_path / "out", model=model_file)
    assert result.exit_code == 0
    assert f"hint: {tmp_path / 'in'} has photos in sub-folders, left out without -r (--recursive)" in result.stderr
    assert "no photos found" in result.stderr
    result = deblur(tmp_path / "in", "-o", tmp_path / "out", "-q", model=model_file)
    assert result.output == ""
    result = deblur(tmp_path / "in", "-r", "-o", tmp_path / "out", model=model_file)
    assert result.exit_code == 0 and "hint" not in result.stderr and (tmp_path / "out" / "2024" / "may" / "a.png").is_file()
    only_hidden = tmp_path / "only_hidden"
    photo(only_hidden / ".cache" / "a.png")
    photo(only_hidden / "top.png")
    assert "hint" not in deblur(only_hidden, "--dry-run", model=model_file).stderr  # -r would not go there either


def test_a_skip_says_that_overwrite_redoes_it_without_v(tmp_path: Path, model_file: Path) -> None:
    src = photo(tmp_path / "a.png")
    assert deblur(src, "-o", tmp_path / "b.png", model=model_file).exit_code == 0
    result = deblur(src, "-o", tmp_path / "b.png", model=model_file)
    assert result.exit_code == 0
    assert f"skipped {tmp_path / 'b.png'}: it exists (--overwrite redoes it)" in result.stderr


# ------------------------------------------------------------------------------------ --format, --suffix


def test_format_and_suffix_name_the_outputs_of_a_batch(tmp_path: Path, model_file: Path) -> None:
    photo(tmp_path / "in" / "a.png")
    photo(tmp_path / "in" / "b.jpg", seed=1)
    result = deblur(tmp_path / "in", "--format", "webp", "--suffix", "_sharp", model=model_file)
    assert result.exit_code == 0, result.output
    assert everything(tmp_path / "in_sharp") == ["a.webp", "b.webp"]  # the folder beside takes the suffix
    with Image.open(tmp_path / "in_sharp" / "a.webp") as im:
        assert im.format == "WEBP" and im.size == (W, H)
    result = deblur(tmp_path / "in", "-o", tmp_path / "out", "--format", "tif", "--suffix", "_v2", model=model_file)
    assert result.exit_code == 0 and everything(tmp_path / "out") == ["a_v2.tif", "b_v2.tif"]
    with Image.open(tmp_path / "out" / "b_v2.tif") as im:
        assert im.format == "TIFF"
    files = [tmp_path / "in" / "a.png", tmp_path / "in" / "b.jpg"]
    assert deblur(*files, "--format", "png", model=model_file).exit_code == 0
    assert everything(tmp_path / "in") == ["a.png", "a_deblurred.png", "b.jpg", "b_deblurred.png"]
    # Run again over everything in the folder: b_deblurred.png is known as b.jpg's output, not a new photo.
    result = deblur(*sorted((tmp_path / "in").iterdir()), "--format", "png", "--json", model=model_file)
    assert sorted(Path(json.loads(line)["input"]).name for line in result.stdout.splitlines()) == ["a.png", "b.jpg"]


def test_format_choices_are_the_formats_batch_names(tmp_path: Path) -> None:
    assert sorted(deblur_command.FORMATS) == sorted(FORMAT_SUFFIXES)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{in}/a.png", "-o", "{tmp}/x.jpg", "--format", "png"], "disagree"),
        (["{in}/a.png", "--in-place", "--format", "png"], "--in-place keeps"),
        (["{in}/a.png", "--in-place", "--suffix", "_x"], "--in-place keeps"),
        (["{in}/a.png", "--suffix", "sub/x"], "cannot hold '/'"),
        (["{in}/a.png", "--suffix", ""], "would overwrite its input"),
        (["{in}/a.png", "-o", "{tmp}/x.png", "--suffix", "_x"], "--suffix names the outputs of a batch"),
        (["{in}/a.png", "-o", "-", "--suffix", "_x"], "--suffix names the outputs of a batch"),
        (["{in}/a.png", "--format", "gif"], "'gif' is not one of"),
    ],
)
def test_format_and_suffix_mistakes_are_usage_errors(tmp_path: Path, model_file: Path, args: list[str], message: str) -> None:
    photo(tmp_path / "in" / "a.png")
    before = everything(tmp_path)
    result = deblur(*[a.format(tmp=tmp_path, **{"in": tmp_path / "in"}) for a in args], model=model_file)
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert everything(tmp_path) == before


def test_format_agreeing_with_o_is_fine(tmp_path: Path, model_file: Path) -> None:
    src = photo(tmp_path / "a.png")
    result = deblur(src, "-o", tmp_path / "x.jpeg", "--format", "jpg", model=model_file)
    assert result.exit_code == 0 and (tmp_path / "x.jpeg").is_file()


# ---------------------------------------------------------------------------------- stdin (-) and -o -


def test_stdin_to_stdout_keeps_the_pixels_and_takes_the_format_from_format(tmp_path: Path, model_file: Path) -> None:
    src = photo(tmp_path / "a.png")
    reference = deblur(src, "-o", tmp_path / "ref.png", model=model_file)
    assert reference.exit_code == 0
    result = deblur("-", "-o", "-", "--format", "png", model=model_file, stdin=src.read_bytes())
    assert result.exit_code == 0, result.stderr
    with Image.open(io.BytesIO(result.stdout_bytes)) as im, Image.open(tmp_path / "ref.png") as ref:
        assert im.format == "PNG" and np.array_equal(np.asarray(im), np.asarray(ref))  # the photo, and only it
    assert "done 1" in result.stderr
    assert sorted(tmp_path.iterdir()) == [src, tmp_path / "ref.png"]  # nothing else written, no temporary file left


def test_o_dash_is_jpeg_by_default_and_stdin_alone_is_a_filter(tmp_path: Path, model_file: Path) -> None:
    src = photo(tmp_path / "a.png")
    for args, stdin in (([src, "-o", "-"], None), (["-"], src.read_bytes())):
        result = deblur(*args, model=model_file, stdin=stdin)
        assert result.exit_code == 0, result.stderr
        with Image.open(io.BytesIO(result.stdout_bytes)) as im:
            assert im.format == "JPEG" and im.size == (W, H)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # nothing written beside


def test_stdin_to_a_named_file_and_errors_name_it_dash(tmp_path: Path, model_file: Path) -> None:
    src = photo(tmp_path / "a.png")
    result = deblur("-", "-o", tmp_path / "sharp.tif", model=model_file, stdin=src.read_bytes())
    assert result.exit_code == 0 and result.stdout == f"{tmp_path / 'sharp.tif'}\n"
    with Image.open(tmp_path / "sharp.tif") as im:
        assert im.format == "TIFF" and im.size == (W, H)
    result = deblur("-", "-o", tmp_path / "bad.png", model=model_file, stdin=b"not a photo at all")
    assert result.exit_code == 1 and result.stderr.startswith("error: -: ") and "Traceback" not in result.output
    assert not (tmp_path / "bad.png").exists() and result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-", "{in}/a.png"], "cannot be combined with other inputs"),
        (["{in}/a.png", "{in}/b.png", "-o", "-"], "one photo"),
        (["{in}", "-o", "-"], "one photo"),
        (["{in}/a.png", "-o", "-", "--json"], "--json"),
        (["{in}/a.png", "-o", "-", "--compare"], "--compare"),
        (["-", "-o", "{tmp}/out"], "-o FILE"),
        (["-", "--in-place"], "--in-place"),
    ],
)
def test_stream_mistakes_are_usage_errors(tmp_path: Path, model_file: Path, args: list[str], message: str) -> None:
    photo(tmp_path / "in" / "a.png")
    photo(tmp_path / "in" / "b.png", seed=1)
    before = everything(tmp_path)
    argv = [a.format(tmp=tmp_path, **{"in": tmp_path / "in"}) for a in args]
    result = deblur(*argv, model=model_file, stdin=(tmp_path / "in" / "a.png").read_bytes())
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert result.stdout == "" and everything(tmp_path) == before


# ------------------------------------------------------------------------------------- --compare strips


def test_compare_strips_are_labelled_and_never_taken_for_photos(tmp_path: Path, model_file: Path) -> None:
    photo(tmp_path / "in" / "a.png")
    photo(tmp_path / "in" / "holiday_compare.jpg", seed=1)  # the user's own photo with such a name
    result = deblur(tmp_path / "in", "-o", tmp_path / "out", "--compare", model=model_file)
    assert result.exit_code == 0, result.output
    strip_path = tmp_path / "out" / "a_compare.jpg"
    band = runner.label_band_height(H)
    with Image.open(strip_path) as im:
        assert im.info["comment"] == COMPARE_MARKER
        strip = np.asarray(im.convert("RGB")).astype(float)
    assert strip.shape == (H + band, 2 * W, 3)
    drawn = strip[:band]
    for labels in (("input", "output: network"), ("input", "output: kernel 9 px")):
        expected = runner._label_band(H, W, W, labels).astype(float)
        if labels[1] == "output: network":
            right = np.abs(drawn - expected).mean()
        else:
            wrong = np.abs(drawn - expected).mean()
    assert right < wrong / 2  # the band says input | output: network, not another method
    assert drawn[:, :W].max() > 200 and drawn[:, W:].max() > 200  # a label over each half
    # Now deblur the output folder: the strip is not a photo; the user's look-alike is.
    result = deblur(tmp_path / "out", "-o", tmp_path / "again", "--json", model=model_file)
    inputs = sorted(Path(json.loads(line)["input"]).name for line in result.stdout.splitlines())
    assert inputs == ["a.png", "holiday_compare.jpg"]
    assert everything(tmp_path / "again") == ["a.png", "holiday_compare.jpg"]
    result = deblur(strip_path, "-o", tmp_path / "named.jpg", model=model_file)  # named on the command line
    assert result.exit_code == 0 and "a --compare strip made by deblurcli, not a photo" in result.stderr
    assert not (tmp_path / "named.jpg").exists()


def test_a_strip_made_for_a_skipped_photo_is_labelled_too(tmp_path: Path, model_file: Path) -> None:
    src = photo(tmp_path / "a.png")
    assert deblur(src, "-o", tmp_path / "out", model=model_file).exit_code == 0
    result = deblur(src, "-o", tmp_path / "out", "--compare", model=model_file)
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out" / "a_compare.jpg") as im:
        assert im.info["comment"] == COMPARE_MARKER and im.size == (2 * W, H + runner.label_band_height(H))


def test_o_dash_whose_reader_is_gone_is_a_failure_not_a_traceback(tmp_path: Path, model_file: Path) -> None:
    """``deblur a.png -o - | head -c 0``: the photo did not arrive, so the file failed (exit 1), in one line."""
    import subprocess
    import sys

    src = photo(tmp_path / "a.png")
    argv = [sys.executable, "-m", "deblurcli", str(src), "-o", "-", "--weights", str(model_file), "--method", "network", "--threads", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before the photo is written
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr.decode()
    assert f"error: {src}: stdout was closed before the whole photo was written" in stderr.decode()
    assert b"Traceback" not in stderr and b"Exception ignored" not in stderr
