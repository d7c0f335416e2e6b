"""Pair discovery by relative path across every supported layout, and pair loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deblurcli.errors import PairsError
from deblurcli.pairs import Pair, find_pairs, load_pair


def img(path: Path, w: int = 8, h: int = 6, value: int = 0) -> Path:
    """A small RGB image whose pixels encode ``value`` (so tests can tell which file was loaded)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((h, w, 3), value, np.uint8)
    arr[0, 0] = (value, 255 - value, 7)
    Image.fromarray(arr).save(path)
    return path


def keys(scan) -> list[str]:
    return [p.key for p in scan.pairs]


def test_paired_folders_match_by_relative_path_not_sort_order(tmp_path: Path) -> None:
    # b.png has no sharp partner: by sort order c would be paired with the wrong target.
    img(tmp_path / "blur" / "a.png", value=10)
    img(tmp_path / "blur" / "b.png", value=20)
    img(tmp_path / "blur" / "c.jpg", value=30)
    img(tmp_path / "sharp" / "a.png", value=11)
    img(tmp_path / "sharp" / "c.png", value=31)
    img(tmp_path / "sharp" / "z.png", value=99)
    (tmp_path / "blur" / "notes.txt").write_text("not an image")
    scan = find_pairs(tmp_path)
    assert keys(scan) == ["a", "c"]
    c = scan.pairs[1]
    assert (c.blur.name, c.sharp.name) == ("c.jpg", "c.png")  # extensions may differ, stems may not
    assert len(scan.problems) == 2
    assert any("b.png" in p and "no sharp image" in p for p in scan.problems)
    assert any("z.png" in p and "no blurry image" in p for p in scan.problems)


def test_nested_folders_and_other_spellings(tmp_path: Path) -> None:
    img(tmp_path / "input" / "day" / "x.png")
    img(tmp_path / "input" / "night" / "x.png")
    img(tmp_path / "target" / "day" / "x.png")
    img(tmp_path / "target" / "night" / "x.png")
    img(tmp_path / "target" / "night" / "extra" / "y.png")
    scan = find_pairs(tmp_path)
    assert keys(scan) == ["day/x", "night/x"]
    assert scan.pairs[1].sharp == tmp_path / "target" / "night" / "x.png"
    assert len(scan.problems) == 1 and "y.png" in scan.problems[0]


def test_gopro_layout_prefers_blur_over_blur_gamma(tmp_path: Path) -> None:
    for seq in ("GOPR0384_11_00", "GOPR0410_11_00"):
        for frame in ("000001", "000002"):
            img(tmp_path / "test" / seq / "blur" / f"{frame}.png")
            img(tmp_path / "test" / seq / "blur_gamma" / f"{frame}.png")
            img(tmp_path / "test" / seq / "sharp" / f"{frame}.png")
    img(tmp_path / "train" / "GOPR0001" / "blur_gamma" / "000009.png")  # only blur_gamma here: used
    img(tmp_path / "train" / "GOPR0001" / "sharp" / "000009.png")
    scan = find_pairs(tmp_path)
    assert keys(scan) == [
        "test/GOPR0384_11_00/000001",
        "test/GOPR0384_11_00/000002",
        "test/GOPR0410_11_00/000001",
        "test/GOPR0410_11_00/000002",
        "train/GOPR0001/000009",
    ]
    assert all(p.blur.parent.name == "blur" for p in scan.pairs[:4])
    assert scan.pairs[4].blur.parent.name == "blur_gamma"
    assert scan.problems == []


def test_stray_files_and_orphan_folders_are_reported(tmp_path: Path) -> None:
    img(tmp_path / "blur" / "a.png")
    img(tmp_path / "sharp" / "a.png")
    img(tmp_path / "preview.png")
    img(tmp_path / "other" / "blurry" / "q.png")  # no sibling sharp/
    scan = find_pairs(tmp_path)
    assert keys(scan) == ["a"]
    assert any("preview.png" in p and "not inside" in p for p in scan.problems)
    assert any("blurry/" in p and "no sibling sharp/" in p for p in scan.problems)


def test_same_stem_twice_is_ambiguous_not_guessed(tmp_path: Path) -> None:
    img(tmp_path / "blur" / "a.png")
    img(tmp_path / "blur" / "a.jpg")
    img(tmp_path / "blur" / "b.png")
    img(tmp_path / "sharp" / "a.png")
    img(tmp_path / "sharp" / "b.png")
    scan = find_pairs(tmp_path)
    assert keys(scan) == ["b"]
    assert any("ambiguous" in p and "a.jpg, a.png" in p for p in scan.problems)


