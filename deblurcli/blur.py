"""Motion-blur synthesis on the device, vectorised over the batch: blurry/sharp pairs from sharp photos.

How a sample is made (``synthesize``), in the order a camera makes it:

1. the sharp sRGB crop is taken to linear light (inverse sRGB) for most samples, because light, not
   gamma-encoded values, is what a sensor integrates while the camera moves;
2. highlights that were already clipped in the sharp photo are pushed above 1 (RSBlur: add ``alpha * mask``,
   ``alpha ~ U(0.25, 1.75)``), so that a blurred light source stays a bright saturated streak instead of a
   dim grey smear - the look of real night shots that plain synthetic data never shows the model;
3. a fraction of samples gets spatially varying blur: the average of copies of the image warped along a
   short random camera rotation/zoom/tilt path (``F.grid_sample``), as a rotating camera blurs corners more
   than the centre;
4. every blurred sample is convolved with its own random camera-shake kernel (Boracchi-Foi-style
   trajectory, normalised to sum 1 and centred on its centroid so the pair stays aligned);
5. clip at the sensor's white point, add Poisson-Gaussian noise in linear light, go back to sRGB, add a
   little sRGB Gaussian noise (the blind-deblurring protocol's noise model) and, for some samples, JPEG;
6. a small fraction is left exactly sharp so the model learns to leave sharp photos alone.

``synthesize_pair`` can also composite a moving object (``dynamic_prob``): a smooth random blob textured
with another crop is pasted into the sharp target, and in the blurry input it is blurred by its own kernel
as a layer over the differently blurred (or still) background, ``K_o * (a F) + (1 - K_o * a) (K_b * B)``,
which is how a moving foreground both smears and uncovers the background behind it.

Every random number comes from the caller's ``torch.Generator`` in a fixed order and a fixed amount that
does not depend on the pixels, so a seed reproduces the same pairs on the same device. Kernels are splatted
with a batched matrix product instead of ``scatter_add`` because float atomics on CUDA sum in a varying
order, which would break that reproducibility.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "BlurConfig",
    "apply_kernels",
    "linear_to_srgb",
    "random_homography_paths",
    "random_kernels",
    "random_trajectories",
    "random_object_masks",
    "srgb_to_linear",
    "synthesize",
    "synthesize_pair",
    "trajectories_to_kernels",
    "warp_average",
]


@dataclass(frozen=True)
class BlurConfig:
    """Every knob of the synthesis, with the range it is meant for.

    Probabilities are per sample and in ``[0, 1]``. Pairs ``(lo, hi)`` are sampling ranges with
    ``lo <= hi``. Defaults target training crops of 128-256 px: blur paths of 5-41 px keep a 128² crop
    learnable (the whole streak fits in the receptive field with context on both sides).
    """

    # --- camera-shake kernel (uniform blur) -------------------------------------------------------
    #: Kernel canvas side in px, odd, 15-65. Must exceed ``max_extent`` by at least 4 px so that
    #: trajectories centred on their centroid fit; rarer lopsided paths are shrunk to fit.
    kernel_size: int = 49
    #: Side of the blur path's bounding box in px, drawn uniformly in [min_extent, max_extent]; 1-60.
    #: ``max_extent`` is the "max length" knob: raise it for larger crops, lower it for 64-128² crops.
    min_extent: float = 5.0
    max_extent: float = 41.0
    #: Simulation steps of the trajectory, 64-4096 (Boracchi-Foi use 2000; the per-step statistics are
    #: rescaled so the path's character does not depend on this).
    trajectory_steps: int = 512
    #: Points splatted per kernel, 128-2048: enough for < 0.5 px spacing along long wiggly paths.
    splat_samples: int = 512
    #: Boracchi-Foi "anxiety" range (drawn uniformly), 0.0005-0.02; scales shake and big-shake rate.
    anxiety: tuple[float, float] = (0.001, 0.01)
    #: Maximum centripetal pull (drawn as ``centripetal * U``), 0-1; 0 lets the path wander away.
    centripetal: float = 0.7
    #: Maximum Gaussian shake (drawn as ``gaussian_shake * U``), 0-20; the heading's random walk.
    gaussian_shake: float = 10.0
    #: Maximum big-shake (impulsive reversal) probability factor (drawn as ``big_shake_prob * U``), 0-1.
    big_shake_prob: float = 0.2
    #: Exposure fractions: the blur uses the first fraction of the trajectory (drawn uniformly from the
    #: tuple). Short fractions give near-straight streaks, 1 the full tortuous path; each is then scaled to
    #: the drawn extent, so the fraction picks the shape, not the size. Values in (0, 1].
    exposure_fractions: tuple[float, ...] = (1 / 1000, 1 / 10, 1 / 2, 1.0)

    # --- non-uniform blur (camera rotation / zoom / tilt path) -------------------------------------
    #: Probability of adding spatially varying blur, 0-1.
    nonuniform_prob: float = 0.3
    #: Warped copies averaged, 4-32. More copies cost time; fewer show ghosting for long paths.
    nonuniform_copies: int = 12
    #: Largest displacement of any image corner over the path, px, drawn in [min, max]; 0-2x copies.
    nonuniform_px: tuple[float, float] = (2.0, 12.0)

    # --- moving objects (dynamic scenes) ------------------------------------------------------------
    #: Probability of compositing a moving object over the sample, 0-1. The object (a random smooth blob
    #: textured with another crop of the batch) gets its own shake kernel and is blurred as a layer over the
    #: background (occlusion included), as in GoPro-style scenes, so a single kernel cannot explain the
    #: photo; the sharp target changes too, hence ``synthesize_pair``. 0 by default so ``synthesize`` and
    #: the fixed validation sets keep their meaning; ``deblur train --dynamic-prob`` sets it.
    dynamic_prob: float = 0.0
    #: Object radius as a fraction of the crop's shorter side, drawn uniformly.
    object_radius: tuple[float, float] = (0.12, 0.35)
    #: Probability that the camera was still while the object moved (background left sharp), 0-1.
    static_background_prob: float = 0.4

    # --- photometric -------------------------------------------------------------------------------
    #: Probability of blurring in linear light (the rest blur in sRGB, covering unknown camera curves).
    linear_prob: float = 0.9
    #: Probability of boosting clipped highlights before the blur, 0-1. 0.3, not 0.5: the first shipped
    #: model (0.5, whole-pixel boost) painted colour into a bright sky on a sharp photo (do-no-harm).
    saturation_prob: float = 0.3
    #: sRGB value at or above which a value counts as clipped, 0.9-1.
    saturation_threshold: float = 0.97
    #: Boost each clipped channel on its own (a sensor clips per channel: a saturated orange has a clipped
    #: red, not a clipped blue) rather than all three channels of any pixel whose brightest channel clips,
    #: which turned saturated colours into white glows that the model learned to "repair" on sharp photos.
    saturation_per_channel: bool = True
    #: RSBlur's boost ``alpha ~ U(lo, hi)`` added (in linear light) to clipped pixels.
    saturation_alpha: tuple[float, float] = (0.25, 1.75)

    # --- noise -------------------------------------------------------------------------------------
    #: Probability of adding noise to a blurred sample, 0-1.
    noise_prob: float = 0.9
    #: Poisson (shot) term: variance ``beta1 * x`` in linear light, log-uniform; RSBlur's camera 8.9e-5.
    shot_noise: tuple[float, float] = (1e-5, 4e-4)
    #: Gaussian (read) term: variance ``beta2`` in linear light, log-uniform; RSBlur's camera 2.9e-5.
    read_noise: tuple[float, float] = (1e-6, 1e-4)
    #: Std of Gaussian noise added in sRGB after the tone curve, uniform; 0.01 is the blind-deblurring
    #: protocol's 1% noise.
    srgb_noise: tuple[float, float] = (0.0, 0.015)

    # --- compression -------------------------------------------------------------------------------
    #: Probability of JPEG-compressing a blurred sample, 0-1. JPEG runs through Pillow on the CPU (no
    #: device codec in torch), one image at a time, so keep this modest on a GPU (0.1-0.3).
    jpeg_prob: float = 0.2
    #: JPEG quality range (integers, uniform), 30-100.
    jpeg_quality: tuple[int, int] = (60, 95)

    # --- do no harm --------------------------------------------------------------------------------
    #: Probability of returning the sample unchanged (sharp target = input), 0-0.2. 0.1 rather than 0.05:
    #: at 0.05 the first shipped model failed do-no-harm on a sharp photo with clipped sky (38 dB floor).
    sharp_prob: float = 0.1

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_prob") and not 0.0 <= value <= 1.0:
                raise ValueError(f"BlurConfig.{f.name} must be in [0, 1], got {value}")
            if isinstance(value, tuple) and len(value) == 2 and f.name != "exposure_fractions":
                if not value[0] <= value[1]:
                    raise ValueError(f"BlurConfig.{f.name} must be (lo, hi) with lo <= hi, got {value}")
        if self.kernel_size % 2 != 1 or self.kernel_size < 3:
            raise ValueError(f"BlurConfig.kernel_size must be odd and >= 3, got {self.kernel_size}")
        if not 1.0 <= self.min_extent <= self.max_extent <= self.kernel_size - 4:
            raise ValueError(
                "BlurConfig needs 1 <= min_extent <= max_extent <= kernel_size - 4, got "
                f"{self.min_extent}, {self.max_extent}, {self.kernel_size}"
            )
        if not self.exposure_fractions or not all(0 < e <= 1 for e in self.exposure_fractions):
            raise ValueError("BlurConfig.exposure_fractions must be non-empty values in (0, 1]")
        if self.trajectory_steps < 8 or self.splat_samples < 8 or self.nonuniform_copies < 2:
            raise ValueError("BlurConfig: trajectory_steps, splat_samples >= 8 and nonuniform_copies >= 2")
        if self.shot_noise[0] <= 0 or self.read_noise[0] <= 0:
            raise ValueError("BlurConfig: shot_noise and read_noise ranges must be positive (log-uniform)")


# ------------------------------------------------------------------------------------------------
# random numbers: always drawn on the generator's device, so any generator works with any data device,
# and the stream (hence the result) depends only on the seed and the generator's device.


def _rand(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=generator.device)


def _randn(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=generator.device)


def _uniform(u: torch.Tensor, lo_hi: tuple[float, float]) -> torch.Tensor:
    return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * u


def _log_uniform(u: torch.Tensor, lo_hi: tuple[float, float]) -> torch.Tensor:
    lo, hi = math.log(lo_hi[0]), math.log(lo_hi[1])
    return torch.exp(lo + (hi - lo) * u)


# ------------------------------------------------------------------------------------------------
# tone curve


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """Inverse sRGB transfer function (IEC 61966-2-1), for values in [0, 1]."""
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """sRGB transfer function, for linear values in [0, 1]."""
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


# ------------------------------------------------------------------------------------------------
# camera-shake kernels


def random_trajectories(
    n: int, cfg: BlurConfig, generator: torch.Generator, device: torch.device | str
) -> torch.Tensor:
    """``n`` random camera-shake paths as complex points ``(n, splat_samples)``, centred on their mean.

    Boracchi & Foi (2012) move a point at constant speed whose heading takes Gaussian kicks ("shake"),
    occasional near-reversals ("big shakes") and a pull back toward the start ("centripetal"), all scaled
    by an "anxiety". Run literally that is a 2000-step Python loop per kernel. Here every term becomes a
    whole-array operation over ``(n, steps)``:

    - the heading is a cumulative sum of Gaussian kicks (std ``anxiety * shake``, rescaled from 2000 to
      ``trajectory_steps`` steps so the random walk's spread is the same) plus reversals ``pi + U(-0.5,
      0.5)`` at Bernoulli times (rate ``big_shake * anxiety`` per Boracchi-Foi step);
    - position integrates the unit-speed velocity with a leak toward the origin, ``x[t+1] = (1 - k) x[t]
      + v[t]``, computed as one FFT convolution with the per-kernel response ``(1 - k)^t``. This replaces
      the original velocity feedback (which needs the loop) with a first-order pull of the same role: it
      bounds the path and folds it back, more strongly for larger ``centripetal``;
    - the first ``exposure_fraction`` of the path is kept, resampled to ``splat_samples`` points (linear
      interpolation, so sub-step fractions give straight streaks), scaled to a bounding box of the drawn
      extent, centred on its centroid and shrunk if a lopsided path would leave the canvas.
    """
    steps, samples = cfg.trajectory_steps, cfg.splat_samples
    g = generator
    # Fixed order and amount of draws: the stream never depends on data or on earlier outcomes.
    u_anx, u_cent, u_shake, u_big, u_exp, u_ext, u_angle = _rand(g, 7, n).unbind(0)
    kicks = _randn(g, n, steps)
    jump_u = _rand(g, n, steps)
    jump_angle = _rand(g, n, steps)

    dev = torch.device(device)
    kicks, jump_u, jump_angle = kicks.to(dev), jump_u.to(dev), jump_angle.to(dev)
    u_anx, u_cent, u_shake, u_big, u_exp, u_ext, u_angle = (
        t.to(dev) for t in (u_anx, u_cent, u_shake, u_big, u_exp, u_ext, u_angle)
    )

    per_bf_step = 2000.0 / steps  # Boracchi-Foi steps represented by one of ours
    anxiety = _uniform(u_anx, cfg.anxiety)[:, None]
    shake = (cfg.gaussian_shake * u_shake)[:, None] * anxiety * math.sqrt(per_bf_step)
    p_big = ((cfg.big_shake_prob * u_big)[:, None] * anxiety * per_bf_step).clamp(max=1.0)
    reversal = (jump_u < p_big) * (math.pi + (jump_angle - 0.5))
    heading = 2 * math.pi * u_angle[:, None] + torch.cumsum(shake * kicks + reversal, dim=1)
    velocity = torch.polar(torch.ones_like(heading), heading)

    leak = (cfg.centripetal * u_cent * 4.0 / steps)[:, None]  # k * steps <= 2.8: bounded, folds back
    t = torch.arange(steps, device=dev, dtype=torch.float32)
    response = torch.exp(t[None, :] * torch.log1p(-leak.clamp(max=0.5)))  # (1 - k)^t
    size = 2 * steps  # zero-padded so the circular FFT convolution is a linear (causal) one
    spectrum = torch.fft.fft(velocity, n=size) * torch.fft.fft(response.to(velocity.dtype), n=size)
    path = torch.fft.ifft(spectrum)
    path = torch.cat([torch.zeros_like(path[:, :1]), path[:, : steps - 1]], dim=1)  # starts at 0

    fractions = torch.tensor(cfg.exposure_fractions, device=dev, dtype=torch.float32)
    frac = fractions[(u_exp * len(cfg.exposure_fractions)).long().clamp(max=len(cfg.exposure_fractions) - 1)]
    # Resample the kept prefix (at least one step long, so it always has a direction) to `samples` points.
    pos = torch.linspace(0, 1, samples, device=dev)[None, :] * (frac[:, None] * (steps - 1)).clamp(min=1.0)
    lo = pos.floor().long().clamp(max=steps - 2)
    w = (pos - lo).to(path.real.dtype)
    pts = path.gather(1, lo) * (1 - w) + path.gather(1, lo + 1) * w

    pts = pts - pts.mean(dim=1, keepdim=True)  # the centroid of a splatted kernel is the mean of its points
    box = torch.maximum(
        pts.real.amax(1) - pts.real.amin(1), pts.imag.amax(1) - pts.imag.amin(1)
    ).clamp(min=1e-6)
    extent = _uniform(u_ext, (cfg.min_extent, cfg.max_extent))
    pts = pts * (extent / box)[:, None]
    reach = torch.maximum(pts.real.abs(), pts.imag.abs()).amax(1)
    room = (cfg.kernel_size - 3) / 2  # bilinear splat touches the next pixel: keep one px of margin
    return pts * (room / reach.clamp(min=room))[:, None]


def trajectories_to_kernels(points: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Bilinear splat of complex points ``(n, S)`` (centred at 0) into ``(n, 1, K, K)`` kernels summing to 1.

    The bilinear weight of a point at ``(x, y)`` on pixel ``(i, j)`` is ``tent(x - j) * tent(y - i)``,
    which is separable, so the whole splat is ``Wy^T @ Wx`` with ``W`` of shape ``(n, S, K)``: one batched
    matmul, deterministic on every device (unlike ``scatter_add`` with float atomics on CUDA).
    """
    c = (kernel_size - 1) / 2
    grid = torch.arange(kernel_size, device=points.device, dtype=torch.float32)
    wx = (1 - (points.real[..., None] + c - grid).abs()).clamp(min=0)
    wy = (1 - (points.imag[..., None] + c - grid).abs()).clamp(min=0)
    k = torch.bmm(wy.transpose(1, 2), wx)
    k = k / k.sum(dim=(1, 2), keepdim=True)
    return k[:, None]


