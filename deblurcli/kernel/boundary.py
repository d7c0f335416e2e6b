"""Smooth periodic extension of an observed image, so FFT-based deconvolution sees no edge.

An FFT solve treats the image as one period of an infinite tiling. A photo's bottom row is unrelated to its
top row, so without care that seam is a hard edge the deconvolution "explains" with ringing that spreads over
the whole image (the wrap-around artefact). The cure (Liu & Jia 2008, and the measured fact in
KERNEL_PATH.md that borders decide whether deconvolution works) is to place the photo in a larger canvas whose
extra band joins each edge smoothly to the opposite one:

* along each axis the band of ``pad`` pixels after the last row starts as the photo's mirror image at the
  bottom edge and ends as its mirror image at the top edge (which, periodically, is where it leads), the two
  cross-faded with a raised cosine. Mirroring keeps the texture's statistics and the value continuous at
  both seams; the cosine makes the hand-over smooth;
* rows are extended first, then the columns of the result, so the corners are smooth too.

The photo stays at the canvas' top-left corner (``[:H, :W]``): the band is at the bottom/right and, by
periodicity, also above/left of it. Cropping ``[:H, :W]`` gives the photo back.
"""

from __future__ import annotations

import math

import torch

__all__ = ["extend_periodic", "fast_fft_size", "mirror_index"]


def fast_fft_size(n: int) -> int:
    """Smallest integer >= ``n`` whose prime factors are 2, 3 and 5: pocketfft and cuFFT are fastest there."""
    m = max(1, n)
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def mirror_index(index: torch.Tensor, size: int) -> torch.Tensor:
    """Map any integer coordinates into ``[0, size)`` by whole-sample mirroring (-1 -> 1, size -> size - 2),
    repeated as often as needed, so a band wider than the photo is still defined."""
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index < size, index, period - index)


def _extend_axis(x: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """Append ``pad`` samples along ``dim`` that lead smoothly from the last sample back to the first."""
    if pad == 0:
        return x
    n = x.shape[dim]
    t = torch.arange(pad, device=x.device)
    # From the far edge outwards: mirror about the last sample (n - 2, n - 3, ...), and into the near edge
    # from before it: mirror about sample 0 seen from -pad .. -1 (so the band ends next to sample 0).
    after_last = mirror_index(n - 1 + 1 + t, n)
    before_first = mirror_index(t - pad, n)
    ramp = 0.5 - 0.5 * torch.cos(math.pi * (t.to(x.dtype) + 1) / (pad + 1))
    shape = [1] * x.dim()
    shape[dim] = pad
    ramp = ramp.view(shape)
    band = x.index_select(dim, after_last) * (1 - ramp) + x.index_select(dim, before_first) * ramp
    return torch.cat([x, band], dim=dim)


def extend_periodic(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``... x H x W`` -> ``... x height x width`` (each at least the input's), periodic and smooth across the
    canvas' edges; the input sits unchanged in ``[..., :H, :W]``."""
    h, w = x.shape[-2:]
    if height < h or width < w:
        raise ValueError(f"canvas {height}x{width} is smaller than the image {h}x{w}")
    return _extend_axis(_extend_axis(x, height - h, x.dim() - 2), width - w, x.dim() - 1)
