"""Auto's second opinion on a deconvolved photo: would the network change the photo as much?

The kernel estimate can be confident and wrong in a way no test of the kernel alone sees: the estimation
windows held a shake, but the photo is also, or instead, blurred in ways one kernel does not describe (a
subject moving on its own over a shaken background, blur that varies across the frame). Re-blurring the
deconvolution does not catch it either (:mod:`deblurcli.kernel.residual`): the deconvolution fits the photo
through whatever kernel it was given. What tells the two apart is how far each method moves the photo. On a
camera shake the deconvolution moves it far (it undoes a blur 13-27 px long) and the network little (it
barely touches uniform shake: +0.0-0.8 dB on the held-out family); where the network moves the photo as far
as the deconvolution, or further, it has found blur of its own kind, and its output is the better one.

Measured on every photo auto deconvolved in five validation families (the three seeds of ``dynamic``,
``heldout``, ``synthetic``; 2026-12-03, docs/how_deblurcli_decides.md): where the network beat the
deconvolution by over 0.2 dB, it moved the photo further in 9 of 11 photos; where the deconvolution won,
the network moved the photo at least 0.96 dB (PSNR against the input) less, on all 26.

The photo is compared whole up to :data:`BUDGET` pixels; larger photos on a grid of windows, so the check
costs one network pass over at most that many pixels whatever the photo's size.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["BUDGET", "MARGIN", "WINDOW", "windows"]

#: Largest photo (pixels) compared whole; a larger one is compared on windows covering about this much of it.
BUDGET = 1_500_000
#: Side (px) of the part of each window that is compared.
WINDOW = 512
#: Context (px) run through the network around each window and then dropped, so the window's own edges,
#: which are not the photo's, do not count.
MARGIN = 32

Window = tuple[slice, slice]


def windows(shape: tuple[int, int], *, budget: int = BUDGET, side: int = WINDOW, margin: int = MARGIN) -> list[tuple[Window, Window]] | None:
    """Where to compare a photo of ``shape`` (height, width): None for the whole photo (it fits ``budget``),
    else ``(crop, inner)`` pairs on an even grid: ``crop`` (the window and its margin, clipped to the photo) is
    what the network runs on, ``inner`` the window within the crop's output."""
    h, w = shape
    if h * w <= budget or min(h, w) < side + 2 * margin:
        return None
    count = max(1, math.floor(budget / side**2))
    rows = max(1, min(round(math.sqrt(count * h / w)), h // side))
    cols = max(1, min(count // rows, w // side))
    out = []
    for top in np.linspace(0, h - side, rows + 2)[1:-1].round().astype(int).tolist():
        for left in np.linspace(0, w - side, cols + 2)[1:-1].round().astype(int).tolist():
            y0, x0 = max(0, top - margin), max(0, left - margin)
            y1, x1 = min(h, top + side + margin), min(w, left + side + margin)
            out.append(((slice(y0, y1), slice(x0, x1)), (slice(top - y0, top - y0 + side), slice(left - x0, left - x0 + side))))
    return out
