"""The training loop: generator (+ optional conditional critic), EMA, schedule, checkpoints, validation.

One step, in order:

1. a batch of random crops (flipped/rotated) from the in-memory bank; for ``--synthetic`` the blurry
   input is synthesised on the device from the sharp crop (with a margin that is cut off afterwards, so
   no sample shows padding-made blur at its border);
2. ``fake = G(blurry)`` under autocast (bf16 on GPUs, fp32 on the CPU);
3. if the adversarial weight is non-zero, a critic step on ``[blurry, sharp]`` vs ``[blurry, fake.detach()]``
   with one DiffAugment draw shared by both, plus the fp32 gradient penalty for WGAN-GP;
4. the generator step on pixel + LPIPS + adversarial loss, the adversarial term computed from the critic
   on the *non-detached*, augmented fake so its gradient reaches G; gradients clipped; EMA updated.

A non-finite loss or gradient never reaches the weights: the step is dropped, the run rolls back to the
last good in-memory snapshot and the learning rate is halved; after ``max_nan_retries`` failures in a row
it stops with a message (the checkpoint on disk is the last good state).

Wall-clock budgets (``--max-minutes``) count training time across resumes, and the cosine schedule follows
whichever budget is further along, so a resumed run finishes its schedule where an uninterrupted one would.

Under ``torchrun`` (see :mod:`deblurcli.train.distributed`) the same loop runs on every rank: G and the
critic are wrapped in DistributedDataParallel (gradients averaged over ranks, so ``--batch-size`` is per
process), each rank trains on its own share of the images with its own random streams, and the EMA,
being updated from identical weights, stays identical. Rank 0 alone logs, validates, exports and
checkpoints; the checkpoint holds unwrapped state dicts and rank 0's random state, so it resumes with any
number of processes. The clock, stop requests and the "drop this non-finite step" decision are shared
each step, so every rank takes the same branch.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import json
import math
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from deblurcli.errors import DeblurError, WeightsError
from deblurcli.train import checkpoint as ckpt
from deblurcli.train import data as data_mod
from deblurcli.train import distributed, losses
from deblurcli.train.diffaug import DiffAugment

#: ``--arch`` spellings -> registry preset (``nafnet`` means the default small NAFNet).
ARCH_ALIASES = {"nafnet": "nafnet-s"}
#: CSV columns of ``<run>/log.csv`` (a fixed header, so resumed runs append compatible rows).
LOG_COLUMNS = (
    "step", "elapsed_s", "lr", "loss", "pixel", "lpips", "adv", "d_loss", "gp", "grad_norm",
    "samples_per_s", "val_psnr", "val_ssim", "best_psnr",
)
EXPORTS = ("best.safetensors", "last.safetensors")


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
    #: longest side kept when loading (None: 1024 for --synthetic, unlimited for pairs; 0: never shrink).
    max_side: int | None = None
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    resume: bool = False
    max_nan_retries: int = 5
    #: test hook: LPIPS on a random backbone (no download); never exposed as a user option.
    lpips_pretrained: bool = True

    #: steps used when neither budget is given (documented in ``deblur train --help``).
    DEFAULT_MAX_STEPS = 10_000

    def validate(self) -> None:
        sources = [s for s in (self.synthetic, self.pairs, self.pairs_csv) if s is not None]
        if len(sources) != 1:
            raise DeblurError("give exactly one of --synthetic DIR, --pairs DIR or --pairs-csv FILE")
        if sum(x is not None for x in (self.arch, self.model, self.weights)) > 1:
            raise DeblurError("--arch (fresh model), --model and --weights (start from weights) exclude each other")
        if self.batch_size < 1 or self.crop < 16:
            raise DeblurError("--batch-size must be >= 1 and --crop >= 16")
        for name in ("max_steps", "val_every", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise DeblurError(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise DeblurError("--max-minutes must be positive")
        if self.sharp_prob is not None and not 0.0 <= self.sharp_prob < 1.0:
            raise DeblurError("--sharp-prob must be in [0, 1)")
        if self.lpips < 0 or self.adv < 0:
            raise DeblurError("--lpips and --adv weights must be >= 0")
        if self.pixel_loss not in losses.PIXEL_LOSSES:
            raise DeblurError(f"unknown pixel loss {self.pixel_loss!r}: use {', '.join(losses.PIXEL_LOSSES)}")
        if self.gan not in losses.GAN_KINDS:
            raise DeblurError(f"unknown --gan {self.gan!r}: use {', '.join(losses.GAN_KINDS)}")
        if self.lpips_net not in losses.LPIPS_NETS:
            raise DeblurError(f"unknown --lpips-net {self.lpips_net!r}: use {', '.join(losses.LPIPS_NETS)}")


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
    from deblurcli.models.registry import GENERATORS, PRESETS

    preset = ARCH_ALIASES.get(name, name)
    if preset not in PRESETS or PRESETS[preset][0] not in GENERATORS:
        choices = sorted({*ARCH_ALIASES, *(k for k, (a, _) in PRESETS.items() if a in GENERATORS)})
        raise WeightsError(f"unknown --arch {name!r}: choose one of {', '.join(choices)}")
    arch, config = PRESETS[preset]
    return arch, copy.deepcopy(config)


def cosine_factor(progress: float, warmup: float, floor: float = 1e-3) -> float:
    """Learning-rate multiplier: linear warm-up (``warmup`` in [0, 1] of the way through it), then a
    cosine from 1 down to ``floor`` as ``progress`` goes 0 -> 1."""
    p = min(max(progress, 0.0), 1.0)
    return min(1.0, warmup) * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


class _StopFlag:
    """SIGINT/SIGTERM set a flag checked between steps, so a checkpoint is written from a consistent
    state; a second Ctrl-C interrupts immediately (the previous checkpoint is still intact)."""

    #: Under torchrun a Ctrl-C reaches each worker twice (from the terminal and forwarded by the agent),
    #: so there a second signal this soon after the first is the same request, not an impatient user.
    DUPLICATE_WINDOW_S = 5.0

    def __init__(self, distributed: bool = False) -> None:
        self.reason: str | None = None
        self._previous: dict[signal.Signals, Any] = {}
        self._window = self.DUPLICATE_WINDOW_S if distributed else 0.0
        self._first = 0.0

    def _handle(self, signum: int, frame: Any) -> None:
        if self.reason is not None:
            if time.monotonic() - self._first < self._window:
                return
            raise KeyboardInterrupt
        self.request("interrupted" if signum == signal.SIGINT else "terminated")

    def request(self, reason: str) -> None:
        """Stop at the next step boundary (a signal here, or one another rank received)."""
        if self.reason is None:
            self._first = time.monotonic()
        self.reason = reason

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: signals stay with the caller
            pass
        try:
            yield
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)


def _autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[Any]:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class Trainer:
    """A training run bound to its run folder; :meth:`run` trains until a budget or a signal stops it."""

    def __init__(self, opts: TrainOptions, console: Any | None = None, dist: distributed.Dist | None = None) -> None:
        from rich.console import Console

        from deblurcli.devices import resolve_device, resolve_precision

        opts.validate()
        self.opts = opts
        self.dist = dist
        self.is_main = dist is None or dist.is_main
        self.world_size = 1 if dist is None else dist.world_size
        # Rank 0 speaks for the run; the others would only repeat it.
        self.console = (console or Console(stderr=True, soft_wrap=True)) if self.is_main else Console(quiet=True)
        self.device = dist.device if dist is not None else resolve_device(opts.device)
        self.dtype = resolve_precision(opts.precision, self.device)
        self.run_dir = Path(opts.output)
        self.ckpt_path = ckpt.checkpoint_path(self.run_dir)
        state = self._on_main(self._read_state)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.channels_last = self.device.type == "cuda"

        torch.manual_seed(opts.seed)
        self.gens = {
            "data": torch.Generator().manual_seed(opts.seed),
            "blur": torch.Generator(device=self.device).manual_seed(opts.seed + 1),
            "aug": torch.Generator(device=self.device).manual_seed(opts.seed + 2),
            "gp": torch.Generator(device=self.device).manual_seed(opts.seed + 3),
        }
        if not self.is_main:
            self._reseed(0)
        self.step = 0
        self.elapsed_before = 0.0
        self.lr_scale = 1.0
        self.best_psnr: float | None = None
        self.best_step: int | None = None
        self.fresh = False

        self._build_generator(state)
        self._build_critic(state)
        self.lpips = (
            losses.LPIPSLoss(opts.lpips_net, pretrained_backbone=opts.lpips_pretrained).to(self.device)
            if opts.lpips > 0
            else None
        )
        self.diffaug = DiffAugment(opts.diffaug, self.gens["aug"])
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        if state is not None:
            self._restore(state)
        # Training runs through these (DDP wrappers under torchrun); checkpoints, EMA and validation use
        # the plain modules, so saved state dicts never depend on how many processes wrote them.
        self.g_train: nn.Module = self.generator
        self.critic_train: nn.Module | None = self.critic
        if dist is not None:
            self.g_train = distributed.wrap(self.generator, dist)
            if self.critic is not None:
                self.critic_train = distributed.wrap(self.critic, dist)
            distributed.broadcast_tensors(list(self.ema.state_dict().values()), dist)
        self.base_lr = opts.lr if opts.lr is not None else (1e-3 if self.fresh else 1e-4)
        self._build_data()
        self.snapshot = self._capture()
        self.failures = 0
        self.clock = self.elapsed_before
        self.log_fh: TextIO | None = None  # log.csv and TensorBoard: rank 0 opens them in run()
        self.tb: Any = None

    def _read_state(self) -> dict[str, Any] | None:
        """The checkpoint to resume from (None for a fresh run), after the "run exists" check."""
        if self.ckpt_path.exists() and not self.opts.resume:
            raise DeblurError(
                f"{self.run_dir}: holds a training run already; pass --resume to continue it or choose another --output"
            )
        state = ckpt.load_checkpoint(self.ckpt_path) if self.opts.resume else None
        if state is not None:
            ckpt.remove_stale_temps(self.run_dir, EXPORTS)
        return state

    def _on_main(self, fn: Any) -> Any:
        """``fn()`` here, or under torchrun on rank 0 with its result (or its error) sent to every rank."""
        return fn() if self.dist is None else distributed.from_main(self.dist, fn)

    def _reseed(self, step: int) -> None:
        """Seed this rank's random streams from (seed, rank, step): ranks other than 0 draw their own crops,
        blur and augmentations, and re-derive them on resume (the checkpoint holds rank 0's state only)."""
        assert self.dist is not None
        for k, g in enumerate(self.gens.values()):
            g.manual_seed(distributed.rank_seed(self.opts.seed, k, self.dist.rank, step))

    def _barrier(self) -> None:
        if self.dist is not None:
            distributed.barrier(self.dist)

    # ------------------------------------------------------------------------------------ setup

    def _build_generator(self, state: Mapping[str, Any] | None) -> None:
        from deblurcli.models.registry import arch_of, build

        opts = self.opts
        if state is not None:
            self.arch, self.g_config = state["arch"], json.loads(state["config"])
            g = build(self.arch, self.g_config)
            if any(x is not None for x in (opts.arch, opts.model, opts.weights)):
                self.console.print("[dim]resuming: the model comes from the checkpoint (--arch/--model/--weights ignored)[/]")
            self.source = state.get("source", "")
        elif opts.arch is not None:
            self.arch, self.g_config = resolve_arch(opts.arch)
            g = build(self.arch, self.g_config)
            self.fresh = True
            self.source = f"fresh {opts.arch}"
        else:
            from deblurcli import weights

            name = opts.model if opts.model is not None or opts.weights is not None else weights.default_model_name()
            g = weights.load_generator(name=name if opts.weights is None else None, weights=opts.weights)
            try:
                self.arch = arch_of(g)
            except ValueError:
                raise WeightsError(
                    f"cannot fine-tune {type(g).__name__}: deblur train trains nafnet and dgf generators"
                ) from None
            self.g_config = copy.deepcopy(g.config)
            self.source = str(opts.weights) if opts.weights is not None else f"model {name}"
        self.generator = g.to(self.device).train()
        if self.channels_last:
            self.generator = self.generator.to(memory_format=torch.channels_last)
        self.ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.g_opt = torch.optim.AdamW(self.generator.parameters(), lr=1e-4, betas=(0.9, 0.9), weight_decay=0.0)
        self.ema_params: list[torch.Tensor] = list(self.ema.parameters())
        self.g_params: list[torch.Tensor] = list(self.generator.parameters())
        self.ema_buffers = list(self.ema.buffers())
        self.g_buffers = list(self.generator.buffers())

    def _build_critic(self, state: Mapping[str, Any] | None) -> None:
        from deblurcli.models.registry import PRESETS, build

        self.critic: nn.Module | None = None
        self.d_opt: torch.optim.Optimizer | None = None
        if self.opts.adv <= 0:
            return
        if state is not None and "critic" in state and state.get("gan") == self.opts.gan:
            config = json.loads(state["critic_config"])
        else:
            # WGAN-GP's per-sample gradient penalty is invalid with BatchNorm and over-constrained with
            # spectral norm; the other losses get spectral norm's Lipschitz bound for stability.
            config = {**PRESETS["patchgan"][1], "norm": "none" if self.opts.gan == "wgan-gp" else "spectral"}
        self.critic_config = config
        self.critic = build("patchgan", config).to(self.device).train()
        if self.channels_last:
            self.critic = self.critic.to(memory_format=torch.channels_last)
        betas = (0.0, 0.9) if self.opts.gan == "wgan-gp" else (0.5, 0.999)
        self.d_opt = torch.optim.Adam(self.critic.parameters(), lr=self.opts.d_lr, betas=betas)

    def _restore(self, state: Mapping[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.ema.load_state_dict(state["ema"])
        self.g_opt.load_state_dict(state["g_opt"])
        if self.critic is not None and "critic" in state and state.get("gan") == self.opts.gan:
            self.critic.load_state_dict(state["critic"])
            assert self.d_opt is not None
            self.d_opt.load_state_dict(state["d_opt"])
        elif self.critic is not None:
            self.console.print("[dim]resuming with a new critic (the checkpoint had none for this --gan)[/]")
        if "scaler" in state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.elapsed_before = float(state["elapsed_s"])
        self.lr_scale = float(state.get("lr_scale", 1.0))
        self.best_psnr = state.get("best_psnr")
        self.best_step = state.get("best_step")
        self.fresh = bool(state.get("fresh", False))
        if self.is_main:
            ckpt.restore_rng_states(state["rng"], self.gens)
        else:
            self._reseed(self.step)
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.world_size:
            self.console.print(f"[dim]resuming a run last trained by {saved_world} process(es) with {self.world_size}[/]")

    def _build_data(self) -> None:
        from rich.markup import escape

        from deblurcli.blur import BlurConfig

        opts = self.opts
        self.blur_cfg = BlurConfig() if opts.sharp_prob is None else BlurConfig(sharp_prob=opts.sharp_prob)
        self.val: list[tuple[torch.Tensor, torch.Tensor]]
        # Synthetic crops carry a margin that is blurred then cut off (blur.py pads by reflection).
        self.margin = self.blur_cfg.kernel_size // 2 if opts.synthetic is not None else 0
        val_crop = opts.val_crop or None
        problems: list[str] = []
        t0 = time.monotonic()
        # Decode everything first and split the readable images, so an unreadable file never leaves the
        # validation split empty; the split depends only on the seed and the readable files.
        decode: Callable[[Any], torch.Tensor]
        if opts.synthetic is not None:
            items: list[Any] = self._on_main(lambda: data_mod.list_photos(opts.synthetic))
            max_side = 1024 if opts.max_side is None else (opts.max_side or None)
            min_side = opts.crop + 2 * self.margin
            decode = lambda path: data_mod.load_photo(path, max_side, min_side)
            description: dict[str, Any] = {"kind": "synthetic", "root": str(opts.synthetic), "max_side": max_side,
                                           "blur": asdict(self.blur_cfg)}
        else:
            items = self._on_main(
                lambda: data_mod.find_training_pairs(opts.pairs, opts.side_by_side, opts.pairs_csv, self.console)
            )
            decode = lambda pair: data_mod.load_pair_stack(pair, opts.max_side or None, opts.crop)
            description = {"kind": "pairs", "root": str(opts.pairs or opts.pairs_csv), "side_by_side": opts.side_by_side,
                           "max_side": opts.max_side or None}
        if self.dist is None:
            images = data_mod.decode_all(items, decode, problems)
            if opts.val_pairs is None:
                train_idx, val_idx = data_mod.split_holdout(len(images), 0.05, opts.val_count, opts.seed)
            else:
                train_idx, val_idx = list(range(len(images))), []
            train_images, held_out = [images[i] for i in train_idx], [images[i] for i in val_idx]
            n_train, n_val = len(train_idx), len(val_idx)
            del images  # the bank holds its own packed copy
        else:
            train_images, held_out, n_train, n_val = self._load_share(items, decode, problems)
        for line in problems:
            self.console.print(f"[yellow]warning:[/] left out {escape(line)}", highlight=False)
        self.bank = data_mod.CropBank(train_images)
        del train_images
        description["photos" if opts.synthetic is not None else "pairs"] = n_train

        def build_val() -> None:
            if not self.is_main:  # rank 0 alone validates
                self.val = []
            elif opts.val_pairs is not None:
                self.val = data_mod.val_from_pairs(opts.val_pairs, opts.side_by_side, val_crop, opts.val_count, self.console)
            elif opts.synthetic is not None:
                self.val = self._synthetic_val(held_out, val_crop)
            else:
                self.val = [data_mod.split_stack(data_mod.u8_to_float(data_mod.center_crop(x, val_crop))) for x in held_out]

        if self.dist is None:
            build_val()
        else:
            distributed.gather(self.dist, build_val)  # a broken validation set stops every rank
        description["val"] = str(opts.val_pairs) if opts.val_pairs is not None else f"{n_val} held out (seed {opts.seed})"
        description["val_crop"] = val_crop or 0
        self.data_description = description
        if self.device.type == "cuda" and self.bank.nbytes < 0.25 * torch.cuda.mem_get_info(self.device)[0]:
            self.bank.to(self.device)  # gather crops on the GPU: no host->device copy per step
        kind = "photos" if opts.synthetic is not None else "pairs"
        share = f" ({len(self.bank)} per process on rank 0)" if self.dist is not None else ""
        self.console.print(
            f"data: {n_train} training {kind}{share} ({self.bank.nbytes / 2**20:.0f} MiB in memory), "
            f"{len(self.val)} validation images, loaded in {time.monotonic() - t0:.0f} s"
        )
        self.val_input = self._score(self.val, None)

    def _load_share(
        self, items: list[Any], decode: Callable[[Any], torch.Tensor], problems: list[str]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], int, int]:
        """Under torchrun: (this rank's training images, held-out images on rank 0, training and held-out
        counts).

        Each rank decodes every ``world_size``-th item, so loading is N times faster and each process holds
        about 1/N of the dataset; the ranks then agree on which items were readable and split those exactly
        as a single process would (same held-out set, whatever the number of processes). When there are
        fewer training images than ranks, every rank trains on all of them.
        """
        assert self.dist is not None
        rank, world = self.dist.rank, self.dist.world_size
        local: dict[int, torch.Tensor] = {}

        def decode_mine() -> tuple[list[int], list[str]]:
            found: list[str] = []
            for i, img in data_mod.decode_indexed(items[rank::world], decode, found):
                local[rank + world * i] = img
            return sorted(local), found

        shares = distributed.gather(self.dist, decode_mine)
        readable = sorted(i for ids, _ in shares for i in ids)
        problems.extend(p for _, found in shares for p in found)
        if self.opts.val_pairs is None:
            train_pos, val_pos = data_mod.split_holdout(len(readable), 0.05, self.opts.val_count, self.opts.seed)
        else:
            train_pos, val_pos = list(range(len(readable))), []
        train_ids, val_ids = [readable[p] for p in train_pos], [readable[p] for p in val_pos]
        owners = {data_mod.shard_owner(i, world) for i in train_ids}
        mine = train_ids if len(owners) < world else [i for i in train_ids if data_mod.shard_owner(i, world) == rank]
        needed = mine + (val_ids if self.is_main else [])
        missing = [i for i in dict.fromkeys(needed) if i not in local]

        def decode_missing() -> None:  # readable on another rank, so an error here is an error
            for k, img in data_mod.decode_indexed([items[i] for i in missing], decode, None):
                local[missing[k]] = img

        distributed.gather(self.dist, decode_missing)
        held_out = [local[i] for i in val_ids] if self.is_main else []
        return [local[i] for i in mine], held_out, len(train_ids), len(val_ids)

    def _synthetic_val(self, photos: list[torch.Tensor], val_crop: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Fixed validation pairs: centre crops of held-out photos, blurred once on the CPU with a seed of
        their own (one image at a time, in order), so they are the same on every device and after every
        resume. Each crop keeps the synthesis margin around it, cut off after blurring."""
        from deblurcli.blur import synthesize

        # No "leave it sharp" samples: one identical pair would make the mean PSNR infinite.
        cfg = dataclasses.replace(self.blur_cfg, sharp_prob=0.0)
        gen = torch.Generator().manual_seed(self.opts.seed + 10_007)
        m = self.margin
        val = []
        for img in photos:
            room = min(img.shape[0], img.shape[1]) - 2 * m
            sharp = data_mod.u8_to_float(data_mod.center_crop(img, min(val_crop, room) + 2 * m if val_crop else room + 2 * m))
            blurry = synthesize(sharp, cfg, gen)
            val.append((blurry[..., m:-m, m:-m], sharp[..., m:-m, m:-m]) if m else (blurry, sharp))
        return val

    # ------------------------------------------------------------------------------------ state

    def _capture(self) -> dict[str, Any]:
        """The in-memory last good state NaN recovery rolls back to."""
        return ckpt.clone_tree({
            "step": self.step,
            "generator": self.generator.state_dict(),
            "ema": self.ema.state_dict(),
            "g_opt": self.g_opt.state_dict(),
            "critic": self.critic.state_dict() if self.critic is not None else None,
            "d_opt": self.d_opt.state_dict() if self.d_opt is not None else None,
            "scaler": self.scaler.state_dict(),
        })

    def _rollback(self) -> None:
        snap = ckpt.clone_tree(self.snapshot)  # optimisers alias loaded tensors: never hand them the snapshot
        self.step = snap["step"]
        self.generator.load_state_dict(snap["generator"])
        self.ema.load_state_dict(snap["ema"])
        self.g_opt.load_state_dict(snap["g_opt"])
        if self.critic is not None and self.d_opt is not None:
            self.critic.load_state_dict(snap["critic"])
            self.d_opt.load_state_dict(snap["d_opt"])
        if self.scaler.is_enabled():
            self.scaler.load_state_dict(snap["scaler"])

    def _checkpoint_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "step": self.step,
            "elapsed_s": self.local_elapsed(),
            "arch": self.arch,
            "config": json.dumps(self.g_config),
            "source": self.source,
            "fresh": self.fresh,
            "generator": self.generator.state_dict(),
            "ema": self.ema.state_dict(),
            "g_opt": self.g_opt.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": ckpt.rng_states(self.gens),
            "lr_scale": self.lr_scale,
            "best_psnr": self.best_psnr,
            "best_step": self.best_step,
            "data": json.dumps(self.data_description),
            "options": json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.opts).items()}),
            "world_size": self.world_size,  # informative only: resuming works with any number of processes
        }
        if self.critic is not None and self.d_opt is not None:
            state.update(critic=self.critic.state_dict(), d_opt=self.d_opt.state_dict(),
                         critic_config=json.dumps(self.critic_config), gan=self.opts.gan)
        return state

    def save_checkpoint(self) -> None:
        """Rank 0 writes the checkpoint; every rank notes it (the next one is due at the same step on all)
        and waits for the write, so no rank runs ahead of a state that may have to be resumed."""
        if self.is_main:
            ckpt.save_checkpoint(self.ckpt_path, self._checkpoint_state())
        self.last_checkpoint_elapsed = self.elapsed()
        self.last_checkpoint_step = self.step
        self._barrier()

    def local_elapsed(self) -> float:
        """Training seconds across resumes, by this process's clock."""
        return self.elapsed_before + (time.monotonic() - self.t_start)

    def elapsed(self) -> float:
        """Training seconds as the schedule and the budgets see them: under torchrun rank 0's clock as of
        the current step, shared with every rank (their clocks differ, their learning rates must not)."""
        return self.local_elapsed() if self.dist is None else self.clock

    def _sync(self, stop: _StopFlag) -> None:
        """Under torchrun, share rank 0's clock and any rank's stop request (one small all-reduce a step)."""
        if self.dist is None:
            return
        flags = torch.tensor(
            [self.local_elapsed() if self.is_main else 0.0, stop.reason == "interrupted", stop.reason == "terminated"],
            dtype=torch.float64, device=self.device,
        )
        clock, interrupted, terminated = distributed.sum_(flags).tolist()
        self.clock = clock
        if interrupted or terminated:  # the same reason on every rank, whichever got the signal
            stop.request("interrupted" if interrupted else "terminated")

    # ------------------------------------------------------------------------------------ steps

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(blurry, sharp) float N x 3 x crop x crop on the device."""
        from deblurcli.blur import synthesize

        opts = self.opts
        crops = self.bank.sample(opts.batch_size, opts.crop + 2 * self.margin, self.gens["data"])
        crops = data_mod.u8_to_float(crops.to(self.device, non_blocking=True))
        if opts.synthetic is not None:
            sharp = crops
            blurry = synthesize(sharp, self.blur_cfg, self.gens["blur"])
            if self.margin:
                m = self.margin
                sharp, blurry = sharp[..., m:-m, m:-m], blurry[..., m:-m, m:-m]
        else:
            blurry, sharp = data_mod.split_stack(crops)
        if self.channels_last:
            blurry = blurry.contiguous(memory_format=torch.channels_last)
            sharp = sharp.contiguous(memory_format=torch.channels_last)
        return blurry, sharp

    def lr_factor(self) -> float:
        opts = self.opts
        progress = 0.0
        if opts.max_steps is not None:
            progress = self.step / opts.max_steps
        if opts.max_minutes is not None:
            progress = max(progress, self.elapsed() / (opts.max_minutes * 60))
        warm = (self.step + 1) / opts.warmup_steps if opts.warmup_steps > 0 else 1.0
        return cosine_factor(progress, warm) * self.lr_scale

    def _critic_step(self, blurry: torch.Tensor, sharp: torch.Tensor, fake: torch.Tensor) -> list[float] | None:
        """One critic update; returns [d_loss, gp] or None when it was not finite (nothing applied)."""
        assert self.critic is not None and self.d_opt is not None
        critic, opts = self.critic, self.opts
        assert self.critic_train is not None
        critic.requires_grad_(True)
        real_pair = torch.cat([blurry, sharp], dim=1)
        fake_pair = torch.cat([blurry, fake.detach()], dim=1)
        if self.diffaug:
            params = self.diffaug.draw(real_pair.shape[0], real_pair.shape[2], real_pair.shape[3])
            real_pair, fake_pair = self.diffaug(real_pair, params), self.diffaug(fake_pair, params)
        with _autocast(self.device, self.dtype):
            d_loss = losses.d_loss(opts.gan, self.critic_train(real_pair), self.critic_train(fake_pair))
        gp = torch.zeros((), device=self.device)
        if opts.gan == "wgan-gp":
            # After augmentation the condition channels of both pairs are identical; penalise through the image.
            gp = losses.gradient_penalty(critic, real_pair[:, :3], real_pair[:, 3:], fake_pair[:, 3:], self.gens["gp"])
        total = d_loss + gp
        self.d_opt.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.d_opt)
        gn = torch.nn.utils.clip_grad_norm_(critic.parameters(), math.inf)  # measured (NaN check), not clipped
        values = self._mean_over_ranks(torch.stack([d_loss.detach().float(), gp.detach().float(), gn.float()]))
        critic.requires_grad_(False)
        if not all(math.isfinite(v) for v in values[:2]) or (not self.scaler.is_enabled() and not math.isfinite(values[2])):
            self._drop_step(self.d_opt)
            return None
        self.scaler.step(self.d_opt)
        return values[:2]

    def train_step(self) -> dict[str, float] | None:
        """One generator (+ critic) step; returns the logged values, or None if it was dropped (NaN/inf)."""
        opts = self.opts
        factor = self.lr_factor()
        for group in self.g_opt.param_groups:
            group["lr"] = self.base_lr * factor
        if self.d_opt is not None:
            for group in self.d_opt.param_groups:
                group["lr"] = opts.d_lr * factor
        blurry, sharp = self.batch()
        with _autocast(self.device, self.dtype):
            fake = self.g_train(blurry)
        d_values = [0.0, 0.0]
        if self.critic is not None:
            d_result = self._critic_step(blurry, sharp, fake)
            if d_result is None:
                return None
            d_values = d_result
        terms = self.generator_losses(blurry, sharp, fake)
        total = terms["total"]
        self.g_opt.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.g_opt)
        gn = torch.nn.utils.clip_grad_norm_(self.g_params, opts.grad_clip)
        values = self._mean_over_ranks(
            torch.stack([terms[k].detach().float() for k in ("total", "pixel", "lpips", "adv")] + [gn.float()])
        )
        if not all(math.isfinite(v) for v in values[:4]) or (not self.scaler.is_enabled() and not math.isfinite(values[4])):
            self._drop_step(self.g_opt)
            return None
        self.scaler.step(self.g_opt)
        self.scaler.update()
        self._update_ema()
        self.step += 1
        return dict(zip(("loss", "pixel", "lpips", "adv", "grad_norm"), values)) | {
            "d_loss": d_values[0], "gp": d_values[1], "lr": self.base_lr * factor,
        }

    def _mean_over_ranks(self, values: torch.Tensor) -> list[float]:
        """Logged values averaged over ranks. A NaN on any rank reaches all of them, so every rank drops
        the same steps (the gradient norms are already equal: DDP averaged the gradients)."""
        if self.dist is not None:
            values = distributed.sum_(values) / self.world_size
        return values.tolist()  # type: ignore[no-any-return]

    def generator_losses(self, blurry: torch.Tensor, sharp: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """The generator's loss terms (unweighted) and their weighted ``total``.

        The adversarial term scores ``[blurry, fake]`` with ``fake`` *not* detached (the seed code's bug
        was detaching it, so no adversarial gradient ever reached G), through a fresh DiffAugment draw.
        """
        opts = self.opts
        zero = torch.zeros((), device=fake.device)
        terms = {"pixel": losses.pixel_loss(opts.pixel_loss, fake, sharp), "lpips": zero, "adv": zero}
        total = terms["pixel"]
        if self.lpips is not None:
            with _autocast(self.device, self.dtype):
                terms["lpips"] = self.lpips(fake, sharp)
            total = total + opts.lpips * terms["lpips"]
        if self.critic is not None:
            fake_pair = torch.cat([blurry, fake], dim=1)
            if self.diffaug:
                n, _, h, w = fake_pair.shape
                fake_pair = self.diffaug(fake_pair, self.diffaug.draw(n, h, w))
            with _autocast(self.device, self.dtype):
                terms["adv"] = losses.g_loss(opts.gan, self.critic(fake_pair))
            total = total + opts.adv * terms["adv"]
        terms["total"] = total
        return terms

    def _drop_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Discard a step's gradients; close the scaler's bookkeeping so the next ``unscale_`` is allowed."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler.is_enabled():
            self.scaler.update()

    @torch.no_grad()
    def _update_ema(self) -> None:
        # Early on the EMA follows the weights closely (decay ramps up), so "best" is usable from the start.
        decay = min(self.opts.ema_decay, (1 + self.step) / (10 + self.step))
        torch._foreach_lerp_(self.ema_params, self.g_params, 1 - decay)  # one fused op for all tensors
        for e, b in zip(self.ema_buffers, self.g_buffers):
            e.copy_(b)

    def _recover(self) -> None:
        """Roll back to the last good state with half the learning rate, or stop after too many failures."""
        self.failures += 1
        if self.failures > self.opts.max_nan_retries:
            raise (DeblurError if self.dist is None else distributed.AllRanksError)(
                f"training diverged: the loss was NaN/inf {self.failures} times in a row even after lowering the "
                f"learning rate to {self.base_lr * self.lr_scale:.2e}; the last good state is in {self.ckpt_path} "
                "(try a lower --lr, or --precision fp32)"
            )
        self._rollback()
        self.lr_scale *= 0.5
        self.console.print(
            f"[yellow]warning: non-finite loss; rolled back to step {self.step} and lowered the learning rate "
            f"to {self.base_lr * self.lr_scale:.2e} (failure {self.failures}/{self.opts.max_nan_retries})[/]"
        )

    # ------------------------------------------------------------------------------------ validation

    @torch.no_grad()
    def _score(self, pairs: list[tuple[torch.Tensor, torch.Tensor]], model: nn.Module | None) -> dict[str, float]:
        """Mean PSNR/SSIM of ``model`` (or of the blurry input, for None) over ``pairs``.

        Same conventions as ``deblur eval`` (8-bit quantised output, per-image PSNR averaged in dB, SSIM
        11x11 Gaussian window without downsampling), computed on the device with only these two metrics,
        since validation runs often.
        """
        import piq

        psnrs, ssims = [], []
        for blurry, sharp in pairs:
            x = blurry.to(self.device)
            if model is None:
                out = x
            else:
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with _autocast(self.device, self.dtype):
                    out = model(x)
            out = quantize8(out.float())
            ref = quantize8(sharp.to(self.device).float())
            mse = float((out.double() - ref.double()).pow(2).mean())
            psnrs.append(math.inf if mse == 0 else 10 * math.log10(1 / mse))
            ssims.append(float(piq.ssim(out, ref, kernel_size=11, kernel_sigma=1.5, data_range=1.0, downsample=False)))
        if not psnrs:
            return {}
        return {"psnr": sum(psnrs) / len(psnrs), "ssim": sum(ssims) / len(ssims)}

    def validate(self) -> dict[str, float]:
        """Score the EMA on the validation set and export it (rank 0 only; {} elsewhere)."""
        self.last_val_step = self.step
        if not self.is_main:
            return {}
        scores = self._score(self.val, self.ema)
        if not scores:
            return {}
        improved = self.best_psnr is None or scores["psnr"] > self.best_psnr
        if improved:
            self.best_psnr, self.best_step = scores["psnr"], self.step
        self.export("last.safetensors", scores)
        if improved:
            self.export("best.safetensors", scores)
        self._print_validation(scores, improved)
        return scores

    def export(self, name: str, scores: Mapping[str, float] | None) -> Path:
        """EMA weights with the metadata ``deblur``/``deblur eval`` and a reader of the file want (written
        by rank 0 only: the EMA is the same on every rank)."""
        from deblurcli import __version__
        from deblurcli.weights import save_generator

        path = self.run_dir / name
        if not self.is_main:
            return path

        meta: dict[str, Any] = {
            "steps": self.step,
            "data": self.data_description,
            "source": self.source,
            "crop": self.opts.crop,
            "loss": self._loss_description(),
            "trained_with": f"deblurcli {__version__}",
        }
        if scores:
            meta.update(val_psnr=round(scores["psnr"], 4), val_ssim=round(scores["ssim"], 5), val_images=len(self.val))
            if self.val_input:
                meta.update(val_input_psnr=round(self.val_input["psnr"], 4), val_input_ssim=round(self.val_input["ssim"], 5))
        save_generator(self.ema, path, meta)
        return path

    def _loss_description(self) -> str:
        opts = self.opts
        parts = [opts.pixel_loss]
        if self.lpips is not None:
            parts.append(f"{opts.lpips:g}*lpips-{opts.lpips_net}")
        if self.critic is not None:
            parts.append(f"{opts.adv:g}*{opts.gan}" + (f"+diffaug({opts.diffaug})" if self.diffaug else ""))
        return " + ".join(parts)

    def _print_validation(self, scores: Mapping[str, float], improved: bool) -> None:
        from rich.table import Table

        table = Table(title=f"validation at step {self.step} ({len(self.val)} images)", title_justify="left")
        table.add_column("")
        table.add_column("PSNR (dB)", justify="right")
        table.add_column("SSIM", justify="right")
        if self.val_input:
            table.add_row("blurry input", f"{self.val_input['psnr']:.2f}", f"{self.val_input['ssim']:.4f}")
        table.add_row("model (EMA)", f"{scores['psnr']:.2f}", f"{scores['ssim']:.4f}")
        if self.best_psnr is not None:
            table.add_row(f"best (step {self.best_step})" + (" *new*" if improved else ""), f"{self.best_psnr:.2f}", "")
        self.console.print(table)

    # ------------------------------------------------------------------------------------ logging

    def _open_log(self) -> None:
        """Open ``log.csv`` for appending; on resume, rows past the checkpoint's step are dropped (that
        work was lost with the kill and will be redone)."""
        path = self.run_dir / "log.csv"
        rows: list[dict[str, str]] = []
        if self.opts.resume and path.exists():
            with open(path, newline="", encoding="utf-8") as fh:
                rows = [r for r in csv.DictReader(fh) if r.get("step", "").isdigit() and int(r["step"]) <= self.step]
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        self.log_fh = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115 (closed in run())
        self.log_writer = csv.DictWriter(self.log_fh, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step + 1)
        except ImportError:  # tensorboard is optional
            pass

    def _log(self, row: dict[str, Any]) -> None:
        assert self.log_fh is not None
        clean = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
        self.log_writer.writerow(clean)
        self.log_fh.flush()
        if self.tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, row["step"])

    # ------------------------------------------------------------------------------------ run

    def budget_left(self) -> bool:
        opts = self.opts
        if opts.max_steps is not None and self.step >= opts.max_steps:
            return False
        return opts.max_minutes is None or self.elapsed() < opts.max_minutes * 60

    def run(self) -> TrainResult:
        opts = self.opts
        if opts.max_steps is None and opts.max_minutes is None:
            opts.max_steps = TrainOptions.DEFAULT_MAX_STEPS
        self.log_fh = None
        self.tb = None
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._open_log()
        n_params = sum(p.numel() for p in self.generator.parameters())
        procs = f" x {self.world_size} processes ({self.dist.backend})" if self.dist is not None else ""
        self.console.print(
            f"training {self.arch} ({n_params / 1e6:.2f} M params, from {self.source}) on {self.device}{procs} "
            f"({str(self.dtype).replace('torch.', '')}), batch {opts.batch_size}{' per process' if procs else ''} "
            f"x {opts.crop}², loss {self._loss_description()}, lr {self.base_lr:.1e}"
            + (f", resuming at step {self.step}" if opts.resume else "")
        )
        if self.val_input:
            self.console.print(f"validation input (blurry): PSNR {self.val_input['psnr']:.2f} dB, SSIM {self.val_input['ssim']:.4f}")
        self.t_start = time.monotonic()
        self.clock = self.elapsed_before
        self.last_checkpoint_elapsed = self.elapsed()
        self.last_checkpoint_step = self.step
        self.last_val_step = self.step if self.opts.resume else -1
        stop = _StopFlag(distributed=self.dist is not None)
        history: list[dict[str, Any]] = []
        window: list[dict[str, float]] = []
        t_window, last_print = time.monotonic(), time.monotonic()
        stopped = "budget"
        try:
            with stop.installed():
                while True:
                    self._sync(stop)
                    if not self.budget_left():
                        break
                    if stop.reason:
                        stopped = stop.reason
                        break
                    values = self.train_step()
                    if values is None:
                        self._recover()
                        continue
                    if self.failures and self.step - self.snapshot["step"] >= 100:
                        self.failures = 0
                    if self.step % 100 == 0:
                        self.snapshot = self._capture()
                    if self.is_main:  # the values are already averaged over ranks
                        window.append(values)
                        now = time.monotonic()
                        if self.step % opts.log_every == 0 or now - last_print >= 60:
                            row = self._summarise(window, now - t_window)
                            history.append(row)
                            self._log(row)
                            self._print_progress(row)
                            window, t_window, last_print = [], time.monotonic(), time.monotonic()
                    if self.step % opts.val_every == 0:
                        scores = self.validate()
                        self._log_validation(scores, history)
                        self.save_checkpoint()
                    elif (
                        self.step - self.last_checkpoint_step >= opts.checkpoint_every
                        or self.elapsed() - self.last_checkpoint_elapsed >= opts.checkpoint_minutes * 60
                    ):
                        self.save_checkpoint()
            if stopped == "budget" and self.last_val_step != self.step:
                self._log_validation(self.validate(), history)
            elif stopped != "budget":
                self.export("last.safetensors", None)  # newest weights, not validated (the user stopped it)
            self.save_checkpoint()
            if not (self.run_dir / "last.safetensors").exists():
                self.export("last.safetensors", None)
        finally:
            if self.log_fh is not None:
                self.log_fh.close()
            if self.tb is not None:
                self.tb.close()
        msg = {"budget": "finished", "interrupted": "interrupted (Ctrl-C)", "terminated": "terminated"}[stopped]
        self.console.print(
            f"{msg} at step {self.step}; checkpoint {self.ckpt_path}"
            + (f"; best PSNR {self.best_psnr:.2f} dB at step {self.best_step}" if self.best_psnr is not None else "")
        )
        best = self.run_dir / "best.safetensors"
        return TrainResult(
            steps=self.step, stopped=stopped, best_psnr=self.best_psnr, best_step=self.best_step,
            last=self.run_dir / "last.safetensors", best=best if best.exists() else None, history=history,
        )

    def _summarise(self, window: list[dict[str, float]], seconds: float) -> dict[str, Any]:
        n = max(1, len(window))
        row: dict[str, Any] = {k: sum(v[k] for v in window) / n for k in window[0]} if window else {}
        row.update(step=self.step, elapsed_s=round(self.elapsed(), 1),
                   samples_per_s=len(window) * self.opts.batch_size * self.world_size / max(seconds, 1e-9))
        return row

    def _print_progress(self, row: Mapping[str, Any]) -> None:
        opts = self.opts
        total = f"/{opts.max_steps}" if opts.max_steps is not None else ""
        parts = [f"step {self.step}{total}", f"loss {row.get('loss', float('nan')):.4f}"]
        if self.lpips is not None:
            parts.append(f"lpips {row['lpips']:.4f}")
        if self.critic is not None:
            parts.append(f"adv {row['adv']:.3f} D {row['d_loss']:.3f}")
        parts += [f"lr {row.get('lr', 0):.2e}", f"{row['samples_per_s']:.1f} samples/s", f"{self.elapsed() / 60:.1f} min"]
        if opts.max_minutes is not None:
            parts.append(f"of {opts.max_minutes:g}")
        self.console.print(" | ".join(parts))

    def _log_validation(self, scores: Mapping[str, float], history: list[dict[str, Any]]) -> None:
        if not scores:
            return
        row = {"step": self.step, "elapsed_s": round(self.elapsed(), 1), "val_psnr": scores["psnr"],
               "val_ssim": scores["ssim"], "best_psnr": self.best_psnr}
        history.append(row)
        self._log(row)


def quantize8(x: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1] and round to 8 bits, as the output would be saved (see metrics.quantize8)."""
    return (x.clamp(0, 1) * 255).round() / 255


def train(opts: TrainOptions, console: Any | None = None) -> TrainResult:
    """Train (or resume) the run described by ``opts``; see :class:`Trainer`. Started by torchrun as one
    of several processes, it joins their process group for the run (see :mod:`deblurcli.train.distributed`)."""
    try:
        opts.validate()
    except DeblurError as exc:
        if distributed.requested():
            raise distributed.AllRanksError(str(exc)) from None
        raise
    with distributed.session(opts.device) as dist:
        return Trainer(opts, console, dist).run()
