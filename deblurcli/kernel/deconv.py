"""Non-blind deconvolution with a hyper-Laplacian prior: the sharp photo, given the blur kernel.

The model (Krishnan & Fergus 2009, "Fast image deconvolution using hyper-Laplacian priors"): the photo ``y``
is the sharp image ``x`` convolved with the kernel ``k`` plus white noise, and natural images have sparse
gradients, ``p(grad x) ~ exp(-|grad x|^alpha)`` with ``alpha = 2/3``. The estimate minimises

    1/2 ||m * (k (x) x - y)||^2 + weight * sum |grad x|^alpha

where ``m`` is a data mask (0 on clipped highlights and outside the photo). Half-quadratic splitting adds an
auxiliary gradient field ``w`` tied to ``grad x`` by a penalty ``beta / 2 ||w - grad x||^2`` whose strength
``beta`` rises from 1 to 256 by 2 sqrt(2) per step (KERNEL_PATH.md's measured settings); each step alternates

* the w-step, a per-pixel 1-D problem ``min |w|^alpha + beta / 2 (w - v)^2`` answered by a lookup table of the
  shrinkage ``v - w(v)`` built once per ``beta`` and cached (``shrinkage_table``), and
* the x-step, a quadratic problem diagonal in the Fourier domain: one FFT solve for all colour channels.

The prior acts on a colour photo's gradients along an orthonormal luminance axis and two colour-opponent
axes (:data:`OPPONENT`), with the weight one channel had, not on R, G and B apart. The channels' noise is
independent but their edges coincide: on the luminance axis the edges stand 3x (in power) higher above the
noise than in one channel, so the same weight regularises it less, while the opponent axes hold little but
noise and stay as smooth as before. (Given the weight that makes a grey photo's prior the per-channel one,
3^(2/3) on the luminance axis, the gain vanished: it comes from regularising luminance less.) With the true
kernel (``python bench/deconv_speed.py prior --noise 0.002 0.01 0.03``, 8 photos): +4.30 -> +5.18 and
+5.59 -> +6.33 dB at 1 % noise on the two kernel families, +3.29 -> +3.88 and +3.73 -> +4.31 at 3 %,
+6.34 -> +6.67 and +7.44 -> +7.73 at 0.2 % (where one photo fell from +3.18 to +1.80 dB).

Why each of the other parts is there:

* **Boundaries**: the photo is extended into a larger, smoothly periodic canvas first (``boundary.py``) and
  the extension is *not* treated as data (mask 0): it is filled with the current estimate's re-blur at every
  step, so the solution there is free (an unknown-boundary model) and the FFT sees no seam to ring on.
* **Clipped highlights**: a saturated light is not ``k (x) x``; trusting it makes dark halos around every
  light. Pixels at or above ``SATURATION``, dilated to everything that shares a latent pixel with them, are
  masked out of the data term, and the latent image may exceed 1 there (it is clipped only at the end).
* **Masked data with FFT solves**: ``m`` breaks the Fourier diagonalisation. Replacing the unobserved values
  by the current re-blur ``k (x) x`` before each FFT solve is a majorise-minimise step for the masked problem
  (the surrogate touches the true objective at the current estimate and lies above it elsewhere), so each
  x-step still costs one FFT solve plus one re-blur instead of an inner conjugate-gradient loop.
* **Regulariser from the noise**: ``weight`` follows the noise level (``weight_for_noise``, fitted on
  measurements with the true kernel); the noise is estimated from the photo when not given.

Everything is float32 (16-bit photos keep their precision; nothing is quantised) and vectorised torch, so it
runs on any device. Big photos go through the tiled engine with :class:`Deconvolver`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deblurcli.kernel.boundary import extend_periodic, fast_fft_size
from deblurcli.kernel.differences import backward_divergence, forward_differences
from deblurcli.kernel.domain import (
    DOMAINS,
    Domain,
    from_linear,
    linear_saturation,
    to_linear,
)
from deblurcli.kernel.noise import estimate_noise
from deblurcli.kernel.spectral import divide_, real_pairs

__all__ = [
    "Deconvolver",
    "deconvolve",
    "deconvolve_grid",
    "saturation_mask",
    "shrinkage_table",
    "weight_for_noise",
]

#: Penalty schedule of the half-quadratic splitting (Krishnan & Fergus; KERNEL_PATH.md).
BETA_START, BETA_MAX, BETA_RATE = 1.0, 256.0, 2.0 * math.sqrt(2.0)
#: Observed values at or above this count as clipped (sRGB; JPEG rounding keeps clipped lights at 0.98+).
SATURATION = 0.98
#: Noise floor for the regulariser: 8-bit rounding (0.0011) and JPEG leave about this much in any photo.
MIN_NOISE = 0.002
#: Lookup table: ``TABLE_SIZE`` (odd) shrinkage values for v in [-TABLE_MAX, TABLE_MAX].
TABLE_SIZE, TABLE_MAX = 32769, 2.0
#: Rows: an orthonormal luminance axis and two colour-opponent axes, along which the gradient prior of a
#: colour photo acts (see the module docstring).
OPPONENT = torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, 0.0], [1.0, 1.0, -2.0]])
OPPONENT = OPPONENT / OPPONENT.norm(dim=1, keepdim=True)


def weight_for_noise(noise: float) -> float:
    """Prior weight for a noise standard deviation (in [0, 1] units).

    ``5e-4 (noise / 1 %) ** 1.5``: KERNEL_PATH.md's ``lambda = 2000`` at 1 % noise, and the exponent from a sweep
    of 0.5x / 1x / 2x this rule at 0.5, 1, 2 and 3 % noise with the true kernel (``bench/deconv_speed.py gain``,
    8 photos, both kernel families): 1x was best at every level, by 0.4-1.0 dB over either neighbour. The floor
    ``MIN_NOISE`` keeps a clean photo from being deconvolved with almost no prior (noise amplification).
    """
    return 5e-4 * (max(noise, MIN_NOISE) / 0.01) ** 1.5


@functools.lru_cache(maxsize=64)
def _table(alpha: float, beta: float, device: torch.device) -> torch.Tensor:
    """Cached :func:`shrinkage_table`: every solve walks the same ``beta`` schedule."""
    return shrinkage_table(alpha, beta, device)


def shrinkage_table(alpha: float, beta: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """The shrinkage ``v - w(v)`` on a uniform grid of ``TABLE_SIZE`` values of ``v`` in [-TABLE_MAX, TABLE_MAX],
    where ``w(v) = argmin_w |w|^alpha + beta / 2 (w - v)^2``.

    For ``w > 0`` the minimiser solves ``alpha w^(alpha-1) + beta (w - v) = 0``; that function is convex and
    positive at ``w = v``, so Newton's method from ``v`` descends monotonically onto the larger root, if any.
    The root is kept only where it beats ``w = 0`` (below a threshold the answer jumps to 0). float64: the table
    is small and built once per ``beta``. The grid is fine enough (1.2e-4) to be read without interpolation.
    """
    v = torch.linspace(0.0, TABLE_MAX, TABLE_SIZE // 2 + 1, dtype=torch.float64)
    w = v.clone()
    for _ in range(40):
        safe = w.clamp(min=1e-12)
        g = alpha * safe ** (alpha - 1) + beta * (safe - v)
        dg = alpha * (alpha - 1) * safe ** (alpha - 2) + beta
        w = (w - g / dg).clamp(min=0.0)
    cost_root = w**alpha + 0.5 * beta * (w - v) ** 2
    w = torch.where((w > 0) & (cost_root < 0.5 * beta * v**2), w, torch.zeros_like(w))
    half = v - w
    return torch.cat([-half.flip(0)[:-1], half]).float().to(device)  # cast on the host: MPS has no float64


def _shrink(v: torch.Tensor, table: torch.Tensor, index: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``w(v)`` by nearest lookup in ``table`` into ``out`` (``index`` is an int32 buffer like ``v``); beyond
    ``TABLE_MAX`` the last (slowly varying) shrinkage. ``index_select`` with int32 indices: advanced indexing
    with int64 ones (and the cast to them) took 3-4x as long on two cores, a fifth of the whole solve."""
    torch.mul(v, (TABLE_SIZE // 2) / TABLE_MAX, out=out).round_().add_(TABLE_SIZE // 2).clamp_(0, TABLE_SIZE - 1)
    index.copy_(out)
    torch.index_select(table, 0, index.view(-1), out=out.view(-1))
    return torch.sub(v, out, out=out)


def _otf(kernel: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """rfft2 of ``kernel`` placed on a ``height x width`` canvas with its centre at pixel (0, 0)."""
    k = kernel.shape[-1]
    r = k // 2
    canvas = torch.zeros(height, width, dtype=kernel.dtype, device=kernel.device)
    canvas[:k, :k] = kernel
    return torch.fft.rfft2(canvas.roll(shifts=(-r, -r), dims=(0, 1)))


def saturation_mask(image: torch.Tensor, kernel: torch.Tensor | None = None, threshold: float = SATURATION) -> torch.Tensor:
    """Data-term weights ``C x H x W``: 0 where a channel is clipped (>= ``threshold``), 1 elsewhere.

    With ``kernel``, the zeros are dilated to every pixel that shares a latent pixel with a clipped one (the
    support of the kernel's autocorrelation). Those pixels are not clipped but they are explained by a light
    far brighter than white that the mask leaves unconstrained; trusting them while the light itself is free
    makes the solver ring around every lamp (measured: bench/deconv_speed.py saturation).
    """
    clipped = (image >= threshold).to(image.dtype)
    if kernel is None or not bool(clipped.any()):
        return 1.0 - clipped
    h, w = image.shape[-2:]
    k = kernel.shape[-1]
    footprint = (kernel > 0.02 * kernel.max()).to(image.dtype)
    hp, wp = fast_fft_size(h + k), fast_fft_size(w + k)  # zero-padded: lags of +-(k-1) must not wrap into the photo
    shared = torch.fft.rfft2(footprint, s=(hp, wp)).abs().square()
    spread = torch.fft.irfft2(torch.fft.rfft2(clipped, s=(hp, wp)) * shared, s=(hp, wp))
    return (spread[..., :h, :w] < 0.5).to(image.dtype)


def _rotate(image: torch.Tensor, axes: torch.Tensor) -> torch.Tensor:
    """``axes @ pixel`` for every pixel of a ``C x H x W`` image (``axes``: ``C x C``)."""
    return torch.mm(axes, image.reshape(image.shape[0], -1)).view_as(image)


def _solve(
    y: torch.Tensor, mask: torch.Tensor, otf: torch.Tensor, weight: float, alpha: float, axes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Half-quadratic splitting on the periodic canvas ``y`` (``C x H x W``) with data mask ``mask``.

    With ``axes`` (``C x C``, orthonormal rows) the gradients are shrunk along those axes of the colour space.
    The solve then runs on the rotated image: differences, the Fourier x-step (one denominator for every
    channel) and the norm of the splitting penalty all commute with an orthonormal rotation; only the data
    fill of masked pixels does not, where a pixel is masked in some channels and not others, and only that
    part is rotated back and forth (on most photos nowhere: the unknown border is masked in every channel).
    """
    h, w = y.shape[-2:]
    fy = torch.fft.fftfreq(h, device=y.device)[:, None]
    fx = torch.fft.rfftfreq(w, device=y.device)[None, :]
    laplacian = (4 - 2 * torch.cos(2 * math.pi * fy) - 2 * torch.cos(2 * math.pi * fx)).to(y.dtype)
    power = otf.abs().square()
    otf_conj = otf.conj().resolve_conj()
    masked = bool((mask < 1).any())
    observed, unobserved = mask * y, 1 - mask
    partial = None  # the unobserved values of pixels masked in some channels only
    if axes is not None:
        y, observed = _rotate(y, axes), _rotate(observed, axes)
        common = unobserved.amin(0, keepdim=True)
        if bool((unobserved > common).any()):
            partial = unobserved - common
        unobserved = common
    laplacian, power = real_pairs(laplacian), real_pairs(power)
    den = torch.empty_like(power)
    gx, gy, wx, wy, scratch = (torch.empty_like(y) for _ in range(5))
    index = torch.empty_like(y, dtype=torch.int32)
    x = y.clone()
    spectrum_x = torch.fft.rfft2(x)
    beta = BETA_START
    while beta < BETA_MAX:
        table = _table(float(alpha), beta, y.device)
        c = beta * weight  # beta / lambda in Krishnan & Fergus' notation (lambda = 1 / weight)
        forward_differences(x, gx, gy)
        data = y
        if masked:  # majorise-minimise: unobserved values are what the current estimate predicts
            reblurred = torch.fft.irfft2(spectrum_x.mul_(otf), s=(h, w))
            data = torch.addcmul(observed, unobserved, reblurred)
            if partial is not None and axes is not None:
                data.add_(_rotate(partial * _rotate(reblurred, axes.t()), axes))
        divergence = backward_divergence(_shrink(gx, table, index, wx), _shrink(gy, table, index, wy), gx, scratch)
        spectrum_x = torch.fft.rfft2(data).mul_(otf_conj).add_(torch.fft.rfft2(divergence), alpha=c)
        torch.add(power, laplacian, alpha=c, out=den)
        x = torch.fft.irfft2(divide_(spectrum_x, den), s=(h, w))
        beta *= BETA_RATE
    return x if axes is None else _rotate(x, axes.t())


def _check_kernel(kernel: torch.Tensor) -> None:
    """Programming errors, not user errors: user kernels are validated by ``psf.read_kernel``."""
    if kernel.dim() != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 != 1:
        raise ValueError(f"kernel must be a k x k tensor with odd k, got shape {tuple(kernel.shape)}")
    if not bool(torch.isfinite(kernel).all()) or bool((kernel < 0).any()) or float(kernel.sum()) <= 0:
        raise ValueError("kernel must be finite and non-negative with a positive sum")


def deconvolve(
    image: torch.Tensor,
    kernel: torch.Tensor,
    *,
    noise: float | None = None,
    alpha: float = 2 / 3,
    weight: float | None = None,
    mask_saturated: bool = True,
    saturation: float = SATURATION,
    pad: int | None = None,
    clip: bool = True,
    opponent: bool = True,
) -> torch.Tensor:
    """Sharp ``C x H x W`` image in [0, 1] from a blurry one, given its blur ``kernel`` (``k x k``, odd k).

    ``noise``: the noise standard deviation (estimated from ``image`` when None); it sets the prior ``weight``
    (:func:`weight_for_noise`) unless ``weight`` is given (larger = smoother; Krishnan & Fergus' ``lambda`` is
    ``1 / weight``). ``mask_saturated`` drops values at or above ``saturation`` (clipped highlights) from the
    data term. ``pad``: width of the smooth boundary band (default twice the kernel size); the canvas is
    rounded up to a fast FFT size. ``clip=False`` returns the solution before it is clipped to [0, 1] (how far
    it strays outside is what ``domain.choose_domain`` compares). ``opponent``: the gradient prior of a
    3-channel image acts on its :data:`OPPONENT` axes instead of R, G and B (the data term, and the clipped
    highlights masked out of it, stay per channel).
    """
    if image.dim() != 3:
        raise ValueError(f"image must be C x H x W, got shape {tuple(image.shape)}")
    _check_kernel(kernel)
    y = image.float()
    k = kernel.to(device=y.device, dtype=torch.float32)
    k = k / k.sum()
    if weight is None:
        weight = weight_for_noise(estimate_noise(y) if noise is None else noise)
    _, h, w = y.shape
    band = 2 * k.shape[-1] if pad is None else pad
    hp, wp = fast_fft_size(h + band), fast_fft_size(w + band)
    canvas = extend_periodic(y, hp, wp)
    otf = _otf(k, hp, wp)
    mask = torch.zeros_like(canvas)
    mask[:, :h, :w] = 1.0
    if mask_saturated:
        mask[:, :h, :w] = saturation_mask(y, k, saturation)
    axes = OPPONENT.to(y.device) if opponent and y.shape[0] == 3 else None
    x = _solve(canvas, mask, otf, weight, alpha, axes)[:, :h, :w]
    return x.clamp(0.0, 1.0) if clip else x


class Deconvolver(nn.Module):
    """:func:`deconvolve` with a fixed kernel as a model for the tiled engine (``deblurcli.engine``).

    Deconvolution is not local, but the influence of a pixel on the solution fades within a few kernel sizes,
    so each tile is deconvolved with ``tile_margin`` pixels of context on every side (default ``MARGIN_KERNELS``
    kernel sizes; the engine discards them and cross-fades the rest). Pass the whole photo's ``noise``
    (``estimate_noise``): left None, every tile estimates its own, and tiles may then disagree slightly.
    At the photo's borders the engine's mirrored margin is recognised and dropped (:meth:`_mirrored`), so a
    border tile is solved like :func:`deconvolve` solves the photo's edge: as an unknown boundary.
    ``domain="linear"`` deconvolves each tile in linear light and encodes it back (``domain.py``); ``noise`` is
    then the noise std of the linear values (``domain.linear_noise`` of the whole photo).
    """

    #: Default tile margin in kernel sizes (see bench/deconv_speed.py for tiled vs whole agreement).
    MARGIN_KERNELS = 3

    def __init__(
        self,
        kernel: torch.Tensor,
        *,
        noise: float | None = None,
        alpha: float = 2 / 3,
        weight: float | None = None,
        mask_saturated: bool = True,
        tile_margin: int | None = None,
        domain: Domain = "srgb",
    ) -> None:
        super().__init__()
        _check_kernel(kernel)
        self.register_buffer("kernel", kernel.detach().float().clone(), persistent=False)
        if domain not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
        self.noise, self.alpha, self.weight, self.mask_saturated = noise, alpha, weight, mask_saturated
        self.domain = domain
        size = kernel.shape[-1]
        self.size_multiple = 1
        self.tile_margin = self.MARGIN_KERNELS * size if tile_margin is None else max(size, int(tile_margin))
        self.config = {
            "kind": "deconvolution",
            "kernel_size": size,
            "noise": noise,
            "alpha": alpha,
            "weight": weight,
            "mask_saturated": mask_saturated,
            "tile_margin": self.tile_margin,
            "domain": domain,
        }

    def _mirrored(self, x: torch.Tensor) -> tuple[int, int, int, int]:
        """Widths (top, bottom, left, right) of the bands that are an exact mirror image of the pixels next to
        them: the engine reflects the photo by ``tile_margin`` at its borders, and reflected pixels are not
        data (a motion blur is not symmetric), so they are cut off and left to the unknown-boundary model.
        Real pixels never mirror their neighbours exactly (noise), so interior tile edges keep their context."""
        m = self.tile_margin
        h, w = x.shape[-2:]
        if m == 0:
            return 0, 0, 0, 0
        top = h > 2 * m and torch.equal(x[:, :m], x[:, m + 1 : 2 * m + 1].flip(-2))
        bottom = h > 2 * m and torch.equal(x[:, h - m :], x[:, h - 2 * m - 1 : h - m - 1].flip(-2))
        left = w > 2 * m and torch.equal(x[..., :m], x[..., m + 1 : 2 * m + 1].flip(-1))
        right = w > 2 * m and torch.equal(x[..., w - m :], x[..., w - 2 * m - 1 : w - m - 1].flip(-1))
        return m * top, m * bottom, m * left, m * right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``N x C x H x W`` -> same, float32; images one at a time (device memory stays one tile's worth)."""
        out = []
        linear = self.domain == "linear"
        saturation = linear_saturation(SATURATION) if linear else SATURATION
        for img in x.float():
            top, bottom, left, right = self._mirrored(img)
            h, w = img.shape[-2:]
            part = img[:, top : h - bottom, left : w - right]
            sharp = deconvolve(
                to_linear(part) if linear else part,
                self.kernel,
                noise=self.noise,
                alpha=self.alpha,
                weight=self.weight,
                mask_saturated=self.mask_saturated,
                saturation=saturation,
            )
            if linear:
                sharp = from_linear(sharp)
            # The engine discards the cut bands; fill them (edge values) only to keep the shape.
            out.append(F.pad(sharp[None], (left, right, top, bottom), mode="replicate")[0])
        return torch.stack(out)


def _window(start: int, length: int, total: int, device: torch.device) -> torch.Tensor:
    """1-D blending weight of one region: a Hann window over the region (positive everywhere inside it),
    flat towards a photo edge the region touches, zero outside."""
    t = torch.arange(total, device=device, dtype=torch.float32)
    inside = (t >= start) & (t < start + length)
    hann = torch.sin(math.pi * (t - start + 0.5) / length).square()
    centre = start + length / 2
    hann = torch.where((t < centre) & (start == 0), torch.ones_like(hann), hann)
    hann = torch.where((t >= centre) & (start + length >= total), torch.ones_like(hann), hann)
    return torch.where(inside, hann, torch.zeros_like(hann))


def deconvolve_grid(
    image: torch.Tensor,
    kernels: Sequence[torch.Tensor] | torch.Tensor,
    boxes: Sequence[tuple[int, int, int, int]],
    *,
    noise: float | None = None,
    alpha: float = 2 / 3,
    weight: float | None = None,
    margin: int | None = None,
    mask_saturated: bool = True,
) -> torch.Tensor:
    """Spatially varying deconvolution: region ``i`` (box ``(y0, x0, h, w)``) is deconvolved with ``kernels[i]``
    and the results are blended with smooth (Hann) weights where regions overlap.

    Each region is deconvolved only on its box plus ``margin`` pixels of context (default
    ``Deconvolver.MARGIN_KERNELS`` times its kernel size), not the whole photo once per kernel. The boxes must
    cover the photo. ``noise`` is estimated once on the whole photo when None, so every region uses the same
    prior strength.
    """
    if len(kernels) != len(boxes) or len(boxes) == 0:
        raise ValueError(f"need one kernel per box, got {len(kernels)} kernels and {len(boxes)} boxes")
    y = image.float()
    _, h, w = y.shape
    if weight is None and noise is None:
        noise = estimate_noise(y)
    acc = torch.zeros_like(y)
    total = torch.zeros(h, w, device=y.device)
    for kernel, (y0, x0, bh, bw) in zip(kernels, boxes):  # a handful of regions, each one batched solve
        m = Deconvolver.MARGIN_KERNELS * kernel.shape[-1] if margin is None else margin
        top, left = max(0, y0 - m), max(0, x0 - m)
        bottom, right = min(h, y0 + bh + m), min(w, x0 + bw + m)
        part = deconvolve(
            y[:, top:bottom, left:right], kernel, noise=noise, alpha=alpha, weight=weight, mask_saturated=mask_saturated
        )
        wts = _window(y0, bh, h, y.device)[top:bottom, None] * _window(x0, bw, w, y.device)[None, left:right]
        acc[:, top:bottom, left:right] += part * wts
        total[top:bottom, left:right] += wts
    if bool((total <= 0).any()):
        raise ValueError("the boxes do not cover the whole image")
    return acc / total
