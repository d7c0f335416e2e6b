"""Coarse-to-fine blind estimation of a batch of candidates: scales, smooth borders, the alternation.

A large blur is not found at full resolution from a poor start: the alternation converges to the delta
kernel or to a fragment of the path. Downscaled, the same blur is a few pixels long and the L0 latent
finds it; each finer scale then refines the upsampled kernel (Fergus et al. 2006; Pan et al. 2014).
Kernel sizes shrink by 1/sqrt(2) per scale down to :data:`MIN_SIZE`; the image is resized by the same
ratio, so the kernel keeps the photo's pixel scale at the finest level.

Every FFT here is circular, so each scale's image is first extended to wrap smoothly
(:func:`periodic_pad`): a hard wrap-around edge would be "explained" by the kernel as a long streak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from deblurcli.kernel.boundary import fast_fft_size
from deblurcli.kernel.prior import clean_kernel, latent_l0, normalise, solve_kernel

__all__ = ["Estimates", "Settings", "coarse_to_fine", "initial_kernels", "periodic_pad", "scale_sizes", "taper"]

#: Smallest kernel size of the pyramid (the coarsest scale).
MIN_SIZE = 5


@dataclass(frozen=True)
class Settings:
    """The estimator's knobs (defaults from the prototype's measured settings, see KERNEL_PATH.md, and from
    ``bench/kernel_estimate.py`` / ``bench/camera_shake.py``: docs/how_deblurcli_decides.md has the figures)."""

    #: Latent-step L0 weight at the first alternation, divided by ``lam_decay`` per alternation.
    lam: float = 4e-3
    lam_decay: float = 1.1
    #: The decay stops here. A weight this high keeps the latent a cartoon of the strong edges through the
    #: finest scales; lower (1e-4), the latent takes on fine texture and the kernel spreads to explain it:
    #: sharp photos then gave 7-13 px streaks instead of a point, and on 3 of the 15 held-out shakes of
    #: ``bench/camera_shake.py`` the kernel was off by enough to cost 3-6 dB.
    lam_min: float = 1.5e-3
    #: Start every scale again from ``lam`` (else the decay carries over from the coarser scales).
    lam_reset: bool = False
    #: Alternations (latent, kernel) per scale.
    alternations: int = 5
    #: L0 weight of a last pass at the finest scale that starts from the robust kernel and sharpens its
    #: detail (a cartoon that coarse leaves the kernel slightly wrong on photos it already got right);
    #: 0 skips the pass. The do-no-harm gate looks at the kernel before this pass.
    refine_lam: float = 3e-4
    #: Alternations of that last pass.
    refine_alternations: int = 3
    #: Tikhonov weight on the kernel per 250 000 pixels of the finest scale (data terms are sums).
    gamma: float = 60.0
    #: The latent step's splitting weight grows by 2 per iteration from 2 x its L0 weight up to this
    #: (``prior.latent_l0``): the iteration count is log2 of the ratio, and the cost follows. 1e4 (12 %
    #: fewer iterations) matched 1e5 on ``bench/kernel_estimate.py`` but cost one camera-shake photo 3.9 dB;
    #: 1e3 (-25 % latent time) was mixed there (+0.28 dB on one family, -0.28 on the other).
    beta_max: float = 1e5
    #: Conjugate-gradient iterations of each kernel step.
    cg_iters: int = 20
    #: Projected-gradient iterations enforcing k >= 0 after the conjugate gradients (0: clamp only).
    positive_iters: int = 30
    #: Taps under this fraction of the maximum are zeroed at the end of each scale.
    threshold: float = 0.1
    #: 8-connected pieces with less than this share of the mass are dropped at the end of each scale.
    min_piece: float = 0.1
    #: Lighter threshold applied after every kernel step, so noise taps do not feed the next latent step.
    step_threshold: float = 0.05


class Estimates(NamedTuple):
    """What :func:`coarse_to_fine` returns for a batch of ``B`` images (kernels ``B x k x k``).

    ``kernels``: the cleaned final kernels; ``latent``: the finest latent cartoon (``B x H x W``, for the
    re-blur check); ``raw``: the last least-squares kernels before cleaning (their mass outside the cleaned
    support tells how much the fit spread over noise); ``robust``: the kernels before the refinement pass
    (the same as ``kernels`` without one), which the do-no-harm gate judges.
    """

    kernels: torch.Tensor
    latent: torch.Tensor
    raw: torch.Tensor
    robust: torch.Tensor


def scale_sizes(max_size: int) -> list[int]:
    """Odd kernel sizes from ``MIN_SIZE`` (coarsest) up to ``max_size`` (finest), ratio about sqrt(2)."""
    sizes = [max_size | 1]
    while sizes[-1] > MIN_SIZE:
        nxt = int(round(sizes[-1] / math.sqrt(2))) | 1
        sizes.append(max(MIN_SIZE, min(nxt, sizes[-1] - 2)))
    return sizes[::-1]


def initial_kernels(size: int, orientations: list[float], device: torch.device) -> torch.Tensor:
    """``len(orientations) x size x size`` starts: a short soft line (1/4, 1/2, 1/4) at each angle (rad).

    Measured: a 2-tap start (or a weaker side tap) changed neither the failures on blurred photos nor the
    spread kernels on soft "sharp" photos, so the prototype's short line is kept.
    """
    c = size // 2
    out = torch.zeros(len(orientations), size, size, device=device)
    for i, angle in enumerate(orientations):
        dy, dx = round(math.sin(angle)), round(math.cos(angle))
        out[i, c, c] = 1.0
        out[i, c + dy, c + dx] = 0.5
        out[i, c - dy, c - dx] = 0.5
    return normalise(out)


def periodic_pad(y: torch.Tensor, pad: int) -> torch.Tensor:
    """Extend ``B x H x W`` by ``pad`` px before and at least ``pad`` after, wrapping without a jump.

    Each side is extended to a fast FFT length (``boundary.fast_fft_size``: sizes such as 391 = 17 x 23
    cost several times more). The bridge across the wrap ramps with a raised cosine from the value at
    one border to the value at the opposite border, after a light blur of the border lines so noise is
    not copied into long streaks. The photo occupies ``[pad, pad + H) x [pad, pad + W)``.
    """

    def extend(z: torch.Tensor) -> torch.Tensor:  # along the last dim
        n = z.shape[-1]
        total = fast_fft_size(n + 2 * pad) - n
        ends = torch.cat([z[..., :1], z[..., -1:]], -1).transpose(-1, -2)  # B x 2 x L
        ends = F.avg_pool1d(F.pad(ends, (2, 2), mode="replicate"), 5, stride=1).transpose(-1, -2)
        a, b = ends[..., :1], ends[..., 1:]
        t = (torch.arange(total, device=z.device, dtype=z.dtype) + 0.5) / total
        ramp = 0.5 - 0.5 * torch.cos(math.pi * t)  # 0 -> 1
        bridge = b + (a - b) * ramp  # from the last value (right end) to the first (wraps to the left)
        return torch.cat([bridge[..., total - pad :], z, bridge[..., : total - pad]], -1)

    return extend(extend(y).transpose(-1, -2)).transpose(-1, -2)


def taper(shape: tuple[int, int], size: tuple[int, int], pad: int, device: torch.device) -> torch.Tensor:
    """Weight over a padded canvas ``shape``: 0 outside the photo (``size`` at offset ``pad``), rising with
    a cosine over its first and last ``pad`` px."""

    def ramp(n: int, inner: int) -> torch.Tensor:
        i = torch.arange(n, device=device, dtype=torch.float32) - pad
        d = torch.minimum(i, inner - 1 - i) + 1  # distance into the real image
        return torch.where(d <= 0, 0.0, 0.5 - 0.5 * torch.cos(math.pi * (d / pad).clamp(max=1.0)))

    return ramp(shape[0], size[0])[:, None] * ramp(shape[1], size[1])[None, :]


def _resize(y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if (y.shape[-2], y.shape[-1]) == size:
        return y
    return F.interpolate(y[:, None], size=size, mode="bilinear", antialias=True, align_corners=False)[:, 0]


def _upsample_kernel(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Kernel resized to ``size`` taps keeping its physical extent (ratio of sizes), renormalised."""
    k = kernel.shape[-1]
    big = F.interpolate(kernel[:, None], scale_factor=size / k, mode="bilinear", align_corners=False)[:, 0]
    n = big.shape[-1]
    if n < size:
        big = F.pad(big, ((size - n) // 2, size - n - (size - n) // 2) * 2)
    elif n > size:
        o = (n - size) // 2
        big = big[..., o : o + size, o : o + size]
    return normalise(big)


def _alternate(
    ys: torch.Tensor, weight: torch.Tensor, kernel: torch.Tensor, lams: list[float], gamma: float,
    settings: Settings,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One scale's alternations, one per weight in ``lams``: ``(cleaned kernel, latent, raw fit)``."""
    latent, raw = ys, kernel
    for lam in lams:
        latent = latent_l0(ys, kernel, lam, settings.beta_max)
        raw = solve_kernel(latent, ys, weight, kernel, gamma, settings.cg_iters, settings.positive_iters)
        k = normalise(raw)
        peak = k.amax(dim=(-2, -1), keepdim=True)
        kernel = normalise(torch.where(k >= settings.step_threshold * peak, k, torch.zeros_like(k)))
    return clean_kernel(kernel, settings.threshold, settings.min_piece), latent, raw


def coarse_to_fine(y: torch.Tensor, max_size: int, inits: torch.Tensor, settings: Settings) -> Estimates:
    """Estimate one ``max_size`` kernel per image of the batch ``B x H x W``; ``inits`` is ``B x s0 x s0``."""
    sizes = scale_sizes(max_size)
    h, w = y.shape[-2], y.shape[-1]
    kernel = inits
    lam = settings.lam
    gamma = settings.gamma * (h * w) / 250_000
    for size in sizes:
        lam = settings.lam if settings.lam_reset else lam
        if kernel.shape[-1] != size:
            kernel = _upsample_kernel(kernel, size)
        ratio = size / sizes[-1]
        shape = (max(8, round(h * ratio)), max(8, round(w * ratio)))
        ys = periodic_pad(_resize(y, shape), size)
        weight = taper((ys.shape[-2], ys.shape[-1]), shape, size, y.device)
        lams = []
        for _ in range(settings.alternations):
            lams.append(lam)
            lam = max(settings.lam_min, lam / settings.lam_decay)
        kernel, latent, raw = _alternate(ys, weight, kernel, lams, gamma, settings)
    robust = kernel
    if settings.refine_lam > 0 and settings.refine_alternations > 0:
        kernel, latent, raw = _alternate(ys, weight, kernel, [settings.refine_lam] * settings.refine_alternations,
                                         gamma, settings)
    latent = latent[..., max_size : max_size + h, max_size : max_size + w]
    return Estimates(kernel, latent, normalise(raw), robust)
