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
- *stop band*: where the kernel's transfer function is near zero the photo must hold only noise and the
  blurred photo's attenuated remains (:func:`stopband_ratios`); detail there means the kernel is too long
  or the photo is sharp. This is the check that catches soft-but-sharp photos whose estimate is a short
  streak rather than a delta.

:func:`confidence` maps these to 0..1 with a logistic calibrated on the tuning families (see
``bench/kernel_estimate.py``) so that 0.5 is where deconvolving started to gain more often than lose.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["confidence", "kernel_ncc", "near_delta_mass", "noise_sigma", "pairwise_ncc", "stopband_penalty",
           "stopband_ratios", "support_share"]

#: Smallest noise std the stop-band ratio divides by: clean JPEGs measure ~0.2 % and then count ordinary
#: compression residue as "detail" (the bundled blurry sample scores 15 with it; see the report).
NOISE_FLOOR = 1e-3

#: Frequency rings of the stop-band test (each predicts its stop band from its own pass band).
RINGS = 12
#: Where each stop-band ratio starts to lower the confidence and where it vetoes (the logit falls by 6 there).
#: Against the noise: calibrated at 1 % noise, where blurred photos measured 1.3-5.8 and sharp ones 5-30.
#: Against the blur model: measured with known kernels on 8 photos of ``bench/kernel_estimate.py`` blurred by
#: held-out shakes, the true kernel scored 0.25-1.8 at 1 % and 0.2 % noise and at 0.2 % with JPEG quality 90
#: (at JPEG 75 up to 2.6, and 7.5 on a smooth wallpaper); sharp photos given a 7-15 px streak 2.5-190 at
#: 0.2 % noise and 4.7-89 at 1 %, except that wallpaper at 1 % (1.1-2.0, and 1.1-1.2 against the noise).
NOISE_STOPBAND = (4.0, 8.0)
MODEL_STOPBAND = (1.5, 3.0)

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


def stopband_penalty(ratios: tuple[float, float]) -> float:
    """How much the stop band speaks against a kernel, in logit units (6 = vetoed), from :func:`stopband_ratios`.

    A kernel is held to the more lenient of the two tests: the noise-only ratio is right where noise
    dominates the stop band (the 1 % noise it was calibrated at), the blur-model ratio where the attenuated
    photo does (clean and JPEG'd photos, where the noise-only test called every blurred photo sharp). Its
    thresholds come from known kernels; an estimated kernel's own error adds to it, which the noise-only
    test leaves room for at 1 % noise (one held-out photo whose kernel was 4 px too long scored 3.0 against
    the model and gained +2.25 dB).
    """

    def one(ratio: float, limits: tuple[float, float]) -> float:
        start, veto = limits
        return 6.0 * max(0.0, ratio - start) / (veto - start)

    return min(one(ratios[0], NOISE_STOPBAND), one(ratios[1], MODEL_STOPBAND))


def confidence(
    agreement: float, share: float, residual_ratio: float, stopband: tuple[float, float] = (1.0, 1.0),
) -> float:
    """Calibrated 0..1 trust in a kernel from its agreement, support share, re-blur and stop-band ratios
    (``stopband``: :func:`stopband_ratios`, weighed by :func:`stopband_penalty`)."""
    logit = (10.0 * (agreement - 0.6) + 6.0 * (share - 0.6) - 0.5 * max(0.0, residual_ratio - 3.0)
             - stopband_penalty(stopband))
    # A sharp photo's stop-band ratios can be in the thousands: keep exp() finite.
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, logit))))


def stopband_ratios(window: torch.Tensor, kernel: torch.Tensor, noise: float) -> tuple[float, float]:
    """Power of the photo where the kernel would have erased it, over what the noise alone and what the blur
    model predicts there: ``(against the noise, against the blur model)``.

    If ``window = kernel * sharp + noise``, then at frequencies where the kernel's transfer ``|K|`` is under
    a fifth the photo holds the sharp photo's power attenuated by ``|K|^2``, plus noise. The sharp photo's
    power at each frequency radius is read from the same ring's pass band (``|K|`` over a half), where the
    blurred photo still shows it: ``S = (P_pass - N) / mean |K_pass|^2``; the model's prediction for the
    stop band is ``mean |K_stop|^2 S + N``, the noise-only one ``N``. With the true kernel the model ratio is
    near 1; a sharp photo given a spurious streak, or a kernel longer than the true blur, leaves the stop
    band as full as the pass band and scores tens on both. Rings are 1/12 of the band wide, from 4 cycles
    per window to the Nyquist radius; Hann-windowed, so the borders add no broadband power.

    The noise-only ratio cannot tell these apart on clean or JPEG'd photos: there the attenuated photo is
    far above the noise even under the true kernel (20-190 on blurred photos with 0.2 % noise or JPEG
    quality 75-90, which the kernel path deblurs by +3-8 dB), and JPEG residue counts as detail.
    """
    h, w = window.shape
    hann = torch.hann_window(h, device=window.device)[:, None] * torch.hann_window(w, device=window.device)[None]
    z = (window - window.mean()) * hann
    power = torch.fft.rfft2(z).abs().square().flatten()
    k = kernel.shape[-1]
    transfer = torch.fft.rfft2(F.pad(kernel.float(), (0, w - k, 0, h - k))).abs().square().flatten()
    fy = torch.fft.fftfreq(h, device=window.device)[:, None]
    fx = torch.fft.rfftfreq(w, device=window.device)[None, :]
    radius = (fy.square() + fx.square()).sqrt().flatten()
    low = 4.0 / min(h, w)
    ring = ((radius - low) / (0.5 - low) * RINGS).floor().clamp(max=RINGS - 1).long()
    # Against the noise: every stop-band frequency above 4 cycles per window, corners included; against the
    # model: those within the Nyquist radius, whose rings also have a pass band.
    band = (transfer < 0.2**2) & (radius > low)
    stop = band & (radius <= 0.5)
    passing = (transfer > 0.5**2) & (radius > low) & (radius <= 0.5)

    def per_ring(values: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        return torch.zeros(RINGS, device=window.device).index_add_(0, ring[where], values[where])

    floor = max(noise, NOISE_FLOOR) ** 2 * float(hann.square().sum())
    against_noise = float(power[band].mean()) / floor if int(band.sum()) >= 16 else 1.0
    ones = torch.ones_like(power)
    n_stop, n_pass = per_ring(ones, stop), per_ring(ones, passing)
    used = (n_stop >= 8) & (n_pass >= 8)
    if not bool(used.any()):
        return against_noise, 1.0
    pass_power = per_ring(power, passing) / n_pass.clamp(min=1)
    sharp = (pass_power - floor).clamp(min=0) / (per_ring(transfer, passing) / n_pass.clamp(min=1))
    predicted = (per_ring(transfer, stop) * sharp + n_stop * floor)[used].sum()  # each ring's stop band
    return against_noise, float(per_ring(power, stop)[used].sum() / predicted.clamp(min=1e-30))