def test_side_by_side_splits_sharp_left_blurry_right(tmp_path: Path) -> None:
    path = tmp_path / "sbs" / "pair1.png"
    path.parent.mkdir()
    arr = np.zeros((4, 10, 3), np.uint8)
    arr[:, :5] = 200  # sharp half
    arr[:, 5:] = 50  # blurry half
    Image.fromarray(arr).save(path)
    scan = find_pairs(tmp_path, side_by_side=True)
    assert scan.pairs == [Pair(blur=path, sharp=None, key="sbs/pair1", side_by_side=True)]
    blurry, sharp = load_pair(scan.pairs[0])
    assert blurry.shape == sharp.shape == (4, 5, 3) and blurry.dtype == np.float32
    assert np.allclose(blurry, 50 / 255) and np.allclose(sharp, 200 / 255)


def test_side_by_side_with_odd_width_names_the_file(tmp_path: Path) -> None:
    img(tmp_path / "odd.png", w=9)
    with pytest.raises(PairsError, match=r"odd\.png.*9 px wide"):
        load_pair(find_pairs(tmp_path, side_by_side=True).pairs[0])


def test_csv_pairs_relative_to_the_csv(tmp_path: Path) -> None:
    img(tmp_path / "data" / "in" / "one.png", value=1)
    img(tmp_path / "data" / "gt" / "one_sharp.png", value=2)
    img(tmp_path / "data" / "in" / "two.png", value=3)
    listing = tmp_path / "data" / "pairs.csv"
    listing.write_text("Blur,Sharp\nin/one.png,gt/one_sharp.png\nin/two.png,gt/missing.png\n")
    scan = find_pairs(tmp_path / "data", csv=Path("pairs.csv"))  # found inside root
    assert keys(scan) == ["in/one"]
    assert scan.pairs[0].sharp == tmp_path / "data" / "gt" / "one_sharp.png"
    assert len(scan.problems) == 1 and "pairs.csv:3" in scan.problems[0] and "missing.png" in scan.problems[0]
    blurry, sharp = load_pair(scan.pairs[0])
    assert blurry[1, 1, 0] == pytest.approx(1 / 255) and sharp[1, 1, 0] == pytest.approx(2 / 255)


def test_csv_without_header_is_an_error(tmp_path: Path) -> None:
    listing = tmp_path / "p.csv"
    listing.write_text("a.png,b.png\n")
    with pytest.raises(PairsError, match="'blur' and 'sharp' columns"):
        find_pairs(tmp_path, csv=listing)


def test_loading_keeps_blur_and_sharp_apart(tmp_path: Path) -> None:
    img(tmp_path / "blur" / "a.png", value=40)
    img(tmp_path / "sharp" / "a.png", value=80)
    blurry, sharp = load_pair(find_pairs(tmp_path).pairs[0])
    assert blurry[2, 2, 0] == pytest.approx(40 / 255) and sharp[2, 2, 0] == pytest.approx(80 / 255)


def test_mismatched_sizes_name_the_file(tmp_path: Path) -> None:
    img(tmp_path / "blur" / "big.png", w=10, h=8)
    img(tmp_path / "sharp" / "big.png", w=8, h=8)
    with pytest.raises(PairsError, match=r"big\.png: blurry image is 10x8 but its sharp image .*big\.png is 8x8"):
        load_pair(find_pairs(tmp_path).pairs[0])


def test_empty_scan_raises_a_helpful_line(tmp_path: Path) -> None:
    img(tmp_path / "blur" / "a.png")
    img(tmp_path / "sharp" / "b.png")
    with pytest.raises(PairsError) as info:
        find_pairs(tmp_path)
    message = str(info.value)
    assert "no blurry/sharp pairs" in message and "blur/ and sharp/" in message and "a.png" in message
    assert "\n" not in message
    with pytest.raises(PairsError, match="not a folder"):
        find_pairs(tmp_path / "nope")


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    from deblurcli.errors import PhotoError

    img(tmp_path / "blur" / "a.png")
    (tmp_path / "sharp").mkdir()
    (tmp_path / "sharp" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(PhotoError, match=r"sharp/a\.png: "):
        load_pair(find_pairs(tmp_path).pairs[0])
