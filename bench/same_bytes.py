"""Do two checkouts write the same bytes? ``deblur --method network`` run by this checkout and by another.

    git worktree add /tmp/before <commit> && python bench/same_bytes.py --reference /tmp/before

A refactor that is meant to change nothing must leave every output byte where it was. This runs the CLI of
this checkout and of ``--reference`` (each with its own code on ``PYTHONPATH``, in a fresh process, one
thread, the precision ``auto`` picks) on the bundled sample JPEG and on a 16-bit grey TIFF made from it,
and compares the files byte for byte. A reference older than ``--method`` runs without that option (its only
method was the network).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def inputs(folder: Path) -> list[Path]:
    """The bundled sample, and its luma as a 16-bit grey TIFF (values a 16-bit path must keep exactly)."""
    import numpy as np
    from PIL import Image

    sample = REPO / "samples" / "coffee_blurry.jpg"
    with Image.open(sample) as im:
        grey16 = np.asarray(im.convert("L"), dtype=np.uint16) * 257 + np.arange(im.width, dtype=np.uint16) % 7
    tiff = folder / "coffee16.tif"
    Image.fromarray(grey16).save(tiff)  # mode I;16
    return [sample, tiff]


def run(checkout: Path, photo: Path, out: Path, network_option: bool) -> None:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "deblurcli", str(photo), "-o", str(out), "--threads", "1", "-q"]
    if network_option:
        cmd += ["--method", "network"]
    subprocess.run(cmd, check=True, env=env, cwd=checkout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="the other checkout (e.g. a worktree of an older commit)")
    args = parser.parse_args()
    reference_has_method = (args.reference / "deblurcli" / "session.py").is_file()
    same = True
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for photo in inputs(folder):
            ours, theirs = folder / f"ours_{photo.name}", folder / f"theirs_{photo.name}"
            run(REPO, photo, ours, True)
            run(args.reference, photo, theirs, reference_has_method)
            equal = ours.read_bytes() == theirs.read_bytes()
            same &= equal
            print(f"{photo.name}: {'identical' if equal else 'DIFFERENT'} ({ours.stat().st_size} bytes)")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
