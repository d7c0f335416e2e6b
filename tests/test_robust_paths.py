"""Issue 8, paths: odd names, symlink loops, outputs inside inputs, collisions, missing and unwritable outputs.

Every case runs the real ``deblur`` command (in process) on a tree the test builds. The planning rules
themselves are unit-tested in test_batch.py; the output-folder-inside-the-input case with ``-r`` is
test_cli_deblur.py::test_output_folder_inside_the_input_folder_is_not_reprocessed (here: the same folder
reached through another spelling and through a symlink).
"""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from deblurcli.cli import group


def photo(path: Path | bytes, seed: int = 0) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    with open(path, "wb") as fh:
        Image.fromarray(pixels).save(fh, "PNG")


def deblur(*args: str | Path, model: Path) -> Result:
    return CliRunner().invoke(group, [*map(str, args), "--weights", str(model), "--threads", "1"], catch_exceptions=False)


def tree(root: Path) -> list[str]:
    """Every file and folder under ``root`` (hidden ones included), as sorted relative paths."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_unicode_and_spaces_in_folder_and_file_names(tmp_path: Path, model_file: Path) -> None:
    src = tmp_path / "été 2024" / "plage à Nice"
    photo(src / "IMG 0001 🌅.png")
    photo(src / "ζ παραλία.png", seed=1)
    out = tmp_path / "sortie déflou"
    result = deblur(src, "-o", out, "--json", model=model_file)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["input"], r["output"], r["status"]) for r in records] == [
        (str(src / "IMG 0001 🌅.png"), str(out / "IMG 0001 🌅.png"), "done"),
        (str(src / "ζ παραλία.png"), str(out / "ζ παραλία.png"), "done"),
    ]
    assert tree(out) == ["IMG 0001 🌅.png", "ζ παραλία.png"]


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="file names there must be valid Unicode")
def test_file_name_that_is_not_utf8_keeps_its_bytes(tmp_path: Path, model_file: Path) -> None:
    src = os.fsencode(tmp_path / "in") + b"/caf\xe9 \xff.png"  # Latin-1 bytes, as old cameras/zips leave
    photo(src)
    photo(tmp_path / "in" / "plain.png", seed=1)
    result = deblur(tmp_path / "in", "-o", tmp_path / "out", model=model_file)
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert sorted(os.listdir(os.fsencode(tmp_path / "out"))) == [b"caf\xe9 \xff.png", b"plain.png"]
    assert len(result.stdout.splitlines()) == 2


def test_symlink_loops_are_walked_once(tmp_path: Path, model_file: Path) -> None:
    src = tmp_path / "in"
    photo(src / "a.png")
    photo(src / "sub" / "b.png", seed=1)
    photo(tmp_path / "elsewhere" / "c.png", seed=2)
    (src / "sub" / "up").symlink_to("..", target_is_directory=True)  # in/sub/up -> in: a loop
    (src / "self").symlink_to(".", target_is_directory=True)  # in/self -> in
    (src / "sub" / "deeper").symlink_to(src / "sub", target_is_directory=True)  # a loop through an absolute link
    (src / "ext").symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # a real folder, followed once
    result = deblur(src, "-r", "-o", tmp_path / "out", "--json", model=model_file)
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 3
    assert tree(tmp_path / "out") == ["a.png", "ext", "ext/c.png", "sub", "sub/b.png"]


@pytest.mark.parametrize("spelling", ["dotted", "symlink"])
def test_output_inside_the_input_reached_by_another_spelling_is_not_reprocessed(
    tmp_path: Path, model_file: Path, spelling: str
) -> None:
    """With -r such an output folder is refused whatever its spelling; without -r it is not walked into."""
    src = tmp_path / "in"
    photo(src / "a.png")
    (src / "out").mkdir()
    if spelling == "symlink":
        output: Path | str = tmp_path / "alias"
        (tmp_path / "alias").symlink_to(src / "out", target_is_directory=True)
    else:
        output = f"{src}/./out/../out/"
    result = deblur(src, "-r", "-o", output, "--json", model=model_file)
    assert result.exit_code == 2 and "is inside the input folder" in result.stderr
    assert tree(src) == ["a.png", "out"]
    for _ in range(2):
        result = deblur(src, "-o", output, "--json", "--overwrite", model=model_file)
        assert result.exit_code == 0, result.output
        assert [json.loads(line)["input"] for line in result.stdout.splitlines()] == [str(src / "a.png")]
    assert tree(src) == ["a.png", "out", "out/a.png"]


@pytest.mark.parametrize(
    "layout",
    [
        ["one/x.png", "two/x.png"],  # two input folders, one output folder
        ["in/Photo.png", "in/photo.png"],  # differ only by case: the same file on macOS/Windows
    ],
)
def test_colliding_outputs_are_an_error_before_anything_is_written(
    tmp_path: Path, model_file: Path, layout: list[str]
) -> None:
    for k, rel in enumerate(layout):
        photo(tmp_path / rel, seed=k)
    photo(tmp_path / Path(layout[0]).parent / "0 first.png", seed=9)  # planned before the clash
    roots = sorted({tmp_path / Path(rel).parent for rel in layout})
    result = deblur(*roots, "-o", tmp_path / "out", model=model_file)
    assert result.exit_code == 2
    assert "would both be written" in result.output
    assert all(str(tmp_path / rel) in result.output for rel in layout)  # names both inputs
    assert not (tmp_path / "out").exists()  # not even the output folder


def test_missing_output_folders_are_created(tmp_path: Path, model_file: Path) -> None:
    photo(tmp_path / "in" / "a.png")
    photo(tmp_path / "in" / "deep" / "er" / "b.png", seed=1)
    out = tmp_path / "not" / "there" / "yet"
    result = deblur(tmp_path / "in", "-r", "-o", out, model=model_file)
    assert result.exit_code == 0, result.output
    assert tree(out) == ["a.png", "deep", "deep/er", "deep/er/b.png"]


def _unwritable(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make creating files in ``folder`` fail as a read-only folder does (root ignores chmod)."""
    real_open = os.open
    prefix = os.fspath(folder) + os.sep

    def guarded(path: str | bytes | os.PathLike[str], flags: int, *args: int, **kwargs: int) -> int:
        if flags & os.O_CREAT and os.fsdecode(path).startswith(prefix):
            raise OSError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded)