def random_kernels(
    n: int, cfg: BlurConfig, generator: torch.Generator, device: torch.device | str | None = None
) -> torch.Tensor:
    """``n`` random camera-shake kernels ``(n, 1, K, K)``, each summing to 1, centroid at the centre.

    Reproducible: the same generator state gives the same kernels on the same device.
    """
    device = generator.device if device is None else device
    return trajectories_to_kernels(random_trajectories(n, cfg, generator, device), cfg.kernel_size)


# ------------------------------------------------------------------------------------------------
# applying kernels


def _crop_support(kernels: torch.Tensor) -> torch.Tensor:
    """Crop a kernel batch symmetrically to the smallest centred square holding every non-zero tap."""
    k = kernels.shape[-1]
    c = k // 2
    nz = (kernels.abs().sum(dim=(0, 1)) > 0).nonzero()
    if nz.numel() == 0:
        return kernels
    r = int((nz - c).abs().max())
    return kernels[..., c - r : c + r + 1, c - r : c + r + 1]


def apply_kernels(
    img: torch.Tensor,
    kernels: torch.Tensor,
    *,
    padding: Literal["reflect", "replicate"] = "reflect",
    method: Literal["auto", "fft", "conv"] = "auto",
) -> torch.Tensor:
    """Convolve each image of ``img (n, C, H, W)`` with its own kernel ``(n, 1, K, K)`` (K odd).

    True convolution (the kernel is not cross-correlated), centred, borders extended by ``padding`` so the
    output keeps the input's size. ``conv`` is a grouped ``conv2d`` (one group per image channel); ``fft``
    multiplies spectra of the padded image, which gives the same numbers (tested) at a cost that does
    not grow with K - a 41 px kernel costs 1681 MACs per pixel directly. ``auto`` picks conv for K <= 9.
    Reflect padding falls back to replicate when the image is smaller than the kernel radius.
    """
    if kernels.dim() == 3:
        kernels = kernels[:, None]
    n, ch, h, w = img.shape
    if kernels.shape[0] != n or kernels.shape[-1] != kernels.shape[-2] or kernels.shape[-1] % 2 != 1:
        raise ValueError(f"kernels must be (n, 1, K, K) with odd K for n={n}, got {tuple(kernels.shape)}")
    kernels = _crop_support(kernels.to(img.dtype))
    k = kernels.shape[-1]
    r = k // 2
    if r == 0:
        return img * kernels.reshape(n, 1, 1, 1)
    if padding == "reflect" and r >= min(h, w):
        padding = "replicate"
    padded = F.pad(img, (r, r, r, r), mode=padding)
    if method == "conv" or (method == "auto" and k <= 9):
        weight = kernels.flip(-1, -2).repeat_interleave(ch, dim=0)  # (n*C, 1, K, K)
        out = F.conv2d(padded.reshape(1, n * ch, h + 2 * r, w + 2 * r), weight, groups=n * ch)
        return out.reshape(n, ch, h, w)
    ph, pw = h + 2 * r, w + 2 * r
    # Put the kernel's centre at index 0 so the circular convolution lines up; for the H x W outputs
    # we keep, no term wraps around (each needs only pixels within r of it, all inside the padding).
    kpad = F.pad(kernels[:, 0], (0, pw - k, 0, ph - k)).roll(shifts=(-r, -r), dims=(-2, -1))
    spec = torch.fft.rfft2(padded.float()) * torch.fft.rfft2(kpad.float())[:, None]
    out = torch.fft.irfft2(spec, s=(ph, pw))
    return out[..., r : r + h, r : r + w].to(img.dtype)


