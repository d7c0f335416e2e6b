"""Blind estimation of a uniform camera-shake kernel from a photo's luminance, with a trust score.

One estimate is not trustworthy on its own: the prototype gained +5.6 dB on the kernels it was tuned on
but failed on 2 of 8 recorded ones (brick texture, a wrong cross). So :func:`estimate_kernel`

1. picks several little-overlapping windows rich in varied edges and free of repetitive texture
   (``region.py``), at most ``max_pixels`` in all;
2. runs the coarse-to-fine L0 estimator (``pyramid.py`` / ``prior.py``) on all of them at once, as one
   batch (a photo too small for two windows gets two starts of different orientation instead);
3. keeps the candidate that agrees best with the others, and scores its confidence from that agreement,
   the compactness of its least-squares fit and its re-blur residual against the noise (``confidence.py``);
4. applies the do-no-harm gate: a kernel with >= 0.8 of its mass in a 3x3 window means "sharp".

:func:`estimate_kernel_grid` does the same per overlapping region of a grid for spatially varying blur
and reports how much the regions agree: low agreement is a photo whose blur is not camera shake alone
(moving objects), which the caller hands to the learned network instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from deblurcli.blur import apply_kernels
from deblurcli.kernel.confidence import (
    NEAR_DELTA,
    confidence,
    near_delta_mass,
    noise_sigma,
    pairwise_ncc,
    stopband_penalty,
    stopband_ratios,
    support_share,
)
from deblurcli.kernel.pyramid import Estimates, Settings, coarse_to_fine, initial_kernels, scale_sizes
from deblurcli.kernel.region import saturated_shares, select_windows

__all__ = ["KernelEstimate", "KernelGrid", "estimate_in_windows", "estimate_kernel", "estimate_kernel_grid",
           "near_delta_mass"]

#: Smallest photo side an estimate is attempted on.
MIN_SIDE = 64
#: Windows (restarts) per estimate, and the largest window side: 2 x 384^2 = 0.3 MP keeps one estimate
#: near 2 s on two cores while each window still holds many kernel lengths of edges.
WINDOWS = 2
MAX_WINDOW = 384
#: A photo whose most contrasted window has a grey std under this, or under twice the noise, is flat.
FLAT_CONTRAST = 0.01
#: Windows with more clipped pixels than this share violate the linear blur model noticeably.
SATURATED_SHARE = 0.2
#: Noise is measured on a centre crop of at most this side (a median over 12 MP would cost seconds).
NOISE_SIDE = 1024
#: The estimator's settings (``bench/kernel_estimate.py --set`` overrides them to tune).
SETTINGS = Settings()


@dataclass(frozen=True)
class KernelEstimate:
    """A blind kernel estimate. ``kernel`` is ``size x size`` (odd), >= 0, sums to 1, centred on its centroid.

    ``confidence`` >= 0.5 means deconvolving with the kernel is expected to help; ``near_delta`` is the
    do-no-harm gate (the photo looks sharp: leave it alone). ``region`` is the main window used,
    ``(y0, x0, h, w)``. ``notes`` say, one line each, why confidence is low or what was fallen back to.
    """

    kernel: torch.Tensor
    confidence: float
    near_delta: bool
    size: int
    region: tuple[int, int, int, int]
    details: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    #: Every window the estimate ran on (``region`` is one of them); empty when nothing was estimated.
    windows: tuple[tuple[int, int, int, int], ...] = ()


@dataclass(frozen=True)
class KernelGrid:
    """One kernel per overlapping region of a ``rows x cols`` grid (row-major), for spatially varying blur.

    ``kernels`` is ``n x k x k`` (all padded to one size). Regions whose own estimate was unconfident
    carry the global kernel (``fallback[i]`` is True). ``agreement`` in 0..1 is the mean shift-maximised
    normalised cross-correlation between the confident regions' own kernels: near 1 for uniform camera
    shake, low for blur that varies across the photo (moving objects, strong rotation).
    """

    kernels: torch.Tensor
    boxes: tuple[tuple[int, int, int, int], ...]
    confidences: tuple[float, ...]
    fallback: tuple[bool, ...]
    agreement: float
    grid: tuple[int, int]
    global_estimate: KernelEstimate
    notes: tuple[str, ...] = ()


def _delta(size: int, device: torch.device) -> torch.Tensor:
    k = torch.zeros(size, size, device=device)
    k[size // 2, size // 2] = 1.0
    return k


def _crop_to_support(kernel: torch.Tensor) -> torch.Tensor:
    """The smallest centred odd square holding every non-zero tap (deconvolution cost grows with it)."""
    k = kernel.shape[-1]
    c = k // 2
    nz = (kernel > 0).nonzero()
    if nz.numel() == 0:
        return kernel[c : c + 1, c : c + 1]
    r = int((nz - c).abs().max())
    return kernel[c - r : c + r + 1, c - r : c + r + 1]


def _centre(grey: torch.Tensor, side: int) -> torch.Tensor:
    h, w = grey.shape
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return grey[y0 : y0 + side, x0 : x0 + side]


def _clean(x: torch.Tensor) -> torch.Tensor:
    """Float values in [0, 1], NaN as 0 and infinities at the ends: odd input must not crash the estimator."""
    return torch.nan_to_num(x.float(), nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1)


def _prepare(grey: torch.Tensor) -> torch.Tensor:
    grey = torch.as_tensor(grey)
    if grey.dim() == 3 and grey.shape[0] == 1:
        grey = grey[0]
    if grey.dim() != 2:
        raise ValueError(f"grey must be an H x W luminance image, got shape {tuple(grey.shape)}")
    return _clean(grey)


def _prepare_batch(windows: torch.Tensor) -> torch.Tensor:
    windows = torch.as_tensor(windows)
    if windows.dim() != 3:
        raise ValueError(f"windows must be B x H x W luminance crops, got shape {tuple(windows.shape)}")
    return _clean(windows)


def _trivial(grey: torch.Tensor, near_delta: bool, note: str, details: dict[str, float]) -> KernelEstimate:
    h, w = grey.shape
    return KernelEstimate(_delta(1, grey.device), 0.0, near_delta, 1, (0, 0, h, w), details, (note,))


def _reblur_ratio(y: torch.Tensor, latent: torch.Tensor, kernel: torch.Tensor, noise: float) -> float:
    """Std of ``y - k * latent`` inside the window (borders of one kernel dropped) over the noise std.

    The latent is an L0 cartoon, so fine texture stays in the residual: the ratio is well above 1 even
    for the true kernel, but a wrong kernel leaves whole edges in it and raises it further.
    """
    k = kernel.shape[-1]
    reblurred = apply_kernels(latent[None, None], kernel[None, None])[0, 0]
    r = k // 2 + 1
    resid = (y - reblurred)[r:-r, r:-r] if min(y.shape) > 2 * r + 8 else y - reblurred
    return float(resid.std()) / max(noise, 1e-3)


def _run_candidates(
    windows: torch.Tensor, max_size: int, inits: list[float], settings: Settings,
) -> tuple[Estimates, torch.Tensor]:
    """Coarse-to-fine on every (window, start) pair as one batch, and the windows (one per candidate)."""
    n = windows.shape[0]
    windows = windows.repeat_interleave(len(inits), dim=0)
    start = initial_kernels(scale_sizes(max_size)[0], inits, windows.device).repeat(n, 1, 1)
    return coarse_to_fine(windows, max_size, start, settings), windows


def _choose(kernels: torch.Tensor) -> tuple[int, float, torch.Tensor]:
    """Index of the candidate that agrees best with the rest, its mean agreement, the NCC matrix."""
    ncc = pairwise_ncc(kernels)
    n = kernels.shape[0]
    if n == 1:
        return 0, 0.0, ncc
    mean = (ncc.sum(1) - ncc.diagonal()) / (n - 1)
    best = int(mean.argmax())
    return best, float(mean[best]), ncc


def _plan(grey: torch.Tensor, max_size: int, max_pixels: int) -> tuple[int, int, int]:
    """Kernel size that fits the photo, window side and how many windows: (size, side, count).

    A photo with room for fewer than three half-overlapping windows gets one, and two starts instead
    (:func:`estimate_in_windows`).
    """
    h, w = grey.shape
    size = max(5, min(max_size | 1, (min(h, w) // 4) | 1))
    side = int(min(MAX_WINDOW, h, w, math.isqrt(max(1, max_pixels // WINDOWS))))
    room = (h // max(1, side // 2) - 1) * (w // max(1, side // 2) - 1)
    return size, side, (WINDOWS if room >= 3 else 1)


def estimate_kernel(
    grey: torch.Tensor,
    *,
    max_size: int = 35,
    noise: float | None = None,
    max_pixels: int = 1_000_000,
    seed: int = 0,
) -> KernelEstimate:
    """Blind uniform kernel of the photo whose luminance (as encoded, sRGB, in [0, 1]) is ``grey`` (H x W).

    Never raises for odd content: tiny, flat, pure-noise or saturated photos return a delta or
    low-confidence estimate with a note. ``seed`` picks the orientation of the starting kernels (the
    estimate is deterministic for a given seed). Runs on ``grey``'s device.
    """
    grey = _prepare(grey)
    h, w = grey.shape
    if min(h, w) < MIN_SIDE:
        return _trivial(grey, False, f"photo is {w}x{h}: under {MIN_SIDE} px, too small to estimate a kernel", {})
    sigma = noise_sigma(_centre(grey, NOISE_SIDE)) if noise is None else float(noise)
    size, side, count = _plan(grey, max_size, max_pixels)
    boxes, saturated, contrast = select_windows(grey, side, count, sigma, size)
    details: dict[str, float] = {"noise": sigma, "contrast": contrast, "search": float(size)}
    if contrast < max(FLAT_CONTRAST, 2.0 * sigma):
        return _trivial(grey, True, "no edges stand out of the noise: nothing to estimate, leave it alone", details)
    crops = torch.stack([grey[y0 : y0 + bh, x0 : x0 + bw] for y0, x0, bh, bw in boxes])
    return estimate_in_windows(crops, boxes, max_size=size, noise=sigma, seed=seed, saturated=saturated,
                               details=details)


def estimate_in_windows(
    windows: torch.Tensor,
    boxes: Sequence[tuple[int, int, int, int]],
    *,
    max_size: int,
    noise: float,
    seed: int = 0,
    saturated: Sequence[float] | None = None,
    details: dict[str, float] | None = None,
) -> KernelEstimate:
    """:func:`estimate_kernel` after its choice of windows: the estimate on ``windows`` (``B x h x w`` crops of the
    luminance, taken at ``boxes``) with the noise std ``noise`` already measured.

    A second estimate of one photo in another domain (linear light) calls this on the first estimate's windows
    and kernel size (``windows`` and ``details["search"]`` of that estimate), so it decodes only those pixels
    instead of the whole photo. ``max_size`` is the kernel size searched, as given; ``saturated`` is each
    window's clipped share (measured on the crops when None).
    """
    windows = _prepare_batch(windows)
    boxes = list(boxes)
    size = max(5, int(max_size) | 1)
    # The start is a short line; ``seed`` turns it by multiples of the golden angle, so other seeds give other
    # restarts. A single window gets two starts of different orientation instead of a second window.
    angle = seed * math.pi * (3 - math.sqrt(5))
    inits = [angle] if len(boxes) >= 2 else [angle, angle + math.pi / 2]
    sat_shares = list(saturated) if saturated is not None else saturated_shares(windows)
    details = {"noise": float(noise), **(details or {})}
    (kernels, latents, raw, robust), crops = _run_candidates(windows, size, inits, SETTINGS)
    best, agreement, ncc = _choose(kernels)
    box = boxes[best // len(inits)]
    share = float(support_share(raw[best : best + 1], kernels[best : best + 1])[0])
    ratio = _reblur_ratio(crops[best], latents[best], kernels[best], noise)
    stop = stopband_ratios(crops[best], kernels[best], noise)
    kernel = _crop_to_support(kernels[best])
    mass = near_delta_mass(robust[best])
    sat = sat_shares[best // len(inits)]
    details.update(agreement=agreement, support_share=share, residual_ratio=ratio, near_delta_mass=mass,
                   saturated=sat, stopband_noise_ratio=stop[0], stopband_ratio=stop[1],
                   candidates=float(kernels.shape[0]))
    trust = confidence(agreement, share, ratio, stop)
    notes = []
    if sat > SATURATED_SHARE:
        trust *= 0.5
        notes.append(f"{sat:.0%} of the estimation window is clipped: the blur model is only approximate")
    near = mass >= NEAR_DELTA
    if near:
        notes.append(f"kernel is near-delta ({mass:.2f} of its mass in 3x3): the photo looks sharp")
        trust = min(trust, 0.25)
    elif stopband_penalty(stop) >= 6.0:
        notes.append(f"the photo holds detail this kernel would have erased (stop-band ratios {stop[0]:.0f} against "
                     f"the noise, {stop[1]:.1f} against the blur): the blur is over-estimated or the photo is sharp")
    elif trust < 0.5:
        notes.append(
            f"kernel estimates disagree (agreement {agreement:.2f}, support {share:.2f}): not trustworthy"
        )
    return KernelEstimate(kernel, float(trust), near, int(kernel.shape[-1]), box, details, tuple(notes),
                          tuple(boxes))


def _grid_boxes(h: int, w: int, grid: tuple[int, int]) -> tuple[list[tuple[int, int, int, int]], tuple[int, int]]:
    """Overlapping boxes (row-major), ``grid[0]`` along the photo's long side, ``grid[1]`` along the short."""
    along, across = grid
    rows, cols = (across, along) if w >= h else (along, across)
    bh, bw = min(h, math.ceil(1.5 * h / rows)), min(w, math.ceil(1.5 * w / cols))
    boxes = []
    for r in range(rows):
        for c in range(cols):
            y0 = 0 if rows == 1 else round(r * (h - bh) / (rows - 1))
            x0 = 0 if cols == 1 else round(c * (w - bw) / (cols - 1))
            boxes.append((y0, x0, bh, bw))
    return boxes, (rows, cols)


