"""batch.shard / parse_shard: job-array sharding that covers every input once and survives added files."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deblurcli.batch import InputFile, Job, parse_shard, shard, shard_key, shard_of

names = st.lists(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12), unique=True, max_size=60)


@pytest.mark.parametrize(("spec", "expected"), [("1/1", (1, 1)), ("2/4", (2, 4)), (" 4 / 4 ", (4, 4)), ("10/12", (10, 12))])
def test_parse_shard_accepts_i_of_n(spec: str, expected: tuple[int, int]) -> None:
    assert parse_shard(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [("0/4", "numbered 1 to 4"), ("5/4", "numbered 1 to 4"), ("1/0", "at least 1"), ("2", "expected I/N"),
     ("a/b", "expected I/N"), ("-1/4", "expected I/N"), ("1/4/2", "expected I/N"), ("", "expected I/N")],
)
def test_parse_shard_rejects_bad_specs_with_one_line(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_shard(spec)
    assert "\n" not in str(info.value)


@given(names, st.integers(1, 9))
def test_shards_cover_every_item_exactly_once_in_order(items: list[str], count: int) -> None:
    parts = [shard(items, i, count) for i in range(1, count + 1)]
    assert sorted(x for part in parts for x in part) == sorted(items)
    for part in parts:
        assert part == [x for x in items if x in set(part)]  # original order kept


@given(names, names, st.integers(1, 9))
def test_adding_files_moves_no_existing_file(old: list[str], new: list[str], count: int) -> None:
    grown = old + [n for n in new if n not in old]
    for i in range(1, count + 1):
        assert set(shard(old, i, count)) <= set(shard(grown, i, count))


def test_the_hash_is_fixed_across_processes_and_versions() -> None:
    """Pinned values (blake2b of the UTF-8 relative path): every task of an array must agree, whatever
    PYTHONHASHSEED, and an upgrade must not reshuffle the shards of an array that is half done."""
    keys = ("a.jpg", "sub/b.png", "é.tif", "IMG_0001.JPG", "x/y/z.webp", "p.png")
    assert [shard_of(k, 4) for k in keys] == [2, 3, 4, 2, 2, 3]
    assert [shard_of(k, 7) for k in keys] == [7, 1, 2, 2, 2, 3]


def test_shards_are_roughly_even_on_a_real_sized_folder() -> None:
    items = [f"2024/shoot_{i // 100:02d}/IMG_{i:05d}.JPG" for i in range(4000)]
    sizes = [len(shard(items, i, 4)) for i in range(1, 5)]
    assert sum(sizes) == 4000 and max(sizes) < 1.1 * 1000 and min(sizes) > 0.9 * 1000


def test_key_is_the_path_relative_to_its_root_so_mount_points_do_not_matter(tmp_path: Path) -> None:
    here = [Job(Path("/mnt/a/data") / f"{i}.jpg", Path("/out") / f"{i}.jpg", Path(f"{i}.jpg")) for i in range(50)]
    there = [Job(Path("/scratch/data") / f"{i}.jpg", Path("/o2") / f"{i}.jpg", Path(f"{i}.jpg")) for i in range(50)]
    for i in (1, 2, 3):
        assert [j.rel for j in shard(here, i, 3)] == [j.rel for j in shard(there, i, 3)]
    assert shard_key(InputFile(Path("/x/sub/a.jpg"), Path("sub/a.jpg"), Path("/x"))) == "sub/a.jpg"
    assert shard_key("plain") == "plain"


def test_custom_key_and_bad_shard_numbers() -> None:
    items = list(range(20))
    assert sorted(shard(items, 1, 2, key=lambda n: str(n % 2)) + shard(items, 2, 2, key=lambda n: str(n % 2))) == items
    with pytest.raises(ValueError, match="1 to 3"):
        shard(items, 4, 3)
