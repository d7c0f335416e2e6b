"""Conditional Markovian PatchGAN discriminator (pix2pix, Isola et al. 2017; as in DGF and DeblurGAN).

It scores overlapping patches rather than the whole image: each output logit sees a ``receptive_field``
square (70 x 70 px for the default three stride-2 layers), so it judges local texture and sharpness, which
is what deblurring gets wrong, and works at any input size. It is *conditional*: it sees the blurry input
and the candidate (restored or sharp) stacked as 6 channels, so it can tell "sharp but not this photo".

Layers (``n_layers=3``): C4s2 ndf -> C4s2 2ndf -> C4s2 4ndf -> C4s1 8ndf -> C4s1 1, LeakyReLU(0.2), the
first layer without normalisation, the output a raw logit map (no sigmoid: pair it with a logits loss or use
it as a WGAN critic).

``norm``: ``"spectral"`` (default) wraps every conv in spectral normalisation, a 1-Lipschitz bound that
stabilises any GAN loss; ``"none"`` leaves the convs plain, for WGAN-GP, whose gradient penalty is computed
per sample and is invalid with BatchNorm, which mixes samples; ``"batch"`` is pix2pix's original, for the
BCE/LSGAN losses only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

NORMS = ("spectral", "none", "batch")


class PatchGAN(nn.Module):
    """Conditional PatchGAN; ``forward(blurry, candidate)`` (both NCHW [0, 1]) -> logits N x 1 x h x w.

    A single 6-channel tensor (blurry and candidate already concatenated, e.g. after a shared DiffAugment
    transform of the pair) is accepted as well. Inputs are mapped to [-1, 1] inside.
    """

    def __init__(self, in_channels: int = 6, ndf: int = 64, n_layers: int = 3, norm: str = "spectral") -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"PatchGAN norm must be one of {', '.join(NORMS)}, not {norm!r}")
        self.config: dict[str, Any] = {"in_channels": in_channels, "ndf": ndf, "n_layers": n_layers, "norm": norm}
        # (c_in, c_out, stride, normalised?) for each conv, the pix2pix NLayerDiscriminator layout.
        mult = [min(2**i, 8) for i in range(n_layers + 1)]
        specs = [(in_channels, ndf, 2, False)]
        specs += [(ndf * mult[i - 1], ndf * mult[i], 2, True) for i in range(1, n_layers)]
        specs += [(ndf * mult[n_layers - 1], ndf * mult[n_layers], 1, True), (ndf * mult[n_layers], 1, 1, False)]
        layers: list[nn.Module] = []
        for i, (c_in, c_out, stride, normed) in enumerate(specs):
            batch = norm == "batch" and normed
            conv = nn.Conv2d(c_in, c_out, 4, stride, 1, bias=not batch)
            layers.append(spectral_norm(conv) if norm == "spectral" else conv)
            if batch:
                layers.append(nn.BatchNorm2d(c_out))
            if i < len(specs) - 1:
                layers.append(nn.LeakyReLU(0.2))
        self.body = nn.Sequential(*layers)
        # Receptive field of one output logit, walking back from the output: r -> (r - 1) * stride + 4.
        rf = 1
        for _, _, stride, _ in reversed(specs):
            rf = (rf - 1) * stride + 4
        self.receptive_field = rf

    def forward(self, blurry: torch.Tensor, candidate: torch.Tensor | None = None) -> torch.Tensor:
        x = blurry if candidate is None else torch.cat([blurry, candidate], dim=1)
        if x.shape[1] != self.config["in_channels"]:
            raise ValueError(f"PatchGAN expects {self.config['in_channels']} input channels, got {x.shape[1]}")
        return self.body(x * 2 - 1)