# ------------------------------------------------------------------------------------------------
# non-uniform blur


def random_homography_paths(
    n: int, cfg: BlurConfig, generator: torch.Generator, height: int, width: int
) -> torch.Tensor:
    """``n`` smooth camera paths of ``nonuniform_copies`` homographies each: ``(n, M, 3, 3)``.

    Homographies act on pixel coordinates centred on the image and divided by the half-diagonal, so a
    parameter means the same motion at any size. Each path is a random linear-plus-quadratic curve (a
    camera moving and changing direction once during the exposure) in roll, zoom, tilt (perspective) and
    a little translation, centred so the mean pose is the identity (no net shift between the pair), then
    scaled so the farthest corner moves by the drawn ``nonuniform_px``. Rotation, zoom and tilt blur the
    corners more than the centre, which a single kernel cannot.
    """
    m = cfg.nonuniform_copies
    g = generator
    coef = _randn(g, n, 2, 6)  # linear and quadratic coefficient per parameter
    u_px = _rand(g, n)
    dev = coef.device
    weights = torch.tensor([1.0, 0.15, 0.15, 1.0, 0.5, 0.5], device=dev)  # roll, tx, ty, zoom, px, py
    tau = torch.linspace(-0.5, 0.5, m, device=dev)
    basis = torch.stack([tau, tau**2 - (tau**2).mean()], dim=0)  # (2, M), each zero-mean over the path
    params = torch.einsum("nbp,bm->nmp", coef * weights, basis)  # (n, M, 6)

    def homography(p: torch.Tensor) -> torch.Tensor:
        roll, tx, ty, zoom, px, py = p.unbind(-1)
        s = torch.exp(zoom)
        cos, sin = s * torch.cos(roll), s * torch.sin(roll)
        row0 = torch.stack([cos, -sin, tx], -1)
        row1 = torch.stack([sin, cos, ty], -1)
        row2 = torch.stack([px, py, torch.ones_like(px)], -1)
        return torch.stack([row0, row1, row2], -2)

    half_diag = math.hypot(height, width) / 2
    corners = torch.tensor(
        [[-width / 2, -height / 2, 1.0], [width / 2, -height / 2, 1.0], [-width / 2, height / 2, 1.0],
         [width / 2, height / 2, 1.0]], device=dev,
    )
    corners[:, :2] /= half_diag

    def max_corner_shift(hm: torch.Tensor) -> torch.Tensor:
        moved = torch.einsum("nmij,cj->nmci", hm, corners)
        moved = moved[..., :2] / moved[..., 2:]
        return ((moved - corners[:, :2]).norm(dim=-1) * half_diag).flatten(1).amax(1)

    # The parameters are small, so corner motion is nearly linear in them: scale, then re-measure and
    # correct twice more for the perspective terms' mild non-linearity (error < 1% after three rounds).
    target = _uniform(u_px, cfg.nonuniform_px).to(dev)
    for _ in range(3):
        shift = max_corner_shift(homography(params)).clamp(min=1e-6)
        params = params * (target / shift)[:, None, None]
    return homography(params)


