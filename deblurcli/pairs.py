"""Blurry/sharp pair discovery for ``deblur train`` and ``deblur eval``.

Pairs are matched by **relative path**, never by position in a sorted listing: one missing or extra file
in a sorted list silently shifts every later pair onto the wrong target, which ruins training and makes
evaluation figures meaningless without any error. The extension may differ (``blur/a.jpg`` pairs with
``sharp/a.png``) but the rest of the path must be identical. Files that find no partner are reported in
:attr:`PairScan.problems`, never dropped silently.

Layouts understood (folder names are case-insensitive):

* **Paired folders**: ``ROOT/blur/**`` with ``ROOT/sharp/**`` (also ``blurry/sharp``, ``input/target``,
  ``input/gt``, ``lq/gt``), matched file by file through any depth of sub-folders.
* **GoPro**: the same rule applied at every level, so ``ROOT/**/SEQ/blur/*.png`` pairs with
  ``ROOT/**/SEQ/sharp/*.png``. GoPro's ``blur_gamma`` folders are used only where a sequence has no
  ``blur`` folder, because the published benchmark figures use ``blur``.
* **Side by side** (``side_by_side=True``): every image under ``ROOT`` holds both halves, sharp on the left
  and blurry on the right, as in the seed project's data (its loader takes ``[:, :256]`` as sharp and
  ``[:, 256:]`` as blurry from 512 x 256 images).
* **CSV** (``csv=FILE``): a file with ``blur`` and ``sharp`` columns; relative paths are relative to the CSV.

Each pair has a ``key``: its path relative to the dataset without the extension and without the
``blur``-folder component (``GOPR0384_11_00/000001``). Evaluation names its outputs after it, so keys are
unique within a scan.
"""

from __future__ import annotations

import csv as csv_module
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from deblurcli.errors import PairsError, PhotoError
from deblurcli.photo import SUPPORTED_SUFFIXES, read_photo

#: File suffixes taken as images (those deblurcli.photo reads); other files (sidecars, notes, .DS_Store) are
#: ignored without comment.
IMAGE_SUFFIXES = frozenset(SUPPORTED_SUFFIXES)

#: (blurry folder, sharp folder) spellings, in order of preference when a folder has several.
FOLDER_PAIRS: tuple[tuple[str, str], ...] = (
    ("blur", "sharp"),
    ("blurry", "sharp"),
    ("blur_gamma", "sharp"),
    ("input", "target"),
    ("input", "gt"),
    ("lq", "gt"),
)
_BLUR_NAMES = frozenset(blur for blur, _ in FOLDER_PAIRS)

_LAYOUT_HINT = (
    "expected blur/ and sharp/ folders with the same file names (GoPro SEQ/blur + SEQ/sharp works too), "
    "side-by-side sharp|blurry images (--side-by-side) or a CSV with blur,sharp columns (--csv-pairs)"
)


@dataclass(frozen=True)
class Pair:
    """One blurry image and its sharp target (``sharp`` is ``None`` for a side-by-side image)."""

    blur: Path
    sharp: Path | None
    key: str
    side_by_side: bool = False

    def __str__(self) -> str:
        return str(self.blur)


@dataclass
class PairScan:
    """The pairs found under a dataset root, sorted by key, and one line per file left out and why."""

    pairs: list[Pair] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def index_images(folder: Path, problems: list[str]) -> dict[str, Path]:
    """Images under ``folder`` (recursive) keyed by relative path without suffix (a pair key's form).

    Two files that differ only in extension (``a.jpg`` and ``a.png``) would make the match ambiguous, so
    both are left out and reported.
    """
    found: dict[str, list[Path]] = {}
    for path in folder.rglob("*"):
        if _is_image(path) and path.is_file():
            rel = path.relative_to(folder).with_suffix("")
            found.setdefault(rel.as_posix(), []).append(path)
    unique: dict[str, Path] = {}
    for stem, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(sorted(p.name for p in paths))
            problems.append(f"{folder / stem}: ambiguous, several files share this name ({names}); rename one")
        else:
            unique[stem] = paths[0]
    return unique


def _match_folders(blur_dir: Path, sharp_dir: Path, prefix: PurePosixPath, problems: list[str]) -> list[Pair]:
    """Pairs between two parallel folder trees, by relative path; the unmatched go to ``problems``."""
    blurs = index_images(blur_dir, problems)
    sharps = index_images(sharp_dir, problems)
    pairs = [
        Pair(blur=blurs[stem], sharp=sharps[stem], key=(prefix / stem).as_posix())
        for stem in sorted(blurs.keys() & sharps.keys())
    ]
    problems.extend(
        f"{blurs[stem]}: no sharp image with the same name in {sharp_dir}/" for stem in sorted(blurs.keys() - sharps.keys())
    )
    problems.extend(
        f"{sharps[stem]}: no blurry image with the same name in {blur_dir}/" for stem in sorted(sharps.keys() - blurs.keys())
    )
    return pairs


