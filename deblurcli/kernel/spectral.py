"""Dividing a spectrum by a real one, as both FFT solvers (``prior.py``, ``deconv.py``) do every iteration.

A complex tensor divided by a real tensor first casts the real one to complex and then runs a complex
division: on two cores that took 2.1 ms for 2 x 480 x 241 values, against 0.2 ms for the same division
done on the spectrum's real view by a divisor laid out once per real and imaginary part.
"""

from __future__ import annotations

import torch

__all__ = ["divide_", "real_pairs"]


def real_pairs(divisor: torch.Tensor) -> torch.Tensor:
    """``divisor`` (real, the spectrum's shape) with each value written twice along a new last dim, the
    layout of ``torch.view_as_real`` of the spectrum; build it once, outside the loop."""
    return divisor[..., None].expand(*divisor.shape, 2).contiguous()


def divide_(spectrum: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """``spectrum / divisor`` in place, ``pairs`` being :func:`real_pairs` of the divisor."""
    torch.view_as_real(spectrum).div_(pairs)
    return spectrum
