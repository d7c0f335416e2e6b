"""The learning-rate schedule: a linear warm-up, then a cosine to ``floor`` over the run's budget.

Progress is whichever budget is further along (steps done of ``--max-steps``, training time of
``--max-minutes``), so a time-budgeted or resumed run ends its cosine where its budget ends. The warm-up
lasts ``warmup_steps`` steps or :data:`WARMUP_SHARE` of the run, whichever is shorter: a fixed 200-step
warm-up would keep a short fine-tune from ever reaching its learning rate.
"""

from __future__ import annotations

import math

#: the longest share of a run spent warming up.
WARMUP_SHARE = 0.05


def cosine_factor(progress: float, warmup: float, floor: float = 1e-3) -> float:
    """Learning-rate multiplier: linear warm-up (``warmup`` in [0, 1] of the way through it), then a
    cosine from 1 down to ``floor`` as ``progress`` goes 0 -> 1."""
    p = min(max(progress, 0.0), 1.0)
    return min(1.0, warmup) * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


def warmup_fraction(step: int, progress: float, warmup_steps: int, max_steps: int | None) -> float:
    """How far through its warm-up the run is at ``step`` (0-based; 1.0 = done).

    The warm-up ends after ``min(warmup_steps, 5 % of max_steps)`` steps (at least one), or once
    ``progress`` (which includes the time budget) reaches 5 %, whichever comes first.
    """
    if warmup_steps <= 0:
        return 1.0
    steps = warmup_steps if max_steps is None else min(warmup_steps, max(1, math.ceil(WARMUP_SHARE * max_steps)))
    return min(1.0, max((step + 1) / steps, progress / WARMUP_SHARE))


def lr_factor(
    step: int, elapsed_s: float, *, max_steps: int | None, max_minutes: float | None, warmup_steps: int
) -> float:
    """The multiplier of the peak learning rate for ``step`` after ``elapsed_s`` training seconds."""
    progress = 0.0
    if max_steps is not None:
        progress = step / max_steps
    if max_minutes is not None:
        progress = max(progress, elapsed_s / (max_minutes * 60))
    return cosine_factor(progress, warmup_fraction(step, progress, warmup_steps, max_steps))
