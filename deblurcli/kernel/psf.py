"""Blur kernels in and out: a user's PSF file (``--kernel``) and a viewable picture of kernels (``--save-kernel``).

A kernel file is validated before a long run: a wrong file (empty, negative, NaN, a photo instead of a PSF)
would otherwise give a silent garbage result. Read kernels are brought to the kernel path's convention (odd
square, >= 0, sum 1, centred on its centroid so the deblurred photo is not shifted).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from deblurcli.errors import KernelError

__all__ = ["MAX_KERNEL_SIZE", "kernel_picture", "normalise_kernel", "read_kernel"]

#: Largest kernel side accepted (px): beyond it the file is almost surely a photo, not a PSF.
MAX_KERNEL_SIZE = 255
#: Taps below this fraction of the peak count as empty when cropping to the support.
_SUPPORT_FRACTION = 1e-3
_LUMA = np.array([0.299, 0.587, 0.114])


def normalise_kernel(kernel: np.ndarray | torch.Tensor, *, name: str = "kernel") -> torch.Tensor:
    """A 2-D non-negative array as a kernel: cropped to its support, centred on its centroid (whole pixels) in
    an odd square, summing to 1, float32. Raises :class:`~deblurcli.errors.KernelError` (one line, naming ``name``) if it cannot
    be a kernel."""
    k = np.asarray(kernel.detach().cpu() if isinstance(kernel, torch.Tensor) else kernel, dtype=np.float64)
    if k.ndim != 2:
        raise KernelError(f"{name}: a kernel must be a 2-D array, got {k.ndim} dimension(s) {tuple(k.shape)}")
    if not np.isfinite(k).all():
        raise KernelError(f"{name}: the kernel contains NaN or infinite values")
    if (k < 0).any():
        raise KernelError(f"{name}: the kernel has negative values (a blur kernel is a non-negative PSF)")
    if k.max(initial=0.0) <= 0:
        raise KernelError(f"{name}: the kernel is all zero")
    rows, cols = np.nonzero(k > _SUPPORT_FRACTION * k.max())
    k = k[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    k = k / k.sum()
    cy = float((k.sum(axis=1) * np.arange(k.shape[0])).sum())
    cx = float((k.sum(axis=0) * np.arange(k.shape[1])).sum())
    # Radius around the rounded centroid that holds every tap, so the centroid lands on the centre pixel.
    iy, ix = round(cy), round(cx)
    r = max(iy, k.shape[0] - 1 - iy, ix, k.shape[1] - 1 - ix)
    side = 2 * r + 1
    if side > MAX_KERNEL_SIZE:
        raise KernelError(
            f"{name}: the kernel is {side} px once centred, more than {MAX_KERNEL_SIZE} (is this a photo, not a PSF?)"
        )
    out = np.zeros((side, side))
    out[r - iy : r - iy + k.shape[0], r - ix : r - ix + k.shape[1]] = k
    return torch.from_numpy(out.astype(np.float32))


def _load(path: Path) -> np.ndarray:
    """The raw 2-D (or, for a colour PNG, luma) array of a kernel file; one-line errors for unreadable files."""
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise KernelError(f"{path}: cannot read the kernel as .npy ({exc})") from None
        if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
            raise KernelError(f"{path}: a .npy kernel must hold real numbers, got {array.dtype}")
        return array.astype(np.float64)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.width > 4 * MAX_KERNEL_SIZE or im.height > 4 * MAX_KERNEL_SIZE:
                raise KernelError(
                    f"{path}: {im.width}x{im.height} px is far larger than a kernel (at most {MAX_KERNEL_SIZE} px)"
                )
            im.load()
            if im.mode in ("RGB", "RGBA", "P", "LA", "PA", "CMYK", "YCbCr"):
                rgb = np.asarray(im.convert("RGB"), dtype=np.float64)
                return rgb @ _LUMA
            return np.asarray(im, dtype=np.float64)  # L, I;16, I, F: grey at any bit depth
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise KernelError(f"{path}: cannot read the kernel image ({exc})") from None


def read_kernel(path: str | os.PathLike[str]) -> torch.Tensor:
    """A user's blur kernel from a PNG (grey at any bit depth; colour taken as luma) or a 2-D ``.npy`` array,
    normalised to the kernel-path convention (see :func:`normalise_kernel`). Raises :class:`~deblurcli.errors.KernelError` with
    one line for a missing, unreadable, empty, negative, NaN, non-2-D or too large kernel."""
    p = Path(path)
    if not p.is_file():
        raise KernelError(f"{p}: kernel file not found")
    return normalise_kernel(_load(p), name=str(p))


KernelLike = torch.Tensor | np.ndarray


def kernel_picture(kernels: KernelLike | Sequence[KernelLike], scale: int = 8) -> np.ndarray:
    """A viewable ``uint8`` H x W picture of one kernel or a grid of kernels.

    Each kernel is normalised to its own maximum (a long thin streak would be invisible on a shared scale),
    padded to the largest kernel's size, scaled up ``scale`` x by nearest neighbour (pixels stay crisp) and
    laid out in a near-square grid with 2 px grey separators.
    """
    if isinstance(kernels, (torch.Tensor, np.ndarray)) and np.ndim(kernels) == 2:
        kernels = [kernels]
    arrays = [np.asarray(k.detach().cpu() if isinstance(k, torch.Tensor) else k, dtype=np.float64) for k in kernels]
    if not arrays or any(a.ndim != 2 or a.size == 0 for a in arrays):
        raise ValueError("kernel_picture needs one or more non-empty 2-D kernels")
    scale = max(1, int(scale))
    side = max(max(a.shape) for a in arrays)
    cols = math.ceil(math.sqrt(len(arrays)))
    rows = math.ceil(len(arrays) / cols)
    cell, gap = side * scale, 2
    out = np.full((rows * cell + (rows - 1) * gap, cols * cell + (cols - 1) * gap), 128, dtype=np.uint8)
    for i, a in enumerate(arrays):
        peak = np.nanmax(np.abs(a)) if np.isfinite(a).any() else 0.0
        norm = np.clip(np.nan_to_num(a) / peak, 0, 1) if peak > 0 else np.zeros_like(a)
        tile = np.zeros((side, side))
        oy, ox = (side - a.shape[0]) // 2, (side - a.shape[1]) // 2
        tile[oy : oy + a.shape[0], ox : ox + a.shape[1]] = norm
        big = np.kron(tile, np.ones((scale, scale)))
        y, x = (i // cols) * (cell + gap), (i % cols) * (cell + gap)
        out[y : y + cell, x : x + cell] = (big * 255 + 0.5).astype(np.uint8)
    return out
