"""Full-reference image quality metrics, computed the way the deblurring literature reports them.

The numbers in deblurring papers (GoPro, RealBlur, HIDE) are only comparable when they are measured the
same way, and the libraries that compute them disagree on defaults. These are the conventions used here,
and why:

* **Full-resolution RGB.** Benchmarks score the whole image in RGB; nothing is resized. ``y_channel=True``
  (``deblur eval --y-channel``) scores the BT.601 luma instead, computed like MATLAB's ``rgb2ycbcr``
  (``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for ``R, G, B`` in [0, 1], so ``Y`` is in [16, 235]/255),
  as the super-resolution papers and BasicSR's ``test_y_channel`` do. LPIPS always sees RGB: its network was
  trained on colour images. FSIM becomes the luminance-only FSIM on Y (FSIMc needs colour).
* **8-bit, as saved.** The output is scored as it would be written to a PNG: clipped to [0, 1] and rounded
  to 8 bits (:func:`quantize8`). The target and the blurry input are quantised the same way, which changes
  nothing for the 8-bit files benchmarks ship and matches how their evaluation scripts read 16-bit ones.
* **Data range 1.0 on [0, 1] floats**, which gives the same figures as data range 255 on ``uint8``.
* **PSNR per image**, ``10 log10(1 / MSE)`` over all pixels and channels, averaged over images (not
  computed from the mean MSE). Identical images have an infinite PSNR: it is reported as ``inf`` (the
  table and CSV) and as JSON ``null`` (JSON has no infinity). PSNR is never unavailable, so a ``null`` PSNR
  means exactly "identical". A mean that includes an infinite PSNR is infinite, as in BasicSR.
* **SSIM** with an 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, "valid" filtering (no padding),
  computed per channel and averaged, and **no downsampling**. Wang et al.'s reference code (and piq's
  default, ``downsample=True``) first average-pools images larger than 256 px by ``round(min(H, W) / 256)``;
  MATLAB ``ssim`` and BasicSR, which the published GoPro figures come from, do not, so we pass
  ``downsample=False`` to ``piq.ssim``. Needs at least 11 px per side.
* **MS-SSIM** (``piq.multi_scale_ssim``, 5 scales with Wang's weights) needs
  ``(11 - 1) * 2**4 + 1 = 161`` px per side; smaller images get ``None`` ("n/a") rather than an error.
* **FSIM** is ``piq.fsim`` with ``chromatic=True`` (FSIMc, as the seed's table reports it); it has its own
  scale rule (average-pooling by ``round(min(H, W) / 256)``), which is part of the metric's definition.
* **VIF** is the pixel-domain ``piq.vif_p`` on luma; needs at least 41 px per side.
* **LPIPS** (lower is better) uses the ``lpips`` package, AlexNet backbone by default. Its ImageNet
  backbone is downloaded by torchvision into ``$TORCH_HOME/hub/checkpoints``; :func:`make_lpips` returns
  ``None`` and a note saying how to provide it when it is not there and cannot be fetched.
* ``crop_border=N`` drops N pixels on every side before everything else (a common convention for methods
  whose borders are unreliable).
* ``max_shift=S`` (``deblur eval --max-shift S``) scores **up to a shift**, the blind-deblurring protocol
  (Levin et al. 2009, Köhler et al. 2012, Lai et al. 2016): a blind method may restore the image displaced
  by a few pixels (the kernel's centre is unknown), which is not an error. The target keeps its central
  ``(H - 2S) x (W - 2S)`` region and the output is slid over every integer shift in ``[-S, S]^2``; PSNR and
  SSIM are each the best over the shifts (:func:`shift_tolerant_psnr`, :func:`shift_tolerant_ssim`), and
  the other metrics are computed on that same cropped region at the shift that maximises PSNR. Every shift
  is scored on the same target pixels, so shifts are compared fairly. Applied after ``crop_border``.

Higher is better for every metric except LPIPS (see :data:`HIGHER_IS_BETTER`).
"""

from __future__ import annotations

import math
import pickle
import re
import socket
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deblurcli.errors import DeblurError
from deblurcli.extras import require

if TYPE_CHECKING:
    import torch

#: Metric keys, in the order tables, JSON and CSV list them.
METRICS: tuple[str, ...] = ("psnr", "ssim", "ms_ssim", "fsim", "vif", "lpips")

