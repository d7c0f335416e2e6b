"""The noise level of a photo, which sets how hard deconvolution may push.

Immerkaer (1996) filters the image with the difference of two Laplacians,
``[[1, -2, 1], [-2, 4, -2], [1, -2, 1]]``, which cancels every locally linear (and most smooth) structure,
so what remains is mostly noise: white noise of standard deviation ``sigma`` comes out with standard
deviation ``6 sigma`` (the mask's L2 norm). Immerkaer averages the absolute response, which edges and texture
inflate; here the *median* absolute response is used instead (median absolute deviation, ``MAD / 0.6745`` for
a Gaussian), so the minority of pixels on edges barely moves the estimate. Blurry photos, the ones that are
deconvolved, are smooth almost everywhere, which is where this estimator is most reliable.

Clipped pixels (black or white, where the noise was cut off) and their neighbours are left out: a saturated
sky would otherwise pull the estimate towards zero. Each colour channel is estimated on its own (noise is
added per channel; averaging channels first would divide it by ~sqrt(3)) and the median of the channels is
returned.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["estimate_noise"]

#: Immerkaer's mask; its L2 norm is 6.
_MASK = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
#: median(|N(0, 1)|).
_MAD_GAUSSIAN = 0.6744897501960817
#: Values this close to 0 or 1 count as clipped.
_CLIP_EPS = 1.0 / 255
#: Responses used per channel at most (a strided subset beyond): the median of 4 M samples is exact enough.
_MAX_SAMPLES = 1 << 22


def estimate_noise(image: torch.Tensor) -> float:
    """Standard deviation of additive white noise in ``image`` (``C x H x W`` or ``H x W``, values in [0, 1]).

    Returns 0.0 for images smaller than 3 x 3 or with no unclipped pixels.
    """
    x = image.detach().float()
    if x.dim() == 2:
        x = x[None]
    if x.dim() != 3:
        raise ValueError(f"expected C x H x W or H x W, got shape {tuple(image.shape)}")
    if x.shape[-1] < 3 or x.shape[-2] < 3:
        return 0.0
    mask = _MASK.to(device=x.device, dtype=x.dtype)[None, None]
    response = F.conv2d(x[:, None], mask)[:, 0]  # C x (H-2) x (W-2)
    clipped = ((x <= _CLIP_EPS) | (x >= 1 - _CLIP_EPS)).float()
    near_clip = F.max_pool2d(clipped[:, None], 3, stride=1)[:, 0] > 0
    estimates = []
    for r, bad in zip(response, near_clip):  # a handful of channels
        values = r[~bad].abs()
        if values.numel() == 0:
            continue
        step = max(1, math.ceil(values.numel() / _MAX_SAMPLES))
        estimates.append(float(values[::step].median()) / (6.0 * _MAD_GAUSSIAN))
    if not estimates:
        return 0.0
    return float(torch.tensor(estimates).median())
