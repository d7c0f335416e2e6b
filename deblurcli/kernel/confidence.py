"""How far to trust an estimated kernel: comparisons between kernels, the do-no-harm gate, the score.

An estimate is only worth deconvolving with when several things agree, because each alone is fooled:

- *agreement*: kernels estimated independently (other regions, other starts) match up to a shift
  (:func:`kernel_ncc`). A wrong kernel is usually wrong in its own way on each region; repetitive
  texture or a moving object gives different answers in different places.
- *compactness*: a camera-shake kernel is one thin connected path; the least-squares fit before
  cleaning keeps most of its mass on that path when the fit is right, and spreads it over the canvas
  when the data did not determine it (:func:`support_share`).
- *re-blur residual*: the latent cartoon re-blurred by the kernel should explain the photo's edges up to
  the noise; the ratio of the residual to the estimated noise is reported in ``details``;
- *stop band*: where the kernel's transfer function is near zero the photo must hold only noise
  (:func:`stopband_ratio`); detail there means the kernel is too long or the photo is sharp. This is the
  check that catches soft-but-sharp photos whose estimate is a short streak rather than a delta.

:func:`confidence` maps these to 0..1 with a logistic calibrated on the tuning families (see
``bench/kernel_estimate.py``) so that 0.5 is where deconvolving started to gain more often than lose.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["confidence", "kernel_ncc", "near_delta_mass", "noise_sigma", "pairwise_ncc", "support_share"]

#: Smallest noise std the stop-band ratio divides by: clean JPEGs measure ~0.2 % and then count ordinary
#: compression residue as "detail" (the bundled blurry sample scores 15 with it; see the report).
NOISE_FLOOR = 1e-3

#: Gate: a kernel with at least this mass in one 3x3 window is "no blur" (KERNEL_PATH.md: 1.00 on every
#: sharp photo, at most 0.59 on blurred ones).
NEAR_DELTA = 0.8


def near_delta_mass(kernel: torch.Tensor) -> float:
    """Largest share of the kernel's mass inside any 3x3 window (1.0 for a delta or a 2x2 box)."""
    k = kernel.detach().float().reshape(1, 1, *kernel.shape[-2:])
    total = float(k.sum())
    if total <= 0:
        return 1.0
    return float(F.avg_pool2d(F.pad(k, (1, 1, 1, 1)), 3, stride=1).max()) * 9.0 / total


def kernel_ncc(a: torch.Tensor, b: torch.Tensor) -> float:
    """Normalised cross-correlation of two kernels, maximised over integer shifts (any sizes)."""
    return float(pairwise_ncc(torch.stack(_same_size([a, b])))[0, 1])


def _same_size(kernels: list[torch.Tensor]) -> list[torch.Tensor]:
    n = max(k.shape[-1] for k in kernels)
    return [F.pad(k.float(), ((n - k.shape[-1]) // 2,) * 4) for k in kernels]


def pairwise_ncc(kernels: torch.Tensor) -> torch.Tensor:
    """``B x B`` matrix of shift-maximised normalised cross-correlations of ``B x k x k`` kernels.

    Kernels are compared after removing their mean, so two flat kernels do not look alike; a delta
    against a long streak scores low. One FFT pass computes every pair at every shift.
    """
    k = kernels.shape[-1]
    z = kernels.float() - kernels.float().mean(dim=(-2, -1), keepdim=True)
    norm = z.flatten(1).norm(dim=1).clamp(min=1e-12)
    spec = torch.fft.rfft2(z, s=(2 * k, 2 * k))
    corr = torch.fft.irfft2(spec[:, None] * spec[None].conj(), s=(2 * k, 2 * k))
    return corr.flatten(2).amax(-1) / (norm[:, None] * norm[None, :])


def support_share(raw: torch.Tensor, cleaned: torch.Tensor) -> torch.Tensor:
    """Share of the raw (non-negative, normalised) fit's mass on the cleaned kernel's support, dilated 1 px.

    Both are aligned up to the integer recentring shift by trying every shift within ±2 px (cheap on
    ``k x k`` arrays) and keeping the best.
    """
    support = (F.max_pool2d(cleaned[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0).float()
    best = torch.zeros(raw.shape[0], device=raw.device)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            shifted = support.roll((dy, dx), dims=(-2, -1))
            best = torch.maximum(best, (raw * shifted).sum(dim=(-2, -1)))
    return best


def noise_sigma(grey: torch.Tensor) -> float:
    """Noise std of an ``H x W`` image in [0, 1] units from the median of a noise-only high-pass.

    The 3x3 Laplacian-of-Laplacian mask of Immerkaer (1996) cancels smooth image content up to second
    order; its median absolute response over a Gaussian would be 0.6745 x 6 sigma (6 = the mask's norm).
    The median, not the mean, keeps edges out of the estimate.
    """
    mask = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]], device=grey.device)
    if min(grey.shape[-2:]) < 3:
        return 0.0
    response = F.conv2d(grey.float()[None, None], mask[None, None])
    return float(response.abs().median()) / (0.6745 * 6.0)


def confidence(agreement: float, share: float, residual_ratio: float, stopband: float = 1.0) -> float:
    """Calibrated 0..1 trust in a kernel from its agreement, support share, re-blur and stop-band ratios.

    Measured on the tuning families (1 % noise): the stop-band ratio was 1.3-5.8 on blurred photos and
    5-30 on sharp ones, so it only starts to count above 4 and vetoes by about 8.
    """
    logit = (10.0 * (agreement - 0.6) + 6.0 * (share - 0.6) - 0.5 * max(0.0, residual_ratio - 3.0)
             - 1.5 * max(0.0, stopband - 4.0))
    # A sharp photo's stop-band ratio can be in the thousands: keep exp() finite.
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, logit))))


def stopband_ratio(window: torch.Tensor, kernel: torch.Tensor, noise: float) -> float:
    """Power of the photo where the kernel would have erased it, over the power noise alone would put there.

    If ``window = kernel * sharp + noise``, then at frequencies where the kernel's transfer ``|K|`` is
    under a fifth, the photo holds little but noise, and the ratio is near 1 (a few with an underestimated
    noise level). A photo with real detail there - a sharp photo given a spurious streak, or a kernel
    longer than the true blur - gives a ratio of tens: that kernel cannot be the blur. Hann-windowed, so
    the borders add no spurious broadband power.
    """
    h, w = window.shape
    hann = torch.hann_window(h, device=window.device)[:, None] * torch.hann_window(w, device=window.device)[None]
    z = (window - window.mean()) * hann
    power = torch.fft.rfft2(z).abs().square()
    k = kernel.shape[-1]
    transfer = torch.fft.rfft2(F.pad(kernel.float(), (0, w - k, 0, h - k))).abs()
    fy = torch.fft.fftfreq(h, device=window.device)[:, None]
    fx = torch.fft.rfftfreq(w, device=window.device)[None, :]
    band = (transfer < 0.2) & ((fy.square() + fx.square()).sqrt() > 4.0 / min(h, w))
    if int(band.sum()) < 16:
        return 1.0
    floor = max(noise, NOISE_FLOOR) ** 2 * float(hann.square().sum())
    return float(power[band].mean()) / floor