def warp_average(img: torch.Tensor, homographies: torch.Tensor) -> torch.Tensor:
    """Average of ``img (n, C, H, W)`` warped by each of its ``(n, M, 3, 3)`` homographies.

    Warps use bilinear ``grid_sample`` with reflected borders; the loop runs over the M copies (each a
    batched warp of all n images), so memory stays at one extra image batch whatever M is.
    """
    n, _, h, w = img.shape
    half_diag = math.hypot(h, w) / 2
    ys = (torch.arange(h, device=img.device, dtype=torch.float32) + 0.5 - h / 2) / half_diag
    xs = (torch.arange(w, device=img.device, dtype=torch.float32) + 0.5 - w / 2) / half_diag
    ones = torch.ones(1, 1, device=img.device)
    base = torch.stack(torch.broadcast_tensors(xs[None, :], ys[:, None], ones), -1)  # (H, W, 3)
    scale = torch.tensor([half_diag / (w / 2), half_diag / (h / 2)], device=img.device)
    hm = homographies.to(device=img.device, dtype=torch.float32)
    acc = torch.zeros_like(img)
    for j in range(hm.shape[1]):
        moved = torch.einsum("nij,hwj->nhwi", hm[:, j], base)
        grid = moved[..., :2] / moved[..., 2:] * scale  # to grid_sample's [-1, 1] (align_corners=False)
        acc += F.grid_sample(
            img, grid.to(img.dtype), mode="bilinear", padding_mode="reflection", align_corners=False
        )
    return acc / hm.shape[1]


