"""Where to estimate: square windows rich in strong edges of varied orientation, not repetitive texture.

The kernel is only observable through edges: a straight edge constrains its profile across that edge,
so edges of several orientations are needed to pin it down in 2-D, and flat or saturated areas say
nothing. Periodic texture (brick, tiles, railings) is the worst case: the blurred photo is then also
explained by a kernel made of shifted copies, and the estimator produced horizontal streaks on brick
(KERNEL_PATH.md). Windows are scored on a downscaled copy of the photo (cheap at 12 MP):

    score = edge strength x sqrt(orientation variety) x (1 - saturated share)^2 x (1 - repetition)

- edge strength: mean gradient magnitude over pixels whose gradient stands out of the noise;
- orientation variety: ``4 det J / tr(J)^2`` of the window's structure tensor (0: one orientation,
  1: all orientations equally);
- repetition: the largest normalised autocorrelation of the gradient magnitude at lags longer than the
  largest kernel (blur correlates pixels only up to the kernel's length; texture repeats beyond it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["saturated_shares", "select_windows", "window_scores"]

#: The scoring copy's long side, px (enough to see texture, cheap at any photo size).
SCORE_SIDE = 768
#: sRGB value at or above which a pixel counts as clipped.
SATURATED = 0.98


def saturated_shares(windows: torch.Tensor) -> list[float]:
    """Each ``B x h x w`` window's share of pixels within 2 px of a clipped one (as :func:`window_scores`
    counts them, at full resolution)."""
    clipped = (windows >= SATURATED).float()[:, None]
    return F.max_pool2d(clipped, 5, stride=1, padding=2).mean(dim=(1, 2, 3)).tolist()


def _box_mean(x: torch.Tensor, side: int, stride: int) -> torch.Tensor:
    return F.avg_pool2d(x[None, None], side, stride=stride)[0, 0]


def window_scores(
    grey: torch.Tensor, side: int, noise: float, max_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Scores of square windows of ``side`` px at about half-window steps: ``(score, saturated, contrast, step)``.

    Row i of the grids starts at ``i * step`` photo px. ``contrast`` is each window's grey standard
    deviation (on the downscaled copy), which tells a flat photo.
    """
    h, w = grey.shape
    factor = max(2.0, max(h, w) / SCORE_SIDE)  # at least 2: halves the noise, doubles blurred slopes
    size = (max(1, round(h / factor)), max(1, round(w / factor)))
    small = F.interpolate(grey[None, None].float(), size=size, mode="bilinear", antialias=True,
                          align_corners=False)[0, 0]
    gx = F.pad(small[:, 2:] - small[:, :-2], (1, 1)) / 2
    gy = F.pad(small[2:] - small[:-2], (0, 0, 1, 1)) / 2
    mag = (gx.square() + gy.square()).sqrt()
    strong = (mag > max(0.004, 2.0 * noise / factor)).float()
    sat = (F.max_pool2d((small >= SATURATED).float()[None, None], 5, stride=1, padding=2)[0, 0])
    ws = max(4, int(side / factor))
    stride = max(1, ws // 2)
    if ws > min(small.shape):
        ws = stride = min(small.shape)
    edges = _box_mean(mag * strong, ws, stride)
    contrast = (_box_mean(small.square(), ws, stride) - _box_mean(small, ws, stride).square()).clamp(min=0).sqrt()
    jxx, jyy, jxy = (_box_mean(t * strong, ws, stride) for t in (gx.square(), gy.square(), gx * gy))
    variety = 4 * (jxx * jyy - jxy.square()) / (jxx + jyy).square().clamp(min=1e-12)
    saturated = _box_mean(sat, ws, stride)
    score = edges * variety.clamp(0, 1).sqrt() * (1 - saturated).square()
    rep = _repetition(mag, score, ws, stride, max(3, math.ceil(max_size / factor) + 1))
    return score * (1 - rep).clamp(min=0.05), saturated, contrast, stride * factor


def _repetition(mag: torch.Tensor, score: torch.Tensor, ws: int, stride: int, min_lag: int) -> torch.Tensor:
    """Per-window repetition in 0..1 (0 where not measured): the top windows' autocorrelation peak."""
    rep = torch.zeros_like(score)
    top = score.flatten().argsort(descending=True)[:12]
    rows, cols = top // score.shape[1], top % score.shape[1]
    patches = torch.stack([mag[r * stride : r * stride + ws, c * stride : c * stride + ws] for r, c in
                           zip(rows.tolist(), cols.tolist())])
    z = patches - patches.mean(dim=(-2, -1), keepdim=True)
    spec = torch.fft.rfft2(z * torch.hann_window(ws, device=mag.device)[:, None]
                           * torch.hann_window(ws, device=mag.device)[None], s=(2 * ws, 2 * ws))
    auto = torch.fft.irfft2(spec.abs().square(), s=(2 * ws, 2 * ws))
    auto = auto / auto[:, :1, :1].clamp(min=1e-12)
    lag = torch.arange(2 * ws, device=mag.device)
    lag = torch.minimum(lag, 2 * ws - lag)
    radius = (lag[:, None].square() + lag[None, :].square()).float().sqrt()
    ring = (radius > min_lag) & (radius < ws / 3)
    if ring.any():
        peak = torch.where(ring, auto, torch.full_like(auto, -1.0)).flatten(1).amax(1).clamp(0, 1)
        rep[rows, cols] = peak
    return rep


def select_windows(
    grey: torch.Tensor, side: int, count: int, noise: float, max_size: int
) -> tuple[list[tuple[int, int, int, int]], list[float], float]:
    """Up to ``count`` best, little-overlapping ``side`` x ``side`` windows ``(y0, x0, h, w)`` in photo pixels.

    Also returns each window's saturated share and the largest window contrast (0 for a flat photo).
    Windows may overlap by at most a quarter of their area, so restarts see mostly different content.
    """
    h, w = grey.shape
    side = min(side, h, w)
    score, saturated, contrast, step = window_scores(grey, side, noise, max_size)
    order = score.flatten().argsort(descending=True).tolist()
    chosen: list[tuple[int, int, int, int]] = []
    sat: list[float] = []
    for flat in order:
        r, c = divmod(flat, score.shape[1])
        y0 = min(int(round(r * step)), h - side)
        x0 = min(int(round(c * step)), w - side)
        overlap = [max(0, side - abs(y0 - b[0])) * max(0, side - abs(x0 - b[1])) for b in chosen]
        if all(o <= side * side / 4 for o in overlap):
            chosen.append((y0, x0, side, side))
            sat.append(float(saturated[r, c]))
        if len(chosen) == count:
            break
    return chosen, sat, float(contrast.max())
