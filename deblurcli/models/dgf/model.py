"""DGF: the Deep Generative Filter (Ramakrishnan et al., ICCV Workshops 2017), the design deblurcli grew from.

The network never changes the spatial size: a 3x3 head lifts RGB to ``width`` (= 4 x growth rate) channels,
a "dense field" of dilated densely connected layers adds ``growth_rate`` channels each, a 1x1 tail squeezes
the concatenation back to ``width`` and a global skip *adds* the head's features to it, and two 3x3 convs
with a tanh produce the image. Following the official Torch7 code:

* dense layer: LeakyReLU(0.2) -> 1x1 conv c_in->width -> norm -> LeakyReLU(0.2) -> 3x3 conv width->GR
  (dilated) -> norm; its output is concatenated to its input;
* tail: LeakyReLU(0.2) -> 1x1 conv (width + L*GR)->width -> norm -> Dropout; plus the head output;
* output: 3x3 conv width->GR -> LeakyReLU(0.2) -> 3x3 conv GR->3 -> tanh.

Range handling is inside the module (the original works in [-1, 1]): inputs in [0, 1] are mapped to [-1, 1]
and the tanh output back to [0, 1], so DGF obeys the same contract as every other generator here.

Dilation choice. The official code alternates rates 1/2 with a padding quirk that shifts features; we use
"same" padding (``padding = dilation``) so that size is kept for any input, odd sizes included, and rates
that rise toward the middle of the field and fall toward its tail:

* full (``DGF_FULL`` in ``spec.py``): 1,1,2,2,3,3,2,2,1,1 -- the deeper layers see wider context without
  gridding, since each rate is used twice and neighbouring rates differ by one;
* light (``DGF_LIGHT`` in ``spec.py``): 1,1,2,1,3,1,2,1,1,1 -- the poster's re-implementation (rate 2 on
  layers 3 and 7, 3 on layer 5).

The receptive field radius is 1 (head) + sum(dilations) + 2 (output convs): 21 px for the full model and
17 px for the light one, which is exactly ``tile_margin``. With BatchNorm (eval mode) the network is a pure
local operator, so a tile's output matches the whole image's everywhere except in that margin (tested).
InstanceNorm normalises with statistics of the whole input, which a tile does not share; ``norm_window``
(optionally) takes those statistics over a ``K x K`` window instead, like NAFNet's ``local_pool``, making the
light model a local operator too. It has no parameters, so it can be changed on trained weights, but a model
should be run with the window it was trained with.

Cost (``python bench/model_cost.py``; MACs counted over convolutions, the only real cost here):

* full, GR 64, BatchNorm: 3,263,363 parameters, 3,253 GMAC per megapixel (213 GMAC per 256x256) -- every
  layer runs at full resolution with 256+ channels, so it needs ~90x the compute of NAFNet-s (35 GMAC/MP)
  per pixel; about 0.015 MP/s on two CPU threads;
* light, GR 32, InstanceNorm: 817,219 parameters, 815 GMAC per megapixel (53 GMAC per 256x256); about
  0.027 MP/s on two CPU threads. (The poster quotes ~0.77 M for its re-implementation, which concatenates
  rather than adds the global skip and drops the conv biases.)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deblurcli.models.dgf.spec import default_dilations
from deblurcli.models.nafnet.model import box_mean

NORMS = ("batch", "instance")


class InstanceNorm(nn.Module):
    """Parameter-free instance normalisation, over the whole input or over a ``window x window`` neighbourhood.

    ``window=None`` is ``nn.InstanceNorm2d(affine=False)`` (the poster's choice). With a window, mean and
    variance are box means clipped at the border (NAFNet's ``box_mean``), so the result at a pixel depends
    only on its neighbourhood and tiled inference matches whole-image inference.
    """

    def __init__(self, window: int | None = None, eps: float = 1e-5) -> None:
        super().__init__()
        self.window = window
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.window is None:
            return F.instance_norm(x, eps=self.eps)
        mu = box_mean(x, self.window)
        var = (box_mean(x * x, self.window) - mu * mu).clamp_min(0)
        return (x - mu) * torch.rsqrt(var + self.eps)


def _norm(kind: str, channels: int, window: int | None) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return InstanceNorm(window)


class DenseLayer(nn.Module):
    """One layer of the dense field: a 1x1 bottleneck to ``width`` then a dilated 3x3 conv to ``growth``."""

    def __init__(self, c_in: int, width: int, growth: int, dilation: int, norm: str, window: int | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 1)
        self.norm1 = _norm(norm, width, window)
        self.conv2 = nn.Conv2d(width, growth, 3, padding=dilation, dilation=dilation)
        self.norm2 = _norm(norm, growth, window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(self.conv1(F.leaky_relu(x, 0.2)))
        return self.norm2(self.conv2(F.leaky_relu(x, 0.2)))


class DGF(nn.Module):
    """Deep Generative Filter generator; NCHW RGB in [0, 1] -> NCHW RGB in [0, 1], any size, size kept.

    ``size_multiple`` is 1 (no down-sampling) and ``tile_margin`` is the exact receptive-field radius,
    ``3 + sum(dilations)``. See the module docstring for the structure, dilations and cost.
    """

    size_multiple = 1

    def __init__(
        self,
        growth_rate: int = 64,
        width: int | None = None,
        dilations: list[int] | tuple[int, ...] | None = None,
        norm: str = "batch",
        norm_window: int | None = None,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"DGF norm must be one of {', '.join(NORMS)}, not {norm!r}")
        width = 4 * growth_rate if width is None else width
        dilations = default_dilations(10) if dilations is None else [int(d) for d in dilations]
        if not dilations or min(dilations) < 1:
            raise ValueError(f"DGF dilations must be one or more positive integers, not {dilations}")
        self.config: dict[str, Any] = {
            "growth_rate": growth_rate,
            "width": width,
            "dilations": dilations,
            "norm": norm,
            "norm_window": norm_window,
            "dropout": dropout,
        }
        self.tile_margin = 3 + sum(dilations)
        self.head = nn.Conv2d(3, width, 3, padding=1)
        self.dense = nn.ModuleList(
            DenseLayer(width + i * growth_rate, width, growth_rate, d, norm, norm_window)
            for i, d in enumerate(dilations)
        )
        self.tail_conv = nn.Conv2d(width + len(dilations) * growth_rate, width, 1)
        self.tail_norm = _norm(norm, width, norm_window)
        self.tail_dropout = nn.Dropout(dropout)
        self.out_conv1 = nn.Conv2d(width, growth_rate, 3, padding=1)
        self.out_conv2 = nn.Conv2d(growth_rate, 3, 3, padding=1)

    def set_norm_window(self, window: int | None) -> None:
        """Switch InstanceNorm between whole-input statistics (``None``) and a ``window``-pixel neighbourhood."""
        if self.config["norm"] != "instance":
            raise ValueError("norm_window only applies to DGF with InstanceNorm")
        self.config["norm_window"] = window
        for m in self.modules():
            if isinstance(m, InstanceNorm):
                m.window = window

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        head = self.head(inp * 2 - 1)
        x = head
        for layer in self.dense:
            x = torch.cat([x, layer(x)], dim=1)
        x = self.tail_dropout(self.tail_norm(self.tail_conv(F.leaky_relu(x, 0.2)))) + head
        x = self.out_conv2(F.leaky_relu(self.out_conv1(x), 0.2))
        return (torch.tanh(x) + 1) / 2
