"""What auto's second opinion on a deconvolved photo costs (``Session.second_opinion``), against the network
over the whole photo, measured in one process so the ratio holds on a loaded machine.

    python bench/second_opinion_cost.py --mp 12 --threads 2 --reps 3

Up to 1.5 MP the check is the network pass itself (its output is reused when the network wins); above, it
runs the network on windows covering about 1.5 MP (``deblurcli.second_opinion.windows``). Prints the median
seconds of each, interleaved, and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling bench scripts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mp", type=float, default=12.0, help="photo size in megapixels")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    from perf_report import synthetic_photo

    from deblurcli.second_opinion import windows
    from deblurcli.session import Session

    session = Session("auto", threads=args.threads, refiner="none")
    photo = synthetic_photo(args.mp)
    spots = windows(photo.shape[:2])
    print(f"{photo.shape[1]}x{photo.shape[0]} photo, {session.describe()}")
    print("compared: " + ("the whole photo" if spots is None else f"{len(spots)} windows of 512 px (576 px run)"))
    session.second_opinion(photo, photo)  # warm-up: tile shapes, backend compilation
    session.run_network(photo)
    check, whole = [], []
    for _ in range(args.reps):
        start = time.perf_counter()
        session.second_opinion(photo, photo)
        check.append(time.perf_counter() - start)
        start = time.perf_counter()
        session.run_network(photo)
        whole.append(time.perf_counter() - start)
    a, b = statistics.median(check), statistics.median(whole)
    print(f"second opinion {a:.2f} s, network over the whole photo {b:.2f} s (median of {args.reps}): {a / b:.2f}x")


if __name__ == "__main__":
    main()
