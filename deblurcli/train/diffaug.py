"""Differentiable augmentation for the discriminator (DiffAugment, Zhao et al. 2020).

A discriminator trained on a few thousand crops memorises them and stops giving the generator useful
gradients. DiffAugment replaces every ``D(x)`` by ``D(T(x))`` for real and fake alike, in both the D and
the G step, with ``T`` differentiable so the G step's gradient flows back through it.

Two departures from the reference code, both deliberate:

* The random parameters are drawn once (:func:`sample`) and applied to several tensors (:func:`apply`),
  so the real and the fake pair of a D step get the *identical* transform: any difference D sees between
  them is then the generator's doing, not the augmentation's.
* Inputs may hold several RGB images stacked on the channel axis (the conditional PatchGAN's
  ``[blurry, candidate]`` pair, 6 channels). Geometric ops move the whole stack together, so the pair
  stays aligned, and colour ops act on each RGB image with the same factors.

Ranges follow the paper, converted to our [0, 1] pixels (the reference works on [-1, 1], so its
brightness shift of ``U(-0.5, 0.5)`` is ``U(-0.25, 0.25)`` here; saturation and contrast are scale-free).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

OPS = ("color", "translation", "cutout")


def parse_policy(policy: str | None) -> tuple[str, ...]:
    """``"color,translation,cutout"`` -> ops tuple; ``""``/``"none"`` -> no augmentation."""
    if not policy or policy.strip().lower() == "none":
        return ()
    ops = tuple(p.strip().lower() for p in policy.split(",") if p.strip())
    unknown = [p for p in ops if p not in OPS]
    if unknown:
        raise ValueError(f"unknown DiffAugment op(s) {', '.join(unknown)}: use a comma list of {', '.join(OPS)} or none")
    return ops


@dataclass
class AugParams:
    """One draw of every op's random parameters for a batch (absent ops are ``None``)."""

    ops: tuple[str, ...]
    brightness: torch.Tensor | None = None  # (n,) additive
    saturation: torch.Tensor | None = None  # (n,) factor about the per-pixel channel mean
    contrast: torch.Tensor | None = None  # (n,) factor about the image mean
    shift: torch.Tensor | None = None  # (n, 2) integer (dy, dx)
    cutout: torch.Tensor | None = None  # (n, 2) integer centre (cy, cx)


def sample(ops: tuple[str, ...], n: int, height: int, width: int, generator: torch.Generator) -> AugParams:
    """Draw the parameters of ``ops`` for ``n`` samples of ``height`` x ``width`` (on the generator's device)."""
    dev = generator.device
    p = AugParams(ops)
    if "color" in ops:
        u = torch.rand(3, n, generator=generator, device=dev)
        p.brightness = (u[0] - 0.5) * 0.5
        p.saturation = u[1] * 2.0
        p.contrast = u[2] + 0.5
    size = torch.tensor([height, width], device=dev)
    if "translation" in ops:
        limit = (size.float() * 0.125 + 0.5).long()  # reference: int(size * 1/8 + 0.5)
        u = torch.rand(n, 2, generator=generator, device=dev)
        p.shift = (u * (2 * limit + 1)).long() - limit  # uniform integers in [-limit, limit]
    if "cutout" in ops:
        half = (size.float() * 0.5 + 0.5).long()  # cutout square: half the side
        u = torch.rand(n, 2, generator=generator, device=dev)
        p.cutout = (u * (size + 1 - half % 2)).long()
    return p


def apply(x: torch.Tensor, p: AugParams) -> torch.Tensor:
    """Apply the drawn transform to ``x`` (N x 3k x H x W), differentiably."""
    n, c, h, w = x.shape
    if c % 3:
        raise ValueError(f"DiffAugment expects stacked RGB images (channels a multiple of 3), got {c}")
    dev = x.device
    if "color" in p.ops:
        assert p.brightness is not None and p.saturation is not None and p.contrast is not None
        g = x.view(n, c // 3, 3, h, w)
        g = g + p.brightness.to(dev).view(n, 1, 1, 1, 1)
        mean = g.mean(dim=2, keepdim=True)
        g = (g - mean) * p.saturation.to(dev).view(n, 1, 1, 1, 1) + mean
        mean = g.mean(dim=(2, 3, 4), keepdim=True)
        g = (g - mean) * p.contrast.to(dev).view(n, 1, 1, 1, 1) + mean
        x = g.reshape(n, c, h, w)
    if "translation" in p.ops:
        assert p.shift is not None
        shift = p.shift.to(dev)
        # Output pixel (i, j) reads input (i - dy, j - dx); outside the image reads the zero padding.
        ys = (torch.arange(h, device=dev).view(1, h) - shift[:, :1] + 1).clamp(0, h + 1)  # (n, h)
        xs = (torch.arange(w, device=dev).view(1, w) - shift[:, 1:] + 1).clamp(0, w + 1)  # (n, w)
        padded = F.pad(x, (1, 1, 1, 1))
        b = torch.arange(n, device=dev).view(n, 1, 1)
        x = padded.permute(0, 2, 3, 1)[b, ys.view(n, h, 1), xs.view(n, 1, w)].permute(0, 3, 1, 2)
    if "cutout" in p.ops:
        assert p.cutout is not None
        centre = p.cutout.to(dev)
        sh, sw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
        y0 = centre[:, :1] - sh // 2
        x0 = centre[:, 1:] - sw // 2
        ys = torch.arange(h, device=dev).view(1, h)
        xs = torch.arange(w, device=dev).view(1, w)
        inside_y = (ys >= y0) & (ys < y0 + sh)  # (n, h)
        inside_x = (xs >= x0) & (xs < x0 + sw)  # (n, w)
        keep = ~(inside_y[:, :, None] & inside_x[:, None, :])
        x = x * keep[:, None].to(x.dtype)
    return x


class DiffAugment:
    """A policy bound to its random stream: ``aug.draw(n, h, w)`` then ``aug(x, params)`` for each input."""

    def __init__(self, policy: str | None, generator: torch.Generator) -> None:
        self.ops = parse_policy(policy)
        self.generator = generator

    def __bool__(self) -> bool:
        return bool(self.ops)

    def draw(self, n: int, height: int, width: int) -> AugParams:
        return sample(self.ops, n, height, width, self.generator)

    def __call__(self, x: torch.Tensor, params: AugParams) -> torch.Tensor:
        return apply(x, params)
