"""The kernel path for camera shake: blind kernel estimation, non-blind deconvolution, kernel files.

``estimate_kernel`` finds the blur kernel of a photo from its luminance (with a confidence and the
do-no-harm gate), ``deconvolve`` undoes a known kernel, and :class:`Deconvolver` runs that through the tiled
engine for photos of any size. :mod:`deblurcli.session` and :mod:`deblurcli.decide` choose when to use them.
"""

from deblurcli.kernel.deconv import Deconvolver, deconvolve, deconvolve_grid
from deblurcli.kernel.estimate import KernelEstimate, KernelGrid, estimate_kernel, estimate_kernel_grid, near_delta_mass
from deblurcli.kernel.noise import estimate_noise
from deblurcli.kernel.psf import kernel_picture, normalise_kernel, read_kernel

__all__ = [
    "Deconvolver",
    "KernelEstimate",
    "KernelGrid",
    "deconvolve",
    "deconvolve_grid",
    "estimate_kernel",
    "estimate_kernel_grid",
    "estimate_noise",
    "kernel_picture",
    "near_delta_mass",
    "normalise_kernel",
    "read_kernel",
]