# ------------------------------------------------------------------------------------------------
# the whole pipeline


def _jpeg(img: torch.Tensor, qualities: list[int]) -> torch.Tensor:
    """JPEG round trip of each image (n, 3, H, W) through Pillow on the CPU (4:2:0, the camera default)."""
    from PIL import Image

    arrays = (img.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for arr, q in zip(arrays, qualities):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(q))
        buf.seek(0)
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    back = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(device=img.device, dtype=img.dtype)
    return back / 255


def random_object_masks(n: int, height: int, width: int, cfg: BlurConfig, generator: torch.Generator) -> torch.Tensor:
    """``n`` object masks ``(n, 1, H, W)`` in [0, 1]: rotated ellipses with a wobbly outline, 1 px soft edge.

    The outline's radius varies with angle by a few random low harmonics (2-5 lobes), so objects are
    blobs rather than perfect ellipses; the centre may lie near the border, so objects also enter and
    leave the frame as they do in video. Vectorised over the batch: a handful of whole-image operations.
    """
    g = generator
    u = _rand(g, 5, n)
    harm = _randn(g, n, 2, 4)
    dev = u.device
    cy, cx = (0.1 + 0.8 * u[0]) * height, (0.1 + 0.8 * u[1]) * width
    radius = _uniform(u[2], cfg.object_radius) * min(height, width)
    aspect = 0.5 + 0.5 * u[3]
    angle = math.pi * u[4]
    ys = torch.arange(height, device=dev, dtype=torch.float32)[None, :, None] + 0.5 - cy.view(n, 1, 1)
    xs = torch.arange(width, device=dev, dtype=torch.float32)[None, None, :] + 0.5 - cx.view(n, 1, 1)
    cos, sin = torch.cos(angle).view(n, 1, 1), torch.sin(angle).view(n, 1, 1)
    along, across = xs * cos + ys * sin, (ys * cos - xs * sin) / aspect.view(n, 1, 1)
    rho = torch.sqrt(along**2 + across**2)
    phi = torch.atan2(across, along)
    k = torch.arange(2, 6, device=dev, dtype=torch.float32)
    lobes = (harm[:, 0, None, None, :] * torch.cos(k * phi[..., None])
             + harm[:, 1, None, None, :] * torch.sin(k * phi[..., None])).sum(-1)
    outline = radius.view(n, 1, 1) * (1 + 0.08 * lobes).clamp(0.6, 1.4)
    return (outline - rho + 0.5).clamp(0, 1)[:, None]