def _scan_folders(root: Path) -> PairScan:
    """Walk ``root`` once; wherever a folder holds a blur/sharp folder pair, match the two trees."""
    scan = PairScan()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        by_name = {name.lower(): name for name in dirnames}
        claimed: set[str] = set()
        for blur_name, sharp_name in FOLDER_PAIRS:
            if blur_name in by_name and sharp_name in by_name and by_name[sharp_name] not in claimed:
                prefix = PurePosixPath(here.relative_to(root).as_posix())
                scan.pairs += _match_folders(here / by_name[blur_name], here / by_name[sharp_name], prefix, scan.problems)
                claimed |= {by_name[blur_name], by_name[sharp_name]}
        # Alternative blur renderings beside a used sharp folder (GoPro's blur_gamma next to blur) are
        # deliberately unused, not unpaired; a blur-like folder with no partner at all is reported.
        for name in _BLUR_NAMES & by_name.keys():
            if by_name[name] not in claimed:
                partners = {s for b, s in FOLDER_PAIRS if b == name}
                if not any(by_name.get(s) in claimed for s in partners):
                    scan.problems.append(f"{here / by_name[name]}/: no sibling {' or '.join(sorted(partners))}/ folder")
                claimed.add(by_name[name])
        dirnames[:] = sorted(d for d in dirnames if d not in claimed and not d.startswith("."))
        scan.problems.extend(
            f"{here / name}: not inside a blur/sharp folder pair" for name in sorted(filenames) if _is_image(here / name)
        )
    return scan


def _scan_side_by_side(root: Path) -> PairScan:
    scan = PairScan()
    for stem, path in index_images(root, scan.problems).items():
        scan.pairs.append(Pair(blur=path, sharp=None, key=stem, side_by_side=True))
    return scan


def _scan_csv(csv_path: Path) -> PairScan:
    """Pairs listed in a CSV with ``blur`` and ``sharp`` columns (paths relative to the CSV's folder)."""
    base = csv_path.parent
    scan = PairScan()
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv_module.DictReader(handle)
            columns = {name.strip().lower(): name for name in reader.fieldnames or []}
            if "blur" not in columns or "sharp" not in columns:
                raise PairsError(f"{csv_path}: needs a header row with 'blur' and 'sharp' columns")
            rows = [(reader.line_num, row[columns["blur"]], row[columns["sharp"]]) for row in reader]
    except (OSError, UnicodeDecodeError, csv_module.Error) as exc:
        raise PairsError(f"{csv_path}: cannot read the pairs CSV ({exc})") from exc
    seen: set[str] = set()
    for line, blur_text, sharp_text in rows:
        if not (blur_text or "").strip() or not (sharp_text or "").strip():
            scan.problems.append(f"{csv_path}:{line}: a blur or sharp path is empty")
            continue
        blur, sharp = base / blur_text.strip(), base / sharp_text.strip()
        missing = [str(p) for p in (blur, sharp) if not p.is_file()]
        if missing:
            scan.problems.append(f"{csv_path}:{line}: {' and '.join(missing)} not found")
            continue
        try:
            key = blur.relative_to(base).with_suffix("").as_posix()
        except ValueError:  # an absolute path elsewhere: its name is the best key there is
            key = blur.stem
        if key in seen:
            scan.problems.append(f"{csv_path}:{line}: {blur} is listed twice (or shares its name with another)")
            continue
        seen.add(key)
        scan.pairs.append(Pair(blur=blur, sharp=sharp, key=key))
    return scan


def find_pairs(root: Path, *, side_by_side: bool = False, csv: Path | None = None) -> PairScan:
    """Every blurry/sharp pair under ``root`` (see the module docstring for the layouts), sorted by key.

    With ``csv``, the pairs come from that file instead (a relative ``csv`` that does not exist as given
    is also looked for inside ``root``). Raises :class:`PairsError` when nothing pairs up, with a line that
    says what was expected and the first problem met.
    """
    root = Path(root)
    if csv is not None:
        csv = Path(csv)
        if not csv.is_file() and not csv.is_absolute() and (root / csv).is_file():
            csv = root / csv
        if not csv.is_file():
            raise PairsError(f"{csv}: pairs CSV not found")
        scan, where = _scan_csv(csv), csv
    else:
        if not root.is_dir():
            raise PairsError(f"{root}: not a folder of pairs ({_LAYOUT_HINT})")
        scan = _scan_side_by_side(root) if side_by_side else _scan_folders(root)
        where = root
    scan.pairs.sort(key=lambda pair: pair.key)
    if not scan.pairs:
        first = f"; {len(scan.problems)} problem(s), first: {scan.problems[0]}" if scan.problems else ""
        raise PairsError(f"{where}: no blurry/sharp pairs found ({_LAYOUT_HINT}){first}")
    return scan


def _read_rgb(path: Path) -> np.ndarray:
    """The pixels of ``path``, with the file named in any error (deblurcli.photo's messages do not name it)."""
    try:
        return read_photo(path).rgb
    except PhotoError as exc:
        raise PhotoError(f"{path}: {exc}") from None


def load_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """``(blurry, sharp)`` as float32 H x W x 3 in [0, 1]; raises :class:`PairsError` if the sizes differ.

    A side-by-side image is split down the middle: sharp on the left, blurry on the right. Unreadable
    files raise :class:`PhotoError` naming the file.
    """
    if pair.side_by_side:
        both = _read_rgb(pair.blur)
        width = both.shape[1]
        if width % 2:
            raise PairsError(f"{pair.blur}: side-by-side image is {width} px wide; an even width is needed to split it into sharp|blurry halves")
        return both[:, width // 2 :], both[:, : width // 2]
    if pair.sharp is None:
        raise PairsError(f"{pair.blur}: pair has no sharp image and is not side-by-side")
    blur = _read_rgb(pair.blur)
    sharp = _read_rgb(pair.sharp)
    if blur.shape != sharp.shape:
        raise PairsError(
            f"{pair.blur}: blurry image is {blur.shape[1]}x{blur.shape[0]} but its sharp image {pair.sharp} "
            f"is {sharp.shape[1]}x{sharp.shape[0]}"
        )
    return blur, sharp
