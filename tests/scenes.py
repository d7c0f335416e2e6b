"""Synthetic test photos for the kernel path: flat shapes whose edges run at every angle.

Blind kernel estimation needs edges of many orientations, and a test needs the exact sharp photo; random
rectangles and discs of random grey levels give both in a few milliseconds, at any size.
"""

from __future__ import annotations

import numpy as np
import torch

from deblurcli.blur import apply_kernels


def shapes(h: int, w: int, seed: int = 0, count: int = 60) -> np.ndarray:
    """``h x w`` float32 grey photo: ``count`` overlapping rectangles and discs on mid-grey."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 0.5, dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(count):
        cy, cx, r, value = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, 22), rng.uniform(0.05, 0.95)
        if rng.random() < 0.5:
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = value
        else:
            img[(abs(yy - cy) < r) & (abs(xx - cx) < rng.uniform(3, 20))] = value
    return img


def blurred(img: torch.Tensor, kernel: torch.Tensor, noise: float = 0.005, seed: int = 1) -> torch.Tensor:
    """``img`` (H x W) convolved with ``kernel``, plus seeded Gaussian noise, clipped to [0, 1]."""
    out = apply_kernels(img[None, None], kernel[None, None])[0, 0]
    gen = torch.Generator().manual_seed(seed)
    return (out + noise * torch.randn(out.shape, generator=gen)).clamp(0, 1)
