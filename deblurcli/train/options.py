"""What a training run is told: :class:`TrainOptions` (the ``deblur train`` options) and their validation.

Kept apart from the loop so the CLI, the bench script and the tests build a run's options without
importing torch-heavy code, and so every rule about a bad option lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deblurcli.errors import OptionError, WeightsError
from deblurcli.train import losses

#: steps used when neither budget is given (documented in ``deblur train --help``).
DEFAULT_MAX_STEPS = 10_000


@dataclass
class TrainOptions:
    """Everything ``deblur train`` can be told; defaults are the documented CLI defaults."""

    output: Path
    synthetic: Path | None = None
    pairs: Path | None = None
    pairs_csv: Path | None = None
    side_by_side: bool = False
    val_pairs: Path | None = None
    arch: str | None = None
    model: str | None = None
    weights: Path | None = None
    batch_size: int = 8
    crop: int = 256
    max_steps: int | None = None
    max_minutes: float | None = None
    lr: float | None = None
    #: longest warm-up; a short run warms up over 5 % of itself instead (see :mod:`.schedule`).
    warmup_steps: int = 200
    pixel_loss: str = "charbonnier"
    lpips: float = 0.1
    lpips_net: str = "alex"
    adv: float = 0.005
    gan: str = "wgan-gp"
    diffaug: str = "color,translation,cutout"
    d_lr: float = 1e-4
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    val_every: int = 1000
    val_count: int = 32
    val_crop: int = 256
    checkpoint_every: int = 1000
    checkpoint_minutes: float = 10.0
    log_every: int = 50
    #: share of synthetic samples left unblurred (input = target), teaching the model to leave sharp photos
    #: alone; None: ``BlurConfig``'s default.
    sharp_prob: float | None = None
    #: share of synthetic samples with a moving object composited over them (``BlurConfig.dynamic_prob``):
    #: teaches object-motion blur over a differently blurred background; 0 keeps plain camera shake.
    dynamic_prob: float = 0.0
    #: longest side kept when loading (None: 1024 for --synthetic, unlimited for pairs; 0: never shrink).
    max_side: int | None = None
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    resume: bool = False
    max_nan_retries: int = 5
    #: test hook: LPIPS on a random backbone (no download); never exposed as a user option.
    lpips_pretrained: bool = True

    def validate(self) -> None:
        """Raise :class:`OptionError` (one line a user can act on; a usage error) for options that cannot make a run."""
        sources = [s for s in (self.synthetic, self.pairs, self.pairs_csv) if s is not None]
        if len(sources) != 1:
            raise OptionError("give exactly one of --synthetic DIR, --pairs DIR or --csv-pairs FILE")
        if sum(x is not None for x in (self.arch, self.model, self.weights)) > 1:
            raise OptionError("--arch (fresh model), --model and --weights (start from weights) exclude each other")
        if self.batch_size < 1 or self.crop < 16:
            raise OptionError("--batch-size must be >= 1 and --crop >= 16")
        for name in ("max_steps", "val_every", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise OptionError(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise OptionError("--max-minutes must be positive")
        if self.warmup_steps < 0:
            raise OptionError("warm-up steps must be >= 0")
        if self.sharp_prob is not None and not 0.0 <= self.sharp_prob < 1.0:
            raise OptionError("--sharp-prob must be in [0, 1)")
        if not 0.0 <= self.dynamic_prob <= 1.0:
            raise OptionError("--dynamic-prob must be in [0, 1]")
        if self.lpips < 0 or self.adv < 0:
            raise OptionError("--lpips and --adv weights must be >= 0")
        for flag, value, table in (("--loss", self.pixel_loss, losses.PIXEL_LOSSES), ("--gan", self.gan, losses.GAN_LOSSES),
                                   ("--lpips-net", self.lpips_net, losses.LPIPS_NETS)):
            if value not in table:
                raise OptionError(f"unknown {flag} {value!r}: use {', '.join(table)}")


@dataclass
class TrainResult:
    """How a run ended: steps done, best validation PSNR and where the weights are."""

    steps: int
    stopped: str
    best_psnr: float | None
    best_step: int | None
    last: Path | None
    best: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)


def resolve_arch(name: str) -> tuple[str, dict[str, Any]]:
    """``--arch`` -> (architecture, config) from the registry's presets (generators only)."""
    from deblurcli.models.registry import generator_choices, preset

    if name not in generator_choices():
        raise WeightsError(f"unknown --arch {name!r}: choose one of {', '.join(generator_choices())}")
    return preset(name)
