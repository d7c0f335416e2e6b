"""batch.py: finding photos and naming outputs, on real folder trees the tests build."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deblurcli.batch import InputFile, Job, OutputCollisionError, PlanError, find_inputs, plan_jobs
from deblurcli.errors import DeblurError
from deblurcli.atomic import TEMP_TAG


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """shoot/ with photos at two levels, odd case suffixes, and everything that must be skipped."""
    root = tmp_path / "shoot"
    for rel in ("b.jpg", "A.JPG", "c.Png", "d.tiff", "e.webp", "f.HEIC", "day 2/été.jpeg", "day 2/deep/g.tif"):
        touch(root / rel)
    for rel in (
        ".DS_Store",
        "Thumbs.db",
        "desktop.ini",
        "._b.jpg",
        ".hidden.jpg",
        "notes.txt",
        "raw.CR2",
        f".b.jpg{TEMP_TAG}1a2b3c4d",
        ".cache/h.jpg",
        "@eaDir/b.jpg/SYNOPHOTO_THUMB_XL.jpg",
        "__MACOSX/x.jpg",
    ):
        touch(root / rel)
    return root


def rels(inputs: list[InputFile]) -> list[str]:
    return [i.rel.as_posix() for i in inputs]


# ------------------------------------------------------------------------------------------ find_inputs


def test_folder_scan_is_case_insensitive_sorted_and_skips_junk(tree: Path) -> None:
    inputs, problems = find_inputs([tree], recursive=False)
    assert problems == []
    assert rels(inputs) == ["A.JPG", "b.jpg", "c.Png", "d.tiff", "e.webp", "f.HEIC"]
    assert all(i.root == tree for i in inputs)


def test_recursive_scan_mirrors_relative_paths(tree: Path) -> None:
    inputs, _ = find_inputs([tree], recursive=True)
    assert rels(inputs) == [
        "A.JPG",
        "b.jpg",
        "c.Png",
        "d.tiff",
        "day 2/deep/g.tif",
        "day 2/été.jpeg",
        "e.webp",
        "f.HEIC",
    ]
    assert inputs == find_inputs([tree], recursive=True)[0]  # deterministic


def test_missing_paths_are_problems_not_crashes(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    inputs, problems = find_inputs(
        [tmp_path / "nope.jpg", tree / "b.jpg", tmp_path / "dangling.jpg", tree / "notes.txt"], recursive=False
    )
    assert rels(inputs) == ["b.jpg"] and inputs[0].root is None
    reasons = {p.name: r for p, r in problems}
    assert reasons["nope.jpg"] == "no such file or folder"
    assert reasons["dangling.jpg"] == "broken symbolic link"
    assert reasons["notes.txt"].startswith("unsupported file type '.txt'")


def test_symlink_loop_is_walked_once(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    touch(root / "a" / "p.jpg")
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)
    (root / "self").symlink_to(root / "a", target_is_directory=True)
    inputs, problems = find_inputs([root], recursive=True)
    assert problems == []
    assert rels(inputs) == ["a/p.jpg"]  # reached through a/, self/ and a/loop/..., listed once


def test_output_folder_inside_input_is_excluded(tree: Path) -> None:
    touch(tree / "out" / "b.jpg")
    touch(tree / "out" / "day 2" / "x.jpg")
    inputs, _ = find_inputs([tree], recursive=True, exclude=[tree / "out"])
    assert not any(r.startswith("out/") for r in rels(inputs))
    inputs_all, _ = find_inputs([tree], recursive=True)
    assert "out/b.jpg" in rels(inputs_all)


def test_same_file_twice_is_listed_once(tree: Path) -> None:
    inputs, _ = find_inputs([tree / "b.jpg", tree, tree / "b.jpg"], recursive=False)
    assert [i.path.name for i in inputs].count("b.jpg") == 1
    assert inputs[0].root is None  # the first mention wins


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can list any folder")
def test_unreadable_subfolder_is_a_problem(tree: Path) -> None:
    locked = tree / "day 2"
    locked.chmod(0)
    try:
        inputs, problems = find_inputs([tree], recursive=True)
    finally:
        locked.chmod(0o755)
    assert problems and "cannot list folder" in problems[0][1]
    assert "b.jpg" in rels(inputs)


# ------------------------------------------------------------------------------------------- plan_jobs


def plan(paths: list[Path], output: Path | None, *, recursive: bool = True, **kw) -> list[Job]:
    inputs, problems = find_inputs(paths, recursive=recursive)
    assert problems == []
    return plan_jobs(inputs, output, **kw)


def test_single_file_explicit_output_file(tree: Path, tmp_path: Path) -> None:
    [job] = plan([tree / "b.jpg"], tmp_path / "sharp.png")
    assert job.dst == tmp_path / "sharp.png" and job.src == tree / "b.jpg"


def test_single_file_without_o_gets_suffix_beside_it(tree: Path) -> None:
    [job] = plan([tree / "b.jpg"], None)
    assert job.dst == tree / "b_deblurred.jpg"
    [heic] = plan([tree / "f.HEIC"], None)
    assert heic.dst == tree / "f_deblurred.jpg"  # HEIC is read-only: the output is a JPEG


def test_folder_without_o_goes_to_sibling_folder_mirroring_tree(tree: Path) -> None:
    jobs = plan([tree], None)
    sibling = tree.parent / "shoot_deblurred"
    assert {j.dst for j in jobs} >= {sibling / "b.jpg", sibling / "day 2" / "deep" / "g.tif", sibling / "f.jpg"}
    assert all(sibling in j.dst.parents for j in jobs)


def test_folder_given_as_dot(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree)
    jobs = plan([Path(".")], None, recursive=False)
    assert {j.dst.resolve() for j in jobs} >= {(tree.parent / "shoot_deblurred" / "b.jpg").resolve()}


def test_o_dir_keeps_names_and_mirrors(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    jobs = plan([tree], out)
    assert {j.dst.relative_to(out).as_posix() for j in jobs} == {
        "A.JPG",
        "b.jpg",
        "c.Png",
        "d.tiff",
        "day 2/deep/g.tif",
        "day 2/été.jpeg",
        "e.webp",
        "f.jpg",
    }
    files = plan([tree / "b.jpg", tree / "c.Png"], out)
    assert [j.dst for j in files] == [out / "b.jpg", out / "c.Png"]


def test_o_with_image_suffix_but_many_inputs_is_an_error(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="names a file but 2 photos were found"):
        plan([tree / "b.jpg", tree / "c.Png"], tmp_path / "x.jpg")
    with pytest.raises(PlanError, match="the input is a folder"):
        plan([tree / "day 2" / "deep"], tmp_path / "x.jpg")


def test_existing_folder_named_like_a_file_is_a_folder(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "odd.jpg").mkdir()
    [job] = plan([tree / "b.jpg"], tmp_path / "odd.jpg")
    assert job.dst == tmp_path / "odd.jpg" / "b.jpg"


def test_collision_is_reported_before_anything_naming_both(tmp_path: Path) -> None:
    a, b = touch(tmp_path / "a" / "x.jpg"), touch(tmp_path / "b" / "x.jpg")
    out = tmp_path / "out"
    with pytest.raises(OutputCollisionError) as err:
        plan([a, b], out)
    msg = str(err.value)
    assert str(a) in msg and str(b) in msg and str(out / "x.jpg") in msg and "\n" not in msg
    assert isinstance(err.value, DeblurError)
    assert not out.exists()


def test_collision_by_case_and_by_heic_rename(tmp_path: Path) -> None:
    touch(tmp_path / "in1" / "IMG.jpg")
    touch(tmp_path / "in2" / "img.JPG")
    with pytest.raises(OutputCollisionError):
        plan([tmp_path / "in1", tmp_path / "in2"], tmp_path / "out")
    touch(tmp_path / "in3" / "p.heic")
    touch(tmp_path / "in3" / "p.jpg")
    with pytest.raises(OutputCollisionError):
        plan([tmp_path / "in3"], tmp_path / "out")


def test_output_equal_to_input_needs_in_place(tree: Path) -> None:
    with pytest.raises(PlanError, match="--in-place"):
        plan([tree], tree, recursive=False)
    jobs = plan([tree], None, recursive=False, in_place=True)
    assert all(j.dst == j.src for j in jobs)
    with pytest.raises(PlanError, match="cannot be combined"):
        plan([tree], tree, in_place=True)


def test_output_over_another_input_is_refused(tmp_path: Path) -> None:
    a = touch(tmp_path / "a" / "x.jpg")
    b = touch(tmp_path / "b" / "x.jpg")
    with pytest.raises(PlanError, match="would overwrite"):
        plan([b, a], tmp_path / "a")


def test_earlier_output_beside_original_is_not_reprocessed(tmp_path: Path) -> None:
    touch(tmp_path / "p.jpg")
    touch(tmp_path / "p_deblurred.jpg")
    touch(tmp_path / "q_deblurred.jpg")  # no q.jpg: a real photo that happens to have the name
    jobs = plan([tmp_path / "p.jpg", tmp_path / "p_deblurred.jpg", tmp_path / "q_deblurred.jpg"], None)
    assert [(j.src.name, j.dst.name) for j in jobs] == [
        ("p.jpg", "p_deblurred.jpg"),
        ("q_deblurred.jpg", "q_deblurred_deblurred.jpg"),
    ]


def test_custom_suffix(tree: Path) -> None:
    [job] = plan([tree / "b.jpg"], None, suffix="-sharp")
    assert job.dst.name == "b-sharp.jpg"


def test_root_folder_without_o_is_a_clear_error() -> None:
    with pytest.raises(PlanError, match="pass -o"):
        plan_jobs([InputFile(Path("/x.jpg"), Path("x.jpg"), Path("/"))], None)