def estimate_kernel_grid(
    grey: torch.Tensor,
    *,
    grid: tuple[int, int] = (3, 2),
    max_size: int = 35,
    noise: float | None = None,
    seed: int = 0,
) -> KernelGrid:
    """One kernel per overlapping region of a grid (``grid[0]`` regions along the long side).

    Each region gets its best window and two starts of different orientation (one batch for the whole
    grid); a region whose starts disagree or whose kernel is near-delta while the global one is not
    falls back to the global kernel.
    """
    grey = _prepare(grey)
    h, w = grey.shape
    glob = estimate_kernel(grey, max_size=max_size, noise=noise, seed=seed)
    boxes, shape = _grid_boxes(h, w, grid)
    n = len(boxes)
    if min(h, w) < MIN_SIDE or glob.size == 1:
        kernels = glob.kernel[None].repeat(n, 1, 1)
        note = "no per-region estimate: " + (glob.notes[0] if glob.notes else "global kernel used")
        return KernelGrid(kernels, tuple(boxes), (glob.confidence,) * n, (True,) * n, 1.0, shape, glob, (note,))
    sigma = glob.details["noise"]
    inits = [seed * math.pi * (3 - math.sqrt(5)) + a for a in (0.0, math.pi / 2)]
    side = min(MAX_WINDOW, min(b[2] for b in boxes), min(b[3] for b in boxes))
    size = max(5, min(max_size | 1, (side // 3) | 1))
    windows = []
    for y0, x0, bh, bw in boxes:
        (wy, wx, _, _), = select_windows(grey[y0 : y0 + bh, x0 : x0 + bw], side, 1, sigma, size)[0]
        windows.append((y0 + wy, x0 + wx, side, side))
    crops = torch.stack([grey[y0 : y0 + side, x0 : x0 + side] for y0, x0, _, _ in windows])
    (kernels, latents, raw, robust), crops = _run_candidates(crops, size, inits, SETTINGS)
    shares = support_share(raw, kernels)
    pair = pairwise_ncc(kernels)
    own, confs = [], []
    for i in range(n):
        a, b = 2 * i, 2 * i + 1
        pick = a if shares[a] >= shares[b] else b
        ratio = _reblur_ratio(crops[pick], latents[pick], kernels[pick], sigma)
        stop = stopband_ratios(crops[pick], kernels[pick], sigma)
        conf = confidence(float(pair[a, b]), float(shares[pick]), ratio, stop)
        if near_delta_mass(robust[pick]) >= NEAR_DELTA and not glob.near_delta:
            conf = min(conf, 0.25)
        own.append(kernels[pick])
        confs.append(conf)
    own_t = torch.stack(own)
    trusted = [i for i in range(n) if confs[i] >= 0.5]
    among = trusted if len(trusted) >= 2 else list(range(n))
    sub = pairwise_ncc(own_t[among])
    m = len(among)
    agreement = float((sub.sum() - sub.diagonal().sum()) / (m * (m - 1))) if m > 1 else 1.0
    k = max(size, glob.size)
    out = []
    for i in range(n):
        kern = own_t[i] if confs[i] >= 0.5 else glob.kernel
        pad = (k - kern.shape[-1]) // 2
        out.append(F.pad(kern, (pad, pad, pad, pad)))
    fallback = tuple(c < 0.5 for c in confs)
    notes = [f"{sum(fallback)} of {n} regions unconfident: they use the global kernel"] if any(fallback) else []
    return KernelGrid(torch.stack(out), tuple(boxes), tuple(confs), fallback,
                      max(0.0, min(1.0, agreement)), shape, glob, tuple(notes))
