"""Does the kernel explain the whole photo? The re-blur residual of a deconvolution, block by block.

The estimator judges its kernel on a few windows (``region.py``). A photo can pass that test and still not
be one camera shake: a moving object (a cyclist, a waving hand) is blurred by its own motion, so outside
the windows the kernel is simply wrong there. Deconvolution cannot fit such a region without ringing,
which its prior forbids, so the deconvolved photo re-blurred by the kernel misses the input there by much
more than the noise, while on a true camera shake the miss is about the noise everywhere.

Measured on the seeded validation families (``.data/val``; 32 px blocks, a block counted when its mean
squared residual exceeds 20 noise variances): the 14 uniform held-out shakes that auto deconvolves leave
0-1.3 % of their blocks unexplained (the highest around nearly clipped white, lighthouse3); the 5 dynamic
scenes that the estimator passed, where deconvolving lost 0.9-2.4 dB to the network, leave 0 (caps, whose
object moves little), 2.1, 3.0, 6.1 and 9.0 %. At 10 noise variances the shake photos reached 7 %
(lighthouse3) and overlapped the dynamic ones; at 40 the dynamic ones fell to 0.5-5 %. The share is computed on luma at full resolution (one FFT convolution), with clipped highlights
(excluded from deconvolution's data term too) and a border of one kernel plus one block left out, where the
boundary extension, not the kernel, decides the residual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deblurcli.blur import apply_kernels

__all__ = ["BLOCK", "unexplained_share"]

#: Side of the blocks the residual is averaged over (px): large enough for the noise to average out (1,024
#: samples), small enough for a person in a wide shot.
BLOCK = 32
#: A block is unexplained when its mean squared residual exceeds this many noise variances.
RATIO = 20.0
#: Values at or above this (in [0, 1]) are treated as clipped: the blur model does not hold there.
CLIPPED = 0.97
#: Cell side (px) of the grid clipped highlights are dilated on.
CELL = 8
#: Smallest noise std divided by: below about one 8-bit level, quantisation and JPEG residue dominate.
NOISE_FLOOR = 0.004


def _reach_of_clipping(y: torch.Tensor, size: int) -> torch.Tensor:
    """1 where a clipped pixel lies within ``size // 2`` px (a clipped pixel spoils the residual of every
    pixel its blur reaches), else 0; ``y`` is ``1 x 1 x H x W``.

    Dilated on a grid of ``CELL`` px cells and expanded back, so it costs a few passes over the photo
    instead of ``size**2`` comparisons per pixel (22 s on a 12 MP photo): it marks at most a cell more.
    """
    h, w = y.shape[-2:]
    cells = F.max_pool2d((y >= CLIPPED).float(), CELL, ceil_mode=True)
    reach = size // 2 // CELL + 1
    cells = F.max_pool2d(cells, 2 * reach + 1, stride=1, padding=reach)
    return cells.repeat_interleave(CELL, dim=-2).repeat_interleave(CELL, dim=-1)[..., :h, :w]


def unexplained_share(blurry: torch.Tensor, deconvolved: torch.Tensor, kernel: torch.Tensor, noise: float) -> float:
    """Share of the photo's blocks that ``kernel`` does not explain, for luma images ``H x W`` in [0, 1].

    ``deconvolved`` is the non-blind deconvolution of ``blurry`` with ``kernel`` (before any refiner, whose
    output is not meant to re-blur to the input). 0.0 when the photo is too small to hold a block inside
    the excluded border.
    """
    y = blurry.float()[None, None]
    x = deconvolved.float().to(y.device)[None, None]
    k = kernel.float().to(y.device)
    size = k.shape[-1] | 1
    residual = (apply_kernels(x, k[None, None], padding="replicate") - y) ** 2
    usable = 1.0 - _reach_of_clipping(y, size)
    margin = size // 2 + BLOCK
    h, w = y.shape[-2:]
    if h < 2 * margin + BLOCK or w < 2 * margin + BLOCK:
        return 0.0
    crop = (..., slice(margin, h - margin), slice(margin, w - margin))
    energy = F.avg_pool2d((residual * usable)[crop], BLOCK)
    weight = F.avg_pool2d(usable[crop], BLOCK)
    sigma = max(float(noise), NOISE_FLOOR)
    ratio = energy / weight.clamp(min=1e-3) / sigma**2
    counted = weight > 0.25  # blocks mostly clipped say nothing either way
    if not bool(counted.any()):
        return 0.0
    return float(((ratio > RATIO) & counted).sum() / counted.sum())
