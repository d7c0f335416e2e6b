"""What ``auto`` does to real blurred photos: the ``--compare`` strips of docs/how_deblurcli_decides.md.

    python scripts/auto_real_pictures.py                      # the default photos, into docs/images
    python scripts/auto_real_pictures.py --photo srn_deblur_testing_set__4c6 --out /tmp/pics

Each photo of ``../shared/data/real_blur`` named here goes through the default command with ``--compare``
(``deblur PHOTO -o OUT --compare -v``), so the strip's label says what auto chose and, when it chose the
network over a kernel estimate, that estimate's size and confidence. The strip is then downscaled to at
most ``--width`` px and saved as ``auto_real_<name>.jpg``; the chosen method is printed. Photos that are
absent are skipped with a message (exit 0), so the script runs where the shared data is not.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PHOTOS = ("srn_deblur_testing_set__4c6", "deepdeblur_examples_blur_gamma__seq_id-2_frame-8_Input",
                  "srn_deblur_testing_set__07", "deepdeblur_examples_blur_gamma__seq_id-5_frame-2_Input")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real-blur", type=Path, default=REPO.parent / "shared" / "data" / "real_blur")
    parser.add_argument("--photo", action="append", help="file stem in --real-blur (repeatable)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    parser.add_argument("--width", type=int, default=1600)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for stem in args.photo or DEFAULT_PHOTOS:
        source = args.real_blur / f"{stem}.jpg"
        if not source.is_file():
            print(f"{source}: absent, skipped")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / f"{stem}.jpg"
            run = subprocess.run([sys.executable, "-m", "deblurcli", str(source), "-o", str(out), "--compare", "-v"],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                print(f"{source}: deblur failed (exit {run.returncode}): {run.stderr.strip().splitlines()[-1:]}")
                return 1
            choice = next((line.split(": method ", 1)[1] for line in run.stderr.splitlines() if ": method " in line), "?")
            with Image.open(out.with_name(f"{stem}_compare.jpg")) as strip:
                strip = strip.convert("RGB")
                strip.thumbnail((args.width, args.width))
                target = args.out / f"auto_real_{stem}.jpg"
                strip.save(target, quality=85, optimize=True)
        print(f"{target}: method {choice}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
