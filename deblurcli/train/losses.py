"""Generator and discriminator losses, and the name tables ``deblur train --loss/--gan`` offer.

* Pixel losses compare raw outputs with targets in [0, 1] (no per-image min-max normalisation, which
  would hide brightness errors).
* LPIPS is always fed [0, 1] images with ``normalize=True``, which the package maps to the [-1, 1] its
  backbone was trained on.
* Adversarial losses take raw critic scores (logits); the critic has no final sigmoid, so there is no
  double sigmoid, and the generator loss is computed on the *non-detached* fake so its gradient reaches G.
* The WGAN-GP penalty is computed in fp32 with autocast off: the gradient-norm term squares small
  differences and is exactly what reduced precision gets wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deblurcli.errors import WeightsError
from deblurcli.train.loss_names import LPIPS_NETS



def charbonnier(output: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier loss sqrt((x - y)^2 + eps^2): L1's robustness with a smooth minimum (no gradient
    sign flip at zero error, which makes L1 jitter around well-restored pixels)."""
    diff = output.float() - target.float()
    return torch.sqrt(diff * diff + eps * eps).mean()


def l1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(output.float(), target.float())


class LPIPSLoss(nn.Module):
    """LPIPS distance on [0, 1] images; frozen, always in eval mode, gradients flow to the inputs only.

    The network comes from :func:`deblurcli.metrics.make_lpips`, which bounds the backbone download and
    says how to pre-place the file. ``pretrained_backbone=False`` builds it on a random backbone
    (lpips' ``pnet_rand``) so tests run offline; users never get that, since such a loss is meaningless.
    """

    def __init__(self, net: str = "alex", pretrained_backbone: bool = True) -> None:
        super().__init__()
        if net not in LPIPS_NETS:
            raise ValueError(f"unknown LPIPS net {net!r}: use {', '.join(LPIPS_NETS)}")
        from deblurcli.metrics import make_lpips

        model, note = make_lpips(net, random_backbone=not pretrained_backbone, extra="train")
        if model is None:
            raise WeightsError(f"{note}; or pass --no-lpips to train without LPIPS")
        self.net = model

    def train(self, mode: bool = True) -> LPIPSLoss:
        """Stay in eval mode whatever the caller asks (LPIPS has dropout layers in its heads)."""
        return super().train(False)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.net(output.float(), target.float(), normalize=True).mean()


def _wgan_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return fake.mean() - real.mean()


def _lsgan_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((real - 1).pow(2).mean() + fake.pow(2).mean())


def _hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def _mean_g(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def _lsgan_g(fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (fake - 1).pow(2).mean()


@dataclass(frozen=True)
class GanLoss:
    """One adversarial recipe: the critic's and the generator's losses on raw scores, and the critic it
    wants (normalisation and Adam betas), so choosing ``--gan`` chooses all of them together."""

    critic_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    generator_loss: Callable[[torch.Tensor], torch.Tensor]
    #: WGAN-GP's per-sample gradient penalty is invalid with BatchNorm and over-constrained with spectral
    #: norm; the other losses get spectral norm's Lipschitz bound for stability.
    critic_norm: str
    betas: tuple[float, float]
    gradient_penalty: bool = False


#: ``--loss`` choices: name -> loss(output, target). A new pixel loss is one function and one entry here.
PIXEL_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"charbonnier": charbonnier, "l1": l1}
#: ``--gan`` choices: name -> recipe. A new adversarial loss is its functions and one entry here.
GAN_LOSSES: dict[str, GanLoss] = {
    "wgan-gp": GanLoss(_wgan_d, _mean_g, critic_norm="none", betas=(0.0, 0.9), gradient_penalty=True),
    "lsgan": GanLoss(_lsgan_d, _lsgan_g, critic_norm="spectral", betas=(0.5, 0.999)),
    "hinge": GanLoss(_hinge_d, _mean_g, critic_norm="spectral", betas=(0.5, 0.999)),
}


def _lookup(table: dict[str, Any], kind: str, what: str) -> Any:
    if kind not in table:
        raise ValueError(f"unknown {what} {kind!r}: use {', '.join(table)}")
    return table[kind]


def pixel_loss(kind: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The reconstruction term by name (a key of :data:`PIXEL_LOSSES`)."""
    return _lookup(PIXEL_LOSSES, kind, "pixel loss")(output, target)  # type: ignore[no-any-return]


def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Critic loss from raw scores on real and fake inputs (penalty for WGAN-GP added separately)."""
    return _lookup(GAN_LOSSES, kind, "GAN loss").critic_loss(real.float(), fake.float())  # type: ignore[no-any-return]


def g_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """Generator adversarial loss from the critic's raw scores on the (non-detached) fake."""
    return _lookup(GAN_LOSSES, kind, "GAN loss").generator_loss(fake.float())  # type: ignore[no-any-return]


def gradient_penalty(
    critic: nn.Module,
    cond: torch.Tensor,
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator | None = None,
    weight: float = 10.0,
) -> torch.Tensor:
    """WGAN-GP: ``weight * E[(||grad_x D(cond, x_hat)||_2 - 1)^2]`` with x_hat between real and fake.

    The gradient is taken with respect to the image channels only: the condition (the blurry input)
    is the same for real and fake, so it is not on the path between the two distributions. Computed
    in fp32 with autocast disabled (see the module docstring).
    """
    device_type = real.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        real, fake, cond = real.float().detach(), fake.float().detach(), cond.float().detach()
        eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, generator=generator)
        x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
        scores = critic(torch.cat([cond, x_hat], dim=1)).float()
        (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
        norm = grad.flatten(1).norm(2, dim=1)
        return weight * (norm - 1).pow(2).mean()

