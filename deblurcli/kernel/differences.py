"""Circular finite differences, the gradient operator both FFT solvers (``prior.py``, ``deconv.py``) assume.

The half-quadratic loops call these once or twice per iteration on whole canvases, so they write into
buffers the caller allocates once and use slices: ``torch.roll`` copies its whole input through a
concatenation, which cost as much as the subtraction itself.
"""

from __future__ import annotations

import torch

__all__ = ["backward_divergence", "forward_differences"]


def forward_differences(
    x: torch.Tensor, gx: torch.Tensor | None = None, gy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x[i+1] - x[i]`` (circular) along the last dim into ``gx`` and along the one before into ``gy``
    (allocated when None)."""
    gx = torch.empty_like(x) if gx is None else gx
    gy = torch.empty_like(x) if gy is None else gy
    torch.sub(x[..., 1:], x[..., :-1], out=gx[..., :-1])
    torch.sub(x[..., :1], x[..., -1:], out=gx[..., -1:])
    torch.sub(x[..., 1:, :], x[..., :-1, :], out=gy[..., :-1, :])
    torch.sub(x[..., :1, :], x[..., -1:, :], out=gy[..., -1:, :])
    return gx, gy


def backward_divergence(
    gx: torch.Tensor, gy: torch.Tensor, out: torch.Tensor | None = None, scratch: torch.Tensor | None = None,
) -> torch.Tensor:
    """The adjoint of :func:`forward_differences` applied to ``(gx, gy)``: ``(g[i-1] - g[i])`` along each dim,
    summed, into ``out`` (``scratch`` is a buffer of the same shape; both allocated when None)."""
    out = torch.empty_like(gx) if out is None else out
    scratch = torch.empty_like(gx) if scratch is None else scratch
    torch.sub(gx[..., :-1], gx[..., 1:], out=out[..., 1:])
    torch.sub(gx[..., -1:], gx[..., :1], out=out[..., :1])
    torch.sub(gy[..., :-1, :], gy[..., 1:, :], out=scratch[..., 1:, :])
    torch.sub(gy[..., -1:, :], gy[..., :1, :], out=scratch[..., :1, :])
    return out.add_(scratch)