#: Column titles for tables.
LABELS: dict[str, str] = {
    "psnr": "PSNR",
    "ssim": "SSIM",
    "ms_ssim": "MS-SSIM",
    "fsim": "FSIM",
    "vif": "VIF",
    "lpips": "LPIPS",
}

#: Direction of improvement: LPIPS is a distance, every other metric a similarity.
HIGHER_IS_BETTER: dict[str, bool] = {key: key != "lpips" for key in METRICS}

#: Smallest image side (after ``crop_border``) each windowed metric can be computed on.
#: FSIM's phase congruency needs a neighbourhood: on a 1-px-wide image piq returns NaN (measured).
MIN_SIDE: dict[str, int] = {"ssim": 11, "ms_ssim": 161, "fsim": 2, "vif": 41}

#: Most floats one tensor of a :func:`shift_ssims` pass may hold (128 MB): a row of 11 shifts of a
#: 768x512 RGB photo fits (13 M); a 4K photo is done a few shifts at a time instead of needing ~7 GB.
SHIFT_BATCH_ELEMENTS = 2**25

#: Smallest side the LPIPS backbones accept (measured: their pooling stages need this much input).
LPIPS_MIN_SIDE: dict[str, int] = {"alex": 31, "vgg": 16, "squeeze": 17}

#: The torchvision ImageNet checkpoints ``lpips.LPIPS(pretrained=True)`` loads (``IMAGENET1K_V1``).
LPIPS_BACKBONE_URLS: dict[str, str] = {
    "alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "squeeze": "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
}

#: Seconds a stalled connection may block while fetching an LPIPS backbone, so an offline machine whose
#: firewall drops packets fails in seconds instead of hanging.
DOWNLOAD_TIMEOUT_S = 15.0

# MATLAB rgb2ycbcr luma row for R, G, B in [0, 1]; the result is scaled back to [0, 1] by /255.
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64) / 255.0
_Y_OFFSET = 16.0 / 255.0


