"""The training loop: generator (+ optional conditional critic), EMA, schedule, checkpoints, validation.

One step, in order:

1. a batch of random crops (flipped/rotated) from the in-memory bank; for ``--synthetic`` the blurry
   input is synthesised on the device from the sharp crop (with a margin that is cut off afterwards, so
   no sample shows padding-made blur at its border);
2. ``fake = G(blurry)`` in channels-last layout under autocast (bf16 on GPUs, fp32 on the CPU unless
   ``--precision bf16``), with fp32 master weights, optimiser state and losses;
3. if the adversarial weight is non-zero, a critic step on ``[blurry, sharp]`` vs ``[blurry, fake.detach()]``
   with one DiffAugment draw shared by both, plus the fp32 gradient penalty for WGAN-GP;
4. the generator step on pixel + LPIPS + adversarial loss, the adversarial term computed from the critic
   on the *non-detached*, augmented fake so its gradient reaches G; gradients clipped; EMA updated.

A non-finite loss or gradient never reaches the weights: the step is dropped, the run rolls back to the
last good in-memory snapshot and the learning rate is halved; after ``max_nan_retries`` failures in a row
it stops with a message (the checkpoint on disk is the last good state).

Wall-clock budgets (``--max-minutes``) count training time across resumes, and the schedule
(:mod:`deblurcli.train.schedule`) follows whichever budget is further along, so a resumed run finishes
its schedule where an uninterrupted one would.

Under ``torchrun`` (see :mod:`deblurcli.train.distributed`) the same loop runs on every rank: G and the
critic are wrapped in DistributedDataParallel (gradients averaged over ranks, so ``--batch-size`` is per
process), each rank trains on its own share of the images with its own random streams, and the EMA,
being updated from identical weights, stays identical. Rank 0 alone logs, validates, exports and
checkpoints; the checkpoint holds unwrapped state dicts and rank 0's random state, so it resumes with any
number of processes. The clock, stop requests and the "drop this non-finite step" decision are shared
each step, so every rank takes the same branch.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deblurcli.errors import DeblurError, WeightsError
from deblurcli.train import checkpoint as ckpt
from deblurcli.train import data as data_mod
from deblurcli.train import distributed, recipe, schedule, validation
from deblurcli.train.diffaug import DiffAugment
from deblurcli.train.log import Progress, RunLog, progress_line
from deblurcli.train.options import DEFAULT_MAX_STEPS, TrainOptions, TrainResult, resolve_arch
from deblurcli.train.stop import StopFlag
from deblurcli.train.validation import autocast

__all__ = ["EXPORTS", "Trainer", "TrainOptions", "TrainResult", "train"]

EXPORTS = ("best.safetensors", "last.safetensors")


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
        # NHWC convolutions: faster on GPUs and, through oneDNN, on CPUs: 2.9x a CPU training step in fp32
        # (docs/performance.md), where bf16 autocast in NHWC was slower than fp32 and so stays opt-in.
        self.channels_last = self.device.type in ("cuda", "cpu")

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
        self.diffaug = DiffAugment(opts.diffaug, self.gens["aug"])
        self.recipe = recipe.Recipe(opts, self.device, self.dtype, self.diffaug, self.gens["gp"])
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
        self.t_start = time.monotonic()  # run() restarts it; set here for steps taken outside run()
        self.last_val_step = -1

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
        self.critic: nn.Module | None = None
        self.d_opt: torch.optim.Optimizer | None = None
        if self.opts.adv > 0:
            self.critic, self.d_opt, self.critic_config = recipe.build_critic(self.opts, state, self.device, self.channels_last)

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
        sharp = {} if opts.sharp_prob is None else {"sharp_prob": opts.sharp_prob}
        self.blur_cfg = BlurConfig(dynamic_prob=opts.dynamic_prob, **sharp)
        # Synthetic crops carry a margin that is blurred then cut off (blur.py pads by reflection).
        self.margin = self.blur_cfg.kernel_size // 2 if opts.synthetic is not None else 0
        problems: list[str] = []
        t0 = time.monotonic()
        items, decode, description = self._data_source()
        # Decode everything first and split the readable images, so an unreadable file never leaves the
        # validation split empty; the split depends only on the seed and the readable files.
        hold_out = opts.val_pairs is None
        if self.dist is None:
            images = data_mod.decode_all(items, decode, problems)
            train_idx, val_idx = (
                data_mod.split_holdout(len(images), 0.05, opts.val_count, opts.seed) if hold_out
                else (list(range(len(images))), [])
            )
            train_images, held_out = [images[i] for i in train_idx], [images[i] for i in val_idx]
            n_train, n_val = len(train_idx), len(val_idx)
            del images  # the bank holds its own packed copy
        else:
            train_images, held_out, n_train, n_val = data_mod.load_share(
                items, decode, problems, self.dist, opts.seed, opts.val_count, hold_out
            )
        for line in problems:
            self.console.print(f"[yellow]warning:[/] left out {escape(line)}", highlight=False)
        self.bank = data_mod.CropBank(train_images)
        del train_images
        description["photos" if opts.synthetic is not None else "pairs"] = n_train
        self.val: validation.Pairs = []
        if self.dist is None:
            self._build_val(held_out)
        else:
            distributed.gather(self.dist, lambda: self._build_val(held_out))  # a broken val set stops every rank
        description["val"] = str(opts.val_pairs) if opts.val_pairs is not None else f"{n_val} held out (seed {opts.seed})"
        description["val_crop"] = opts.val_crop
        self.data_description = description
        if self.device.type == "cuda" and self.bank.nbytes < 0.25 * torch.cuda.mem_get_info(self.device)[0]:
            self.bank.to(self.device)  # gather crops on the GPU: no host->device copy per step
        kind = "photos" if opts.synthetic is not None else "pairs"
        share = f" ({len(self.bank)} per process on rank 0)" if self.dist is not None else ""
        self.console.print(
            f"data: {n_train} training {kind}{share} ({self.bank.nbytes / 2**20:.0f} MiB in memory), "
            f"{len(self.val)} validation images, loaded in {time.monotonic() - t0:.0f} s"
        )
        self.val_input = validation.score(self.val, None, self.device, self.dtype)

    def _data_source(self) -> tuple[list[Any], Callable[[Any], torch.Tensor], dict[str, Any]]:
        """(items to decode, how to decode one, the data description exported with the weights)."""
        opts = self.opts
        if opts.synthetic is not None:
            root = opts.synthetic
            items: list[Any] = self._on_main(lambda: data_mod.list_photos(root))
            max_side = 1024 if opts.max_side is None else (opts.max_side or None)
            min_side = opts.crop + 2 * self.margin
            return items, lambda path: data_mod.load_photo(path, max_side, min_side), {
                "kind": "synthetic", "root": str(root), "max_side": max_side, "blur": asdict(self.blur_cfg)}
        items = self._on_main(
            lambda: data_mod.find_training_pairs(opts.pairs, opts.side_by_side, opts.pairs_csv, self.console)
        )
        return items, lambda pair: data_mod.load_pair_stack(pair, opts.max_side or None, opts.crop), {
            "kind": "pairs", "root": str(opts.pairs or opts.pairs_csv), "side_by_side": opts.side_by_side,
            "max_side": opts.max_side or None}

    def _build_val(self, held_out: list[torch.Tensor]) -> None:
        """The fixed validation pairs (rank 0 alone validates)."""
        opts = self.opts
        val_crop = opts.val_crop or None
        if not self.is_main:
            self.val = []
        elif opts.val_pairs is not None:
            self.val = data_mod.val_from_pairs(opts.val_pairs, opts.side_by_side, val_crop, opts.val_count, self.console)
        elif opts.synthetic is not None:
            self.val = validation.synthetic_pairs(held_out, self.blur_cfg, self.margin, val_crop, opts.seed)
        else:
            self.val = [data_mod.split_stack(data_mod.u8_to_float(data_mod.center_crop(x, val_crop))) for x in held_out]

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

    def _sync(self, stop: StopFlag) -> None:
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
        from deblurcli.blur import synthesize_pair

        opts = self.opts
        crops = self.bank.sample(opts.batch_size, opts.crop + 2 * self.margin, self.gens["data"])
        crops = data_mod.u8_to_float(crops.to(self.device, non_blocking=True))
        if opts.synthetic is not None:
            sharp, blurry = synthesize_pair(crops, self.blur_cfg, self.gens["blur"])
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
        return self.lr_scale * schedule.lr_factor(self.step, self.elapsed(), max_steps=opts.max_steps,
                                                  max_minutes=opts.max_minutes, warmup_steps=opts.warmup_steps)

    def _critic_step(self, blurry: torch.Tensor, sharp: torch.Tensor, fake: torch.Tensor) -> list[float] | None:
        """One critic update; returns [d_loss, gp] or None when it was not finite (nothing applied)."""
        assert self.critic is not None and self.d_opt is not None
        critic = self.critic
        assert self.critic_train is not None
        critic.requires_grad_(True)
        d_loss, gp = self.recipe.critic_losses(self.critic_train, critic, blurry, sharp, fake)
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
        with autocast(self.device, self.dtype):
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
        """The generator's loss terms and their weighted ``total`` (see :class:`~.recipe.Recipe`)."""
        return self.recipe.generator_losses(self.critic, blurry, sharp, fake)

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

    def validate(self) -> dict[str, float]:
        """Score the EMA on the validation set and export it (rank 0 only; {} elsewhere). It becomes
        ``best`` only when it beats both the best so far and the blurry input itself."""
        self.last_val_step = self.step
        if not self.is_main:
            return {}
        scores = validation.score(self.val, self.ema, self.device, self.dtype, self.channels_last)
        if not scores:
            return {}
        improved = validation.is_best(scores, self.best_psnr, self.val_input)
        if improved:
            self.best_psnr, self.best_step = scores["psnr"], self.step
        self.export("last.safetensors", scores)
        if improved:
            self.export("best.safetensors", scores)
        best = (self.best_psnr, self.best_step) if self.best_psnr is not None and self.best_step is not None else None
        validation.print_table(self.console, self.step, len(self.val), scores, self.val_input, best, improved)
        return scores

    def export(self, name: str, scores: Mapping[str, float] | None) -> Path:
        """EMA weights with the metadata ``deblur``/``deblur eval`` and a reader of the file want (written
        by rank 0 only: the EMA is the same on every rank)."""
        from deblurcli._version import __version__
        from deblurcli.weights import save_generator

        path = self.run_dir / name
        if not self.is_main:
            return path

        meta: dict[str, Any] = {
            "steps": self.step,
            "data": self.data_description,
            "source": self.source,
            "crop": self.opts.crop,
            "loss": self.recipe.description(self.critic is not None),
            "trained_with": f"deblurcli {__version__}",
        }
        if scores:
            meta.update(val_psnr=round(scores["psnr"], 4), val_ssim=round(scores["ssim"], 5), val_images=len(self.val))
            if self.val_input:
                meta.update(val_input_psnr=round(self.val_input["psnr"], 4), val_input_ssim=round(self.val_input["ssim"], 5))
        save_generator(self.ema, path, meta)
        return path

    # ------------------------------------------------------------------------------------ run

    def budget_left(self) -> bool:
        opts = self.opts
        if opts.max_steps is not None and self.step >= opts.max_steps:
            return False
        return opts.max_minutes is None or self.elapsed() < opts.max_minutes * 60

    def run(self) -> TrainResult:
        """Train until a budget is spent or a signal asks to stop; checkpoint and export on the way out."""
        opts = self.opts
        if opts.max_steps is None and opts.max_minutes is None:
            opts.max_steps = DEFAULT_MAX_STEPS
        log: RunLog | None = None
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            log = RunLog(self.run_dir, opts.resume, self.step)
        self._announce()
        self.t_start = time.monotonic()
        self.clock = self.elapsed_before
        self.last_checkpoint_elapsed = self.elapsed()
        self.last_checkpoint_step = self.step
        self.last_val_step = self.step if opts.resume else -1
        stop = StopFlag(distributed=self.dist is not None)
        try:
            with stop.installed():
                stopped = self._train_until_stopped(stop, log)
            if stopped == "budget" and self.last_val_step != self.step:
                self._log_validation(self.validate(), log)
            elif stopped != "budget":
                self.export("last.safetensors", None)  # newest weights, not validated (the user stopped it)
            self.save_checkpoint()
            if not (self.run_dir / "last.safetensors").exists():
                self.export("last.safetensors", None)
        finally:
            if log is not None:
                log.close()
        msg = {"budget": "finished", "interrupted": "interrupted (Ctrl-C)", "terminated": "terminated"}[stopped]
        self.console.print(
            f"{msg} at step {self.step}; checkpoint {self.ckpt_path}"
            + (f"; best PSNR {self.best_psnr:.2f} dB at step {self.best_step}" if self.best_psnr is not None else "")
        )
        best = self.run_dir / "best.safetensors"
        return TrainResult(
            steps=self.step, stopped=stopped, best_psnr=self.best_psnr, best_step=self.best_step,
            last=self.run_dir / "last.safetensors", best=best if best.exists() else None,
            history=log.history if log is not None else [],
        )

    def _announce(self) -> None:
        opts = self.opts
        n_params = sum(p.numel() for p in self.generator.parameters())
        procs = f" x {self.world_size} processes ({self.dist.backend})" if self.dist is not None else ""
        self.console.print(
            f"training {self.arch} ({n_params / 1e6:.2f} M params, from {self.source}) on {self.device}{procs} "
            f"({str(self.dtype).replace('torch.', '')}), batch {opts.batch_size}{' per process' if procs else ''} "
            f"x {opts.crop}², loss {self.recipe.description(self.critic is not None)}, lr {self.base_lr:.1e}"
            + (f", resuming at step {self.step}" if opts.resume else "")
        )
        if self.val_input:
            self.console.print(f"validation input (blurry): PSNR {self.val_input['psnr']:.2f} dB, SSIM {self.val_input['ssim']:.4f}")

    def _train_until_stopped(self, stop: StopFlag, log: RunLog | None) -> str:
        """The step loop; returns why it stopped ("budget", "interrupted" or "terminated")."""
        opts = self.opts
        progress = Progress(opts.log_every, opts.batch_size * self.world_size)
        while True:
            self._sync(stop)
            if not self.budget_left():
                return "budget"
            if stop.reason:
                return stop.reason
            values = self.train_step()
            if values is None:
                self._recover()
                continue
            if self.failures and self.step - self.snapshot["step"] >= 100:
                self.failures = 0
            if self.step % 100 == 0:
                self.snapshot = self._capture()
            if log is not None:  # the values are already averaged over ranks
                row = progress.add(self.step, values, self.elapsed())
                if row is not None:
                    log.write(row)
                    self.console.print(progress_line(row, opts.max_steps, opts.max_minutes, self.elapsed(),
                                                     self.recipe.lpips is not None, self.critic is not None))
            t_aside = time.monotonic()
            if self.step % opts.val_every == 0:
                self._log_validation(self.validate(), log)
                self.save_checkpoint()
            elif (
                self.step - self.last_checkpoint_step >= opts.checkpoint_every
                or self.elapsed() - self.last_checkpoint_elapsed >= opts.checkpoint_minutes * 60
            ):
                self.save_checkpoint()
            progress.exclude(time.monotonic() - t_aside)

    def _log_validation(self, scores: Mapping[str, float], log: RunLog | None) -> None:
        if not scores or log is None:
            return
        log.write({"step": self.step, "elapsed_s": round(self.elapsed(), 1), "val_psnr": scores["psnr"],
                   "val_ssim": scores["ssim"], "best_psnr": self.best_psnr})


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