def synthesize(sharp: torch.Tensor, cfg: BlurConfig, generator: torch.Generator) -> torch.Tensor:
    """Blurry version ``(n, 3, H, W)`` of sharp sRGB images ``(n, 3, H, W)`` in [0, 1], on ``sharp.device``.

    See the module docstring for the steps. Reproducible: the same generator seed (same generator device)
    and inputs give the same output on the same device. A generator on ``sharp.device`` avoids copying
    the noise tensors across devices. Output is float32 in [0, 1]; samples drawn as "sharp" are returned
    exactly as given. Moving objects change the sharp target as well, so they need ``synthesize_pair``.
    """
    if cfg.dynamic_prob > 0:
        raise ValueError("BlurConfig.dynamic_prob > 0 changes the sharp target: use synthesize_pair")
    return synthesize_pair(sharp, cfg, generator)[1]


def synthesize_pair(
    sharp: torch.Tensor, cfg: BlurConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(target, blurry)`` from sharp sRGB images ``(n, 3, H, W)`` in [0, 1].

    ``target`` is ``sharp`` itself except where a moving object was composited (``dynamic_prob``). The
    draws of ``synthesize`` come first and those of the moving objects after them, only when
    ``dynamic_prob > 0``, so a configuration without objects gives exactly ``synthesize``'s pairs.
    """
    if sharp.dim() != 4 or sharp.shape[1] != 3:
        raise ValueError(f"sharp must be (n, 3, H, W), got {tuple(sharp.shape)}")
    n, _, h, w = sharp.shape
    dev = sharp.device
    g = generator
    x = sharp.float().clamp(0, 1)

    # All draws up front, in a fixed order and amount.
    u = _rand(g, 12, n).to(dev)
    keep_sharp = u[0] < cfg.sharp_prob
    linear = u[1] < cfg.linear_prob
    saturate = u[2] < cfg.saturation_prob
    alpha = _uniform(u[3], cfg.saturation_alpha)
    nonuniform = u[4] < cfg.nonuniform_prob
    noisy = u[5] < cfg.noise_prob
    beta1 = _log_uniform(u[6], cfg.shot_noise)
    beta2 = _log_uniform(u[7], cfg.read_noise)
    sigma_srgb = _uniform(u[8], cfg.srgb_noise)
    jpeg = u[9] < cfg.jpeg_prob
    quality = (cfg.jpeg_quality[0] + (cfg.jpeg_quality[1] - cfg.jpeg_quality[0] + 1) * u[10]).floor()
    quality = quality.clamp(max=cfg.jpeg_quality[1])
    kernels = random_kernels(n, cfg, g, dev)
    paths = random_homography_paths(n, cfg, g, h, w)
    noise_linear = _randn(g, n, 3, h, w).to(dev)
    noise_srgb = _randn(g, n, 3, h, w).to(dev)
    if cfg.dynamic_prob > 0:
        u_dyn = _rand(g, 2, n).to(dev)
        moving = (u_dyn[0] < cfg.dynamic_prob) & ~keep_sharp
        still_background = u_dyn[1] < cfg.static_background_prob
        masks = random_object_masks(n, h, w, cfg, g).to(dev)
        object_kernels = random_kernels(n, cfg, g, dev)

    def per_sample(mask: torch.Tensor) -> torch.Tensor:
        return mask.view(n, 1, 1, 1)

    def to_scene(img: torch.Tensor) -> torch.Tensor:
        """sRGB crop to the light the sensor integrates: linear (most samples), clipped highlights boosted."""
        lin = torch.where(per_sample(linear), srgb_to_linear(img), img)
        if cfg.saturation_per_channel:
            clipped = (img >= cfg.saturation_threshold).float()
        else:
            clipped = (img.amax(dim=1, keepdim=True) >= cfg.saturation_threshold).float()
        return lin + per_sample(saturate) * alpha.view(n, 1, 1, 1) * clipped

    lin = to_scene(x)
    still = lin
    idx = nonuniform.nonzero().flatten()
    if idx.numel():
        lin = lin.index_copy(0, idx, warp_average(lin.index_select(0, idx), paths.index_select(0, idx)))
    blurred = apply_kernels(lin, kernels)

    target = x
    if cfg.dynamic_prob > 0 and bool(moving.any()):
        mdx = moving.nonzero().flatten()
        # The object's texture is another crop of the batch, mirrored so a batch of one still differs
        # (to_scene's per-sample switches index the whole batch, hence the selection after it).
        texture = x.roll(1, dims=0).flip(-1)
        mask = masks.index_select(0, mdx)
        target = target.index_copy(0, mdx, mask * texture.index_select(0, mdx) + (1 - mask) * x.index_select(0, mdx))
        layer = to_scene(texture).index_select(0, mdx)
        k_obj = object_kernels.index_select(0, mdx)
        smeared = apply_kernels(torch.cat([mask * layer, mask], dim=1), k_obj)
        keep_still = still_background.index_select(0, mdx).view(-1, 1, 1, 1)
        background = torch.where(keep_still, still.index_select(0, mdx), blurred.index_select(0, mdx))
        blurred = blurred.index_copy(0, mdx, smeared[:, :3] + (1 - smeared[:, 3:]) * background)

    blurred = blurred.clamp(0, 1)  # the sensor clips at its white point
    std = (beta1.view(n, 1, 1, 1) * blurred + beta2.view(n, 1, 1, 1)).sqrt()
    blurred = (blurred + per_sample(noisy) * std * noise_linear).clamp(0, 1)
    out = torch.where(per_sample(linear), linear_to_srgb(blurred), blurred)
    out = (out + per_sample(noisy) * sigma_srgb.view(n, 1, 1, 1) * noise_srgb).clamp(0, 1)

    jdx = (jpeg & ~keep_sharp).nonzero().flatten()
    if jdx.numel():
        out = out.index_copy(0, jdx, _jpeg(out.index_select(0, jdx), quality[jdx].tolist()))
    return target, torch.where(per_sample(keep_sharp), x, out)
