"""What a run reports: ``<run>/log.csv`` (and TensorBoard when installed) and the console progress lines.

Rank 0 alone writes these. Progress lines come after the first step (so a user sees within seconds that
the run works and how fast it goes), then every ``log_every`` steps or :data:`PRINT_INTERVAL_S`
seconds, whichever comes first.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: CSV columns of ``<run>/log.csv`` (a fixed header, so resumed runs append compatible rows).
LOG_COLUMNS = (
    "step", "elapsed_s", "lr", "loss", "pixel", "lpips", "adv", "d_loss", "gp", "grad_norm",
    "samples_per_s", "val_psnr", "val_ssim", "best_psnr",
)
#: the longest wait between two progress lines.
PRINT_INTERVAL_S = 60.0


class RunLog:
    """``log.csv`` opened for appending; on resume, rows past the checkpoint's step are dropped (that
    work was lost with the kill and will be redone). Every row also goes to ``history``."""

    def __init__(self, run_dir: Path, resume: bool, step: int) -> None:
        path = run_dir / "log.csv"
        rows: list[dict[str, str]] = []
        if resume and path.exists():
            with open(path, newline="", encoding="utf-8") as fh:
                rows = [r for r in csv.DictReader(fh) if r.get("step", "").isdigit() and int(r["step"]) <= step]
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        self.history: list[dict[str, Any]] = []
        self._fh = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._writer = csv.DictWriter(self._fh, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        self._tb: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=step + 1)
        except ImportError:  # tensorboard is optional
            pass

    def write(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        self._writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._fh.flush()
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, row["step"])

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()


class Progress:
    """Collects each step's values and says when a progress row is due (see the module docstring)."""

    def __init__(self, log_every: int, samples_per_step: int) -> None:
        self.log_every = log_every
        self.samples_per_step = samples_per_step
        self.window: list[dict[str, float]] = []
        self.rows = 0
        self._t_window = self._last_row = time.monotonic()

    def add(self, step: int, values: dict[str, float], elapsed_s: float) -> dict[str, Any] | None:
        """Record one step's values; return the summary row when one is due (and start a new window)."""
        self.window.append(values)
        now = time.monotonic()
        if self.rows and step % self.log_every and now - self._last_row < PRINT_INTERVAL_S:
            return None
        n = len(self.window)
        row: dict[str, Any] = {k: sum(v[k] for v in self.window) / n for k in self.window[0]}
        row.update(step=step, elapsed_s=round(elapsed_s, 1),
                   samples_per_s=n * self.samples_per_step / max(now - self._t_window, 1e-9))
        self.window, self.rows = [], self.rows + 1
        self._t_window = self._last_row = now
        return row

    def exclude(self, seconds: float) -> None:
        """Leave time spent outside training steps (validation, checkpoints) out of samples/s."""
        self._t_window += seconds


def progress_line(row: Mapping[str, Any], max_steps: int | None, max_minutes: float | None, elapsed_s: float,
                  lpips: bool, adversarial: bool) -> str:
    """One console line: step, losses, learning rate, speed and time."""
    total = f"/{max_steps}" if max_steps is not None else ""
    parts = [f"step {row['step']}{total}", f"loss {row.get('loss', float('nan')):.4f}"]
    if lpips:
        parts.append(f"lpips {row['lpips']:.4f}")
    if adversarial:
        parts.append(f"adv {row['adv']:.3f} D {row['d_loss']:.3f}")
    parts += [f"lr {row.get('lr', 0):.2e}", f"{row['samples_per_s']:.1f} samples/s", f"{elapsed_s / 60:.1f} min"]
    if max_minutes is not None:
        parts.append(f"of {max_minutes:g}")
    return " | ".join(parts)