@pytest.mark.parametrize("real", [False, True])
def test_read_only_output_folder_is_a_clear_error(
    tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch, real: bool
) -> None:
    if real and (not hasattr(os, "geteuid") or os.geteuid() == 0):
        pytest.skip("root ignores folder permissions (the simulated case covers it)")
    photo(tmp_path / "in" / "a.png")
    photo(tmp_path / "in" / "b.png", seed=1)
    out = tmp_path / "out"
    out.mkdir()
    if real:
        out.chmod(0o555)
    else:
        _unwritable(out, monkeypatch)
    try:
        result = deblur(tmp_path / "in", "-o", out, model=model_file)
    finally:
        out.chmod(0o755)
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {tmp_path / 'in' / name}: cannot write '{name}': permission denied (the folder is not writable)"
        for name in ("a.png", "b.png")
    ]
    assert tree(out) == []


def test_output_folder_that_cannot_be_created_is_a_clear_error(tmp_path: Path, model_file: Path) -> None:
    photo(tmp_path / "in" / "a.png")
    (tmp_path / "blocker").write_text("a file where a folder should go")
    result = deblur(tmp_path / "in", "-o", tmp_path / "blocker" / "out", model=model_file)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"error: {tmp_path / 'in' / 'a.png'}: cannot create folder" in result.stderr
    assert "Not a directory" in result.stderr


def _remove_deep(top: Path) -> None:
    """Delete a tree deeper than shutil.rmtree (pytest's own clean-up) can recurse, bottom up."""
    folders, stack = [], [str(top)]
    while stack:
        folder = stack.pop()
        folders.append(folder)
        for entry in os.scandir(folder):
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            else:
                os.unlink(entry.path)
    for folder in reversed(folders):
        os.rmdir(folder)


def test_a_1100_level_tree_is_walked_and_mirrored(tmp_path: Path, model_file: Path, request: pytest.FixtureRequest) -> None:
    """Issue 19.11: deeper than Python's recursion limit (os.walk and Path.mkdir recurse per level)."""
    request.addfinalizer(lambda: [_remove_deep(tmp_path / top) for top in ("in", "out") if (tmp_path / top).exists()])
    deep = tmp_path / "in"
    deep.mkdir()
    for _ in range(1100):
        deep = deep / "d"
        os.mkdir(deep)
    photo(deep / "bottom.png")
    photo(tmp_path / "in" / "top.png", seed=1)
    out = tmp_path / "out"
    result = deblur(tmp_path / "in", "-r", "-o", out, "--json", model=model_file)
    assert result.exit_code == 0, result.output[-2000:]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["status"] for r in records] == ["done", "done"]
    assert (out / deep.relative_to(tmp_path / "in") / "bottom.png").is_file() and (out / "top.png").is_file()
