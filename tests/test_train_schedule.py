"""The learning-rate schedule: a warm-up that fits the run, then a cosine over whichever budget is further along."""

from __future__ import annotations

import math

import pytest

from deblurcli.train import schedule


def factor(step: int, elapsed_s: float = 0.0, max_steps: int | None = None, max_minutes: float | None = None,
           warmup_steps: int = 200) -> float:
    return schedule.lr_factor(step, elapsed_s, max_steps=max_steps, max_minutes=max_minutes, warmup_steps=warmup_steps)


def cosine(progress: float) -> float:
    return schedule.cosine_factor(progress, 1.0)


def test_a_short_run_reaches_its_learning_rate() -> None:
    # 5 steps: the warm-up is 5 % of the run (one step), not the 200-step default the run never reaches.
    assert factor(0, max_steps=5) == pytest.approx(1.0)
    assert factor(2, max_steps=5) == pytest.approx(cosine(2 / 5))
    # 100 steps: five warm-up steps.
    assert factor(1, max_steps=100) == pytest.approx(2 / 5 * cosine(1 / 100))
    assert factor(4, max_steps=100) == pytest.approx(cosine(4 / 100))


def test_a_long_run_warms_up_for_warmup_steps() -> None:
    assert factor(99, max_steps=100_000) == pytest.approx(0.5 * cosine(99 / 100_000))
    assert factor(199, max_steps=100_000) == pytest.approx(cosine(199 / 100_000))
    assert factor(0, max_steps=100_000, warmup_steps=0) == pytest.approx(1.0)


def test_a_time_budget_ends_the_warm_up_at_five_percent_of_its_time() -> None:
    # 10 minutes, slow steps: after 30 s (5 %) the warm-up is over even at step 3 ...
    assert factor(3, elapsed_s=30.0, max_minutes=10) == pytest.approx(cosine(0.05))
    # ... halfway through those 30 s it is half done, and the cosine follows the clock to its floor.
    assert factor(3, elapsed_s=15.0, max_minutes=10) == pytest.approx(0.5 * cosine(0.025))
    assert factor(5000, elapsed_s=600.0, max_minutes=10) == pytest.approx(1e-3)
    assert factor(50, elapsed_s=300.0, max_steps=100, max_minutes=10) == pytest.approx(cosine(0.5))
    assert math.isclose(factor(10, elapsed_s=450.0, max_steps=100, max_minutes=10), cosine(0.75))