def quantize8(rgb: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] and round to the 256 levels an 8-bit file stores, staying float32 in [0, 1].

    Scores must describe the image a user gets on disk, not the network's unrounded floats, which are
    worth a few hundredths of a dB more.
    """
    return (np.round(np.clip(rgb, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """BT.601 studio-swing luma like MATLAB ``rgb2ycbcr``: H x W x 3 in [0, 1] -> H x W x 1 in [16, 235]/255."""
    y = rgb.astype(np.float64) @ _Y_WEIGHTS + _Y_OFFSET
    return y[..., None].astype(np.float32)


def psnr(output: np.ndarray, target: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over all pixels and channels; ``inf`` for identical images.

    Computed in float64 from the mean squared error: piq adds an epsilon that caps identical images at
    80 dB, which would hide them in a mean.
    """
    mse = float(np.mean((output.astype(np.float64) - target.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def unavailable(height: int, width: int, lpips_net: str | None = None) -> dict[str, str]:
    """Metrics that cannot be computed on a ``height`` x ``width`` image, each with the reason.

    ``lpips_net`` is the LPIPS backbone in use (``None`` when LPIPS is not computed at all; the reason for
    that comes from :func:`make_lpips`). Sizes are those after ``crop_border``.
    """
    side = min(height, width)
    reasons = {
        key: f"{LABELS[key]} needs at least {need} px per side (image is {width}x{height})"
        for key, need in MIN_SIDE.items()
        if side < need
    }
    if lpips_net is not None and side < LPIPS_MIN_SIDE[lpips_net]:
        reasons["lpips"] = (
            f"LPIPS ({lpips_net}) needs at least {LPIPS_MIN_SIDE[lpips_net]} px per side (image is {width}x{height})"
        )
    return reasons


def _lpips_net(model: Any) -> str:
    """The backbone name of an ``lpips.LPIPS`` instance (``alex``, ``vgg`` or ``squeeze``)."""
    return str(model.pnet_type)


def _prepare(
    output: np.ndarray, target: np.ndarray, crop_border: int, quantize: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes, quantise, crop the border: the common first steps of every metric."""
    if output.shape != target.shape or output.ndim != 3 or output.shape[2] != 3:
        raise DeblurError(
            f"cannot compare a {output.shape} image with a {target.shape} one: both must be the same H x W x 3"
        )
    if crop_border < 0:
        raise DeblurError(f"crop border must be 0 or more, got {crop_border}")
    h, w = output.shape[:2]
    if 2 * crop_border >= min(h, w):
        raise DeblurError(f"a crop border of {crop_border} px leaves nothing of a {w}x{h} image")
    if quantize:
        output, target = quantize8(output), quantize8(target)
    if crop_border:
        output = output[crop_border:-crop_border, crop_border:-crop_border]
        target = target[crop_border:-crop_border, crop_border:-crop_border]
    return output, target


def _check_shift(height: int, width: int, max_shift: int) -> None:
    """A user error (not an IndexError) when the shift window leaves nothing of the image."""
    if max_shift < 0:
        raise DeblurError(f"max shift must be 0 or more, got {max_shift}")
    if 2 * max_shift >= min(height, width):
        raise DeblurError(f"a max shift of {max_shift} px leaves nothing of a {width}x{height} image")


def shift_errors(output: np.ndarray, target: np.ndarray, max_shift: int) -> np.ndarray:
    """Mean squared error for every integer shift: a ``(2S+1) x (2S+1)`` array, centre = no shift.

    Entry ``[S + dy, S + dx]`` compares ``target[S:H-S, S:W-S]`` with the output window displaced by
    ``(dy, dx)``, i.e. ``output[S+dy : H-S+dy, S+dx : W-S+dx]``, over all channels. The cross term of all
    shifts comes from one FFT correlation and the window energies from an integral image, so the cost is
    a few FFTs of the image instead of ``(2S+1)^2`` passes; float64 keeps the error near 1e-16, far below
    one 8-bit level on one pixel (1.5e-5 / N), so the ranking is reliable. :func:`best_shift` recomputes the
    winner exactly.
    """
    h, w = target.shape[:2]
    _check_shift(h, w, max_shift)
    s = max_shift
    hc, wc = h - 2 * s, w - 2 * s
    x = output.astype(np.float64)
    t = target[s : h - s, s : w - s].astype(np.float64)
    # Circular correlation on the full H x W grid: lags 0..2S never wrap because the template is 2S smaller.
    spectrum = np.fft.rfft2(x, axes=(0, 1)) * np.conj(np.fft.rfft2(t, s=(h, w), axes=(0, 1)))
    cross = np.fft.irfft2(spectrum, s=(h, w), axes=(0, 1))[: 2 * s + 1, : 2 * s + 1].sum(axis=2)
    integral = np.zeros((h + 1, w + 1))
    integral[1:, 1:] = (x * x).sum(axis=2).cumsum(axis=0).cumsum(axis=1)
    k = np.arange(2 * s + 1)
    ky, kx = k[:, None], k[None, :]
    energy = integral[ky + hc, kx + wc] - integral[ky, kx + wc] - integral[ky + hc, kx] + integral[ky, kx]
    sse = float((t * t).sum()) + energy - 2.0 * cross
    return np.maximum(sse, 0.0) / t.size


def best_shift(output: np.ndarray, target: np.ndarray, max_shift: int) -> tuple[int, int, float]:
    """``(dy, dx, mse)``: the shift with the least squared error (so the best PSNR) and its exact MSE.

    ``output[y + dy, x + dx]`` is compared with ``target[y, x]``. The FFT ranking of :func:`shift_errors`
    is confirmed by an exact float64 MSE of the (one or few) near-best shifts, so identical images (a
    shifted copy) get exactly 0 and an infinite PSNR; the smallest shift wins a tie.
    """
    s = max_shift
    errors = shift_errors(output, target, s)
    h, w = target.shape[:2]
    t = target[s : h - s, s : w - s].astype(np.float64)
    candidates = np.flatnonzero(errors <= errors.min() + 1e-12)
    best: tuple[int, int, float] | None = None
    for flat in candidates:  # usually one; a handful at most
        dy, dx = (int(v) - s for v in np.unravel_index(flat, errors.shape))
        window = output[s + dy : h - s + dy, s + dx : w - s + dx].astype(np.float64)
        mse = float(np.mean((window - t) ** 2))
        if best is None or (mse, abs(dy) + abs(dx)) < (best[2], abs(best[0]) + abs(best[1])):
            best = (dy, dx, mse)
    assert best is not None
    return best


def align(output: np.ndarray, target: np.ndarray, dy: int, dx: int, max_shift: int) -> tuple[np.ndarray, np.ndarray]:
    """The output window displaced by ``(dy, dx)`` and the target's central region, both ``(H-2S) x (W-2S)``."""
    h, w = target.shape[:2]
    s = max_shift
    return output[s + dy : h - s + dy, s + dx : w - s + dx], target[s : h - s, s : w - s]


def shift_tolerant_psnr(output: np.ndarray, target: np.ndarray, max_shift: int = 5, data_range: float = 1.0) -> float:
    """Best PSNR over integer shifts of ``output`` within ``±max_shift`` px, on the target's central region.

    The blind-deblurring protocol's PSNR (see the module docstring); ``inf`` for a shifted copy. Arrays are
    H x W x C; no quantisation or border crop here (:func:`image_metrics` does those first).
    """
    mse = best_shift(output, target, max_shift)[2]
    return math.inf if mse == 0.0 else 10.0 * math.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float, channels: int, device: torch.device) -> torch.Tensor:
    """piq's (and Wang's) 2-D SSIM window, one contiguous copy per channel for a grouped convolution.

    A 2-D 11x11 grouped convolution measured faster on a CPU than the separable pair of 1x11 and 11x1
    depthwise ones (0.84 s vs 1.27 s for 11 x 3 x 502 x 758, one thread), and it is what piq runs.
    """
    import torch

    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)[None, None].repeat(channels, 1, 1, 1)


def _filter_valid(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """'Valid' Gaussian filter of N x C x H x W, each channel alone."""
    import torch.nn.functional as F

    return F.conv2d(x, window, groups=x.shape[1])


def shift_ssims(
    output: np.ndarray, target: np.ndarray, max_shift: int, device: torch.device | str | None = None
) -> np.ndarray:
    """SSIM (11x11 Gaussian, sigma 1.5, valid, no downsampling; as :func:`image_metrics`) of every shift.

    Same layout as :func:`shift_errors`. Filtering commutes with shifting, so the local means and
    variances of the output are filtered once over the whole image and only windowed per shift; only the
    cross term ``E[xy]`` is filtered per shift, vectorised over up to a row of ``2S+1`` shifts per pass,
    fewer for big images so that one pass holds at most :data:`SHIFT_BATCH_ELEMENTS` floats per tensor.
    float32, like the SSIM in :func:`image_metrics`.
    """
    import torch

    h, w, _ = target.shape
    _check_shift(h, w, max_shift)
    s, k = max_shift, 11
    hc, wc = h - 2 * s, w - 2 * s
    if min(hc, wc) < k:
        raise DeblurError(f"SSIM needs at least {k} px per side after a max shift of {s} px (image is {w}x{h})")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    c1, c2 = 0.01**2, 0.03**2

    def to_tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)[None].to(dev)

    x, y = to_tensor(output), to_tensor(target[s : h - s, s : w - s])
    g = _gaussian_window(k, 1.5, x.shape[1], dev)
    n, hm, wm = 2 * s + 1, hc - k + 1, wc - k + 1
    per_pass = max(1, min(n, SHIFT_BATCH_ELEMENTS // (x.shape[1] * hc * wc)))
    result = torch.empty(n, n, dtype=torch.float64)
    with torch.no_grad():
        mu_x, xx = _filter_valid(x, g)[0], _filter_valid(x * x, g)[0]  # C x (H-10) x (W-10)
        mu_y, yy = _filter_valid(y, g), _filter_valid(y * y, g)  # 1 x C x hm x wm
        var_y = yy - mu_y**2
        x_windows = x[0].unfold(2, wc, 1)  # C x H x n x wc: every horizontal shift, as a view
        mu_windows, xx_windows = mu_x.unfold(2, wm, 1), xx.unfold(2, wm, 1)  # C x (H-10) x n x wm
        for dy in range(n):
            for d0 in range(0, n, per_pass):  # shifts (dy, d0 .. d1-1) in one pass
                d1 = min(n, d0 + per_pass)
                xs = x_windows[:, dy : dy + hc, d0:d1].permute(2, 0, 1, 3)  # m x C x hc x wc
                xy = _filter_valid(xs * y, g)  # m x C x hm x wm
                mx = mu_windows[:, dy : dy + hm, d0:d1].permute(2, 0, 1, 3)
                vx = xx_windows[:, dy : dy + hm, d0:d1].permute(2, 0, 1, 3) - mx**2
                cov = xy - mx * mu_y
                ssim_map = ((2 * mx * mu_y + c1) * (2 * cov + c2)) / ((mx**2 + mu_y**2 + c1) * (vx + var_y + c2))
                result[dy, d0:d1] = ssim_map.mean(dim=(2, 3)).mean(dim=1).double().cpu()
    return result.numpy()


def shift_tolerant_ssim(
    output: np.ndarray, target: np.ndarray, max_shift: int = 5, device: torch.device | str | None = None
) -> float:
    """Best SSIM over integer shifts of ``output`` within ``±max_shift`` px, on the target's central region.

    The SSIM counterpart of :func:`shift_tolerant_psnr` (maximised on its own: the best-SSIM shift is
    usually, not always, the best-PSNR one); 1 for a shifted copy.
    """
    return float(shift_ssims(output, target, max_shift, device).max())


def image_metrics(
    output: np.ndarray,
    target: np.ndarray,
    *,
    crop_border: int = 0,
    y_channel: bool = False,
    lpips_model: Any | None = None,
    quantize: bool = True,
    device: torch.device | str | None = None,
    max_shift: int = 0,
) -> dict[str, float | None]:
    """PSNR, SSIM, MS-SSIM, FSIM, VIF and LPIPS of ``output`` against ``target`` (H x W x 3 float in [0, 1]).

    Follows the conventions in the module docstring. A metric the image is too small for is ``None``
    (see :func:`unavailable` for the reason), as is LPIPS when ``lpips_model`` is ``None``. ``max_shift``
    > 0 scores up to a shift (module docstring): sizes then mean the ``(H-2S) x (W-2S)`` region. ``device`` is
    where the torch metrics run (CPU by default). They run in float32: float64 moved SSIM, MS-SSIM and VIF by
    about 1e-6 (measured; far below the 4 decimals reported) but made SSIM 4x slower on a CPU,
    and float64 is far slower still on consumer GPUs and absent on MPS. PSNR is float64 (numpy).
    """
    import torch

    piq = require("piq", "eval")
    output, target = _prepare(output, target, crop_border, quantize)
    _check_shift(output.shape[0], output.shape[1], max_shift)
    dev = torch.device(device) if device is not None else torch.device("cpu")

    def to_tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)[None].to(dev)

    x_np, y_np = (rgb_to_y(output), rgb_to_y(target)) if y_channel else (output, target)
    shifted_ssim: float | None = None
    if max_shift:
        # Align on the scored channel(s) at the best-PSNR shift; SSIM gets its own best over the shifts.
        h, w = output.shape[0] - 2 * max_shift, output.shape[1] - 2 * max_shift
        if min(h, w) >= MIN_SIDE["ssim"]:
            shifted_ssim = float(shift_ssims(x_np, y_np, max_shift, dev).max())
        dy, dx, _ = best_shift(x_np, y_np, max_shift)
        output, target = align(output, target, dy, dx, max_shift)
        x_np, y_np = align(x_np, y_np, dy, dx, max_shift)
    h, w = output.shape[:2]
    x, y = to_tensor(x_np), to_tensor(y_np)

    skipped = unavailable(h, w, _lpips_net(lpips_model) if lpips_model is not None else None)
    results: dict[str, float | None] = dict.fromkeys(METRICS)
    results["psnr"] = psnr(x_np, y_np)
    with torch.no_grad():
        if shifted_ssim is not None:
            results["ssim"] = shifted_ssim
        elif "ssim" not in skipped:
            results["ssim"] = float(piq.ssim(x, y, kernel_size=11, kernel_sigma=1.5, data_range=1.0, downsample=False))
        if "ms_ssim" not in skipped:
            results["ms_ssim"] = float(piq.multi_scale_ssim(x, y, kernel_size=11, kernel_sigma=1.5, data_range=1.0))
        if "fsim" not in skipped:
            results["fsim"] = float(piq.fsim(x, y, data_range=1.0, chromatic=not y_channel))
        if "vif" not in skipped:
            results["vif"] = float(piq.vif_p(x, y, data_range=1.0))
        if lpips_model is not None and "lpips" not in skipped:
            param = next(lpips_model.parameters())
            a, b = (to_tensor(t).to(param.device, param.dtype) for t in (output, target))
            results["lpips"] = float(lpips_model(a, b, normalize=True).mean())
    return results


def mean_metrics(rows: Iterable[Mapping[str, float | None]]) -> dict[str, float | None]:
    """Per-metric mean over the images where the metric was available (``None`` where it never was).

    Each image counts once (PSNR is averaged in dB, per image, as benchmarks do); an infinite PSNR makes
    the mean infinite.
    """
    rows = list(rows)
    means: dict[str, float | None] = {}
    for key in METRICS:
        values = [v for row in rows if (v := row.get(key)) is not None]
        means[key] = float(np.mean(values)) if values else None
    return means


def gain(output: Mapping[str, float | None], inp: Mapping[str, float | None]) -> dict[str, float | None]:
    """``output - input`` per metric (positive is better except for LPIPS); ``None`` where either is missing
    or the difference is undefined (``inf - inf``)."""
    result: dict[str, float | None] = {}
    for key in METRICS:
        a, b = output.get(key), inp.get(key)
        diff = a - b if a is not None and b is not None else None
        result[key] = diff if diff is None or not math.isnan(diff) else None
    return result


def lpips_backbone_path(net: str) -> Path:
    """Where torchvision (and so ``lpips``) looks for the ImageNet backbone of ``net``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE_URLS[net].rsplit("/", 1)[1]


def _how_to_provide(net: str) -> str:
    url = LPIPS_BACKBONE_URLS[net]
    return f"put {url.rsplit('/', 1)[1]} (from {url}) in {lpips_backbone_path(net).parent}/ (set $TORCH_HOME to move it)"


def make_lpips(net: str = "alex", *, random_backbone: bool = False, extra: str = "eval") -> tuple[Any | None, str | None]:
    """An ``lpips.LPIPS`` model in eval mode on the CPU, or ``(None, note)`` when it cannot be built.

    The backbone is torchvision's ImageNet checkpoint. If it is not cached, one download is tried with a
    short socket timeout (no retries), so an offline run loses seconds, not minutes, and then reports LPIPS
    as n/a with ``note`` saying how to provide the file. ``random_backbone=True`` builds LPIPS on a
    randomly initialised backbone (``pnet_rand=True``): meaningless numbers, but it needs no download,
    which is what tests want. ``net="none"`` disables LPIPS. Without the lpips package this raises
    :class:`~deblurcli.errors.MissingExtraError` naming ``extra``, the caller's extra that installs it.
    """
    if net == "none":
        return None, "LPIPS not computed (--no-lpips)"
    if net not in LPIPS_BACKBONE_URLS:
        raise DeblurError(f"unknown LPIPS backbone {net!r}: choose one of {', '.join(LPIPS_BACKBONE_URLS)}, none")
    import torch

    lpips = require("lpips", extra)
    if not random_backbone:
        path = lpips_backbone_path(net)
        if not path.is_file():
            url = LPIPS_BACKBONE_URLS[net]
            match = re.search(torch.hub.HASH_REGEX, path.name)
            previous = socket.getdefaulttimeout()
            socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                # progress on stderr: VGG's backbone is 528 MB, a silent wait would look like a hang
                torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None, progress=True)
            except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad hash is a RuntimeError
                reason = (str(getattr(exc, "reason", exc)).splitlines() or [type(exc).__name__])[0][:120]
                return None, f"LPIPS n/a: its ImageNet backbone is not cached and could not be downloaded ({reason}); {_how_to_provide(net)}"
            finally:
                socket.setdefaulttimeout(previous)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's "pretrained is deprecated" chatter
        # Always a random backbone here: lpips/torchvision would read the cached file with a full unpickle,
        # so the ImageNet weights are loaded below as plain tensors instead.
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    if not random_backbone:
        path = lpips_backbone_path(net)
        try:
            _load_backbone(model.net, torch.load(path, map_location="cpu", weights_only=True))
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile) as exc:
            # what torch.load raises for a foreign, truncated, empty or code-carrying file (all measured)
            return None, f"LPIPS n/a: cannot load {path} ({type(exc).__name__}); delete it and {_how_to_provide(net)}"
    return model.eval().requires_grad_(False), None


def _load_backbone(net: torch.nn.Module, state: Mapping[str, Any]) -> None:
    """Copy a torchvision checkpoint's ``features.<i>.*`` tensors into lpips' backbone slices.

    lpips 0.1.4 splits torchvision's ``features`` into ``slice1``..``sliceN`` whose children keep their
    ``features`` index as name, so ``features.3.weight`` belongs to whichever slice holds child ``3``.
    ``strict=True`` makes a checkpoint for another architecture an error rather than a silent half-load.
    """
    if not isinstance(state, Mapping):
        raise TypeError("not a state dict")
    home = {child: slice_name for slice_name, part in net.named_children() for child, _ in part.named_children()}
    mapped = {}
    for key, tensor in state.items():
        prefix, _, rest = key.partition(".")
        index, _, param = rest.partition(".")
        if prefix == "features" and index in home:
            mapped[f"{home[index]}.{index}.{param}"] = tensor
    net.load_state_dict(mapped, strict=True)
