"""The loss recipe of a run: which pixel loss, LPIPS and adversarial terms, with what weights, and the
critic the chosen ``--gan`` wants.

The loss functions and their tables live in :mod:`deblurcli.train.losses`; this module combines them
for one step, under the run's autocast. The loop owns the optimisers, backward passes and the NaN
handling, so a new loss term changes ``losses`` (its function and table entry) and at most this file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from deblurcli.train import losses
from deblurcli.train.diffaug import DiffAugment
from deblurcli.train.options import TrainOptions
from deblurcli.train.validation import autocast


def build_critic(
    opts: TrainOptions, state: Mapping[str, Any] | None, device: torch.device, channels_last: bool
) -> tuple[nn.Module, torch.optim.Optimizer, dict[str, Any]]:
    """The conditional PatchGAN critic for ``opts.gan`` (its config from the checkpoint when it holds a
    critic for the same loss), its Adam optimiser and its config."""
    from deblurcli.models.registry import PRESETS, build

    gan = losses.GAN_LOSSES[opts.gan]
    if state is not None and "critic" in state and state.get("gan") == opts.gan:
        config = json.loads(state["critic_config"])
    else:
        config = {**PRESETS["patchgan"][1], "norm": gan.critic_norm}
    critic = build("patchgan", config).to(device).train()
    if channels_last:
        critic = critic.to(memory_format=torch.channels_last)
    return critic, torch.optim.Adam(critic.parameters(), lr=opts.d_lr, betas=gan.betas), config


class Recipe:
    """The loss terms of one run (LPIPS network included), computed under the run's autocast."""

    def __init__(self, opts: TrainOptions, device: torch.device, dtype: torch.dtype, diffaug: DiffAugment,
                 gp_generator: torch.Generator) -> None:
        self.opts, self.device, self.dtype = opts, device, dtype
        self.diffaug, self.gp_generator = diffaug, gp_generator
        self.lpips = (
            losses.LPIPSLoss(opts.lpips_net, pretrained_backbone=opts.lpips_pretrained).to(device)
            if opts.lpips > 0
            else None
        )

    def critic_losses(
        self, critic_train: nn.Module, critic: nn.Module, blurry: torch.Tensor, sharp: torch.Tensor, fake: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(critic loss, gradient penalty) on ``[blurry, sharp]`` vs ``[blurry, fake.detach()]``, both
        through one DiffAugment draw. ``critic_train`` may be a DDP wrapper; the penalty's double
        backward goes through the plain ``critic``."""
        real_pair = torch.cat([blurry, sharp], dim=1)
        fake_pair = torch.cat([blurry, fake.detach()], dim=1)
        if self.diffaug:
            params = self.diffaug.draw(real_pair.shape[0], real_pair.shape[2], real_pair.shape[3])
            real_pair, fake_pair = self.diffaug(real_pair, params), self.diffaug(fake_pair, params)
        with autocast(self.device, self.dtype):
            d_loss = losses.d_loss(self.opts.gan, critic_train(real_pair), critic_train(fake_pair))
        gp = torch.zeros((), device=self.device)
        if losses.GAN_LOSSES[self.opts.gan].gradient_penalty:
            # After augmentation the condition channels of both pairs are identical; penalise through the image.
            gp = losses.gradient_penalty(critic, real_pair[:, :3], real_pair[:, 3:], fake_pair[:, 3:], self.gp_generator)
        return d_loss, gp

    def generator_losses(
        self, critic: nn.Module | None, blurry: torch.Tensor, sharp: torch.Tensor, fake: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The generator's loss terms (unweighted) and their weighted ``total``.

        The adversarial term scores ``[blurry, fake]`` with ``fake`` *not* detached, so the adversarial
        gradient reaches G, through a fresh DiffAugment draw.
        """
        opts = self.opts
        zero = torch.zeros((), device=fake.device)
        terms = {"pixel": losses.pixel_loss(opts.pixel_loss, fake, sharp), "lpips": zero, "adv": zero}
        total = terms["pixel"]
        if self.lpips is not None:
            with autocast(self.device, self.dtype):
                terms["lpips"] = self.lpips(fake, sharp)
            total = total + opts.lpips * terms["lpips"]
        if critic is not None:
            fake_pair = torch.cat([blurry, fake], dim=1)
            if self.diffaug:
                n, _, h, w = fake_pair.shape
                fake_pair = self.diffaug(fake_pair, self.diffaug.draw(n, h, w))
            with autocast(self.device, self.dtype):
                terms["adv"] = losses.g_loss(opts.gan, critic(fake_pair))
            total = total + opts.adv * terms["adv"]
        terms["total"] = total
        return terms

    def description(self, adversarial: bool) -> str:
        """The recipe in one line, e.g. ``charbonnier + 0.1*lpips-alex + 0.005*wgan-gp+diffaug(...)``."""
        opts = self.opts
        parts = [opts.pixel_loss]
        if self.lpips is not None:
            parts.append(f"{opts.lpips:g}*lpips-{opts.lpips_net}")
        if adversarial:
            parts.append(f"{opts.adv:g}*{opts.gan}" + (f"+diffaug({opts.diffaug})" if self.diffaug else ""))
        return " + ".join(parts)
