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


def image_metrics(
    output: np.ndarray,
    target: np.ndarray,
    *,
    crop_border: int = 0,
    y_channel: bool = False,
    lpips_model: Any | None = None,
    quantize: bool = True,
    device: torch.device | str | None = None,
) -> dict[str, float | None]:
    """PSNR, SSIM, MS-SSIM, FSIM, VIF and LPIPS of ``output`` against ``target`` (H x W x 3 float in [0, 1]).

    Follows the conventions in the module docstring. A metric the image is too small for is ``None``
    (see :func:`unavailable` for the reason), as is LPIPS when ``lpips_model`` is ``None``. ``device`` is
    where the torch metrics run (CPU by default). They run in float32: float64 moved SSIM, MS-SSIM and VIF by
    about 1e-6 (measured; far below the 4 decimals reported) but made SSIM 4x slower on a CPU,
    and float64 is far slower still on consumer GPUs and absent on MPS. PSNR is float64 (numpy).
    """
    import piq
    import torch

    output, target = _prepare(output, target, crop_border, quantize)
    h, w = output.shape[:2]
    dev = torch.device(device) if device is not None else torch.device("cpu")

    def to_tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)[None].to(dev)

    x_np, y_np = (rgb_to_y(output), rgb_to_y(target)) if y_channel else (output, target)
    x, y = to_tensor(x_np), to_tensor(y_np)

    skipped = unavailable(h, w, _lpips_net(lpips_model) if lpips_model is not None else None)
    results: dict[str, float | None] = dict.fromkeys(METRICS)
    results["psnr"] = psnr(x_np, y_np)
    with torch.no_grad():
        if "ssim" not in skipped:
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


def make_lpips(net: str = "alex", *, random_backbone: bool = False) -> tuple[Any | None, str | None]:
    """An ``lpips.LPIPS`` model in eval mode on the CPU, or ``(None, note)`` when it cannot be built.

    The backbone is torchvision's ImageNet checkpoint. If it is not cached, one download is tried with a
    short socket timeout (no retries), so an offline run loses seconds, not minutes, and then reports LPIPS
    as n/a with ``note`` saying how to provide the file. ``random_backbone=True`` builds LPIPS on a
    randomly initialised backbone (``pnet_rand=True``): meaningless numbers, but it needs no download,
    which is what tests want. ``net="none"`` disables LPIPS.
    """
    if net == "none":
        return None, "LPIPS not computed (--lpips-net none)"
    if net not in LPIPS_BACKBONE_URLS:
        raise DeblurError(f"unknown LPIPS backbone {net!r}: choose one of {', '.join(LPIPS_BACKBONE_URLS)}, none")
    import lpips
    import torch

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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's "pretrained is deprecated" chatter
            model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=random_backbone, verbose=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        # what torch.load raises for a foreign, truncated or empty file (all three measured)
        path = lpips_backbone_path(net)
        return None, f"LPIPS n/a: cannot load {path} ({type(exc).__name__}); delete it and {_how_to_provide(net)}"
    return model.eval().requires_grad_(False), None
