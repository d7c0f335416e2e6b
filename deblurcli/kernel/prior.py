"""The two alternating solvers of blind estimation, batched over candidates: L0 latent image and kernel.

Both work on a batch ``B x H x W`` of grey images (the candidates: regions and initialisations), each
with its own kernel, so every restart costs one batched FFT instead of a Python loop.

- :func:`latent_l0` restores a *cartoon* of the sharp image under an L0 gradient prior (Xu, Zheng & Jia
  2013; Pan et al. 2014) by half-quadratic splitting. L0 keeps only strong, sparse edges and flattens
  texture and noise, which is exactly what makes the next kernel step well posed: a blurred step edge
  explained by a sharp step tells the kernel's profile along the edge's normal.
- :func:`solve_kernel` fits the kernel to the latent and observed *gradients* by least squares with a
  Tikhonov term, restricted to the ``k x k`` support. Its normal equations only involve the
  autocorrelation of the latent gradients (a ``(2k-1)^2`` table from one FFT), so the conjugate-gradient
  iterations run on ``k x k`` arrays with a small convolution, not on the image.
- :func:`clean_kernel` removes what the least-squares fit leaves around the true path: taps under a
  fraction of the maximum and 8-connected pieces holding little mass; then it renormalises and recentres
  on the centroid so the deblurred photo is not displaced.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from deblurcli.kernel.boundary import fast_fft_size
from deblurcli.kernel.differences import backward_divergence, forward_differences
from deblurcli.kernel.spectral import divide_, real_pairs

__all__ = ["clean_kernel", "kernel_spectrum", "latent_l0", "recentre", "solve_kernel"]

#: Half-quadratic splitting: beta grows from 2 lambda by this factor up to ``beta_max`` (Xu et al. use 2 and 1e5).
BETA_GROWTH = 2.0
BETA_MAX = 1e5
#: Kernel fits up to this size use the dense normal matrix, larger ones an FFT convolution (:func:`_normal_operator`).
DENSE_MAX = 15


def kernel_spectrum(kernel: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """rfft2 of ``B x k x k`` kernels placed with their centre at pixel (0, 0) of an ``H x W`` canvas."""
    k = kernel.shape[-1]
    r = k // 2
    h, w = shape
    padded = F.pad(kernel, (0, w - k, 0, h - k)).roll(shifts=(-r, -r), dims=(-2, -1))
    return torch.fft.rfft2(padded)


def _diff_spectra(shape: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Spectra of the circular forward differences x[i+1] - x[i] along x and along y."""
    h, w = shape
    dx = torch.zeros(h, w, device=device)
    dx[0, 0], dx[0, -1] = -1.0, 1.0  # (d * x)[i] = x[i+1] - x[i] as a convolution
    dy = torch.zeros(h, w, device=device)
    dy[0, 0], dy[-1, 0] = -1.0, 1.0
    return torch.fft.rfft2(dx), torch.fft.rfft2(dy)


def latent_l0(y: torch.Tensor, kernel: torch.Tensor, lam: float, beta_max: float = BETA_MAX) -> torch.Tensor:
    """Argmin over x of ``||k * x - y||^2 + lam ||grad x||_0`` by half-quadratic splitting (circular).

    The auxiliary gradients are hard-thresholded at ``|grad x|^2 >= lam / beta`` and the quadratic step is
    solved exactly in the Fourier domain; beta rises geometrically so the split converges to the L0
    problem. ``y`` should already be extended so that it wraps smoothly (see ``pyramid.periodic_pad``).

    This loop is most of blind estimation's cost, and on two cores its element-wise work cost more than its
    FFTs, so it writes into buffers allocated once, keeps its masks in float (on this CPU a boolean mask costs
    5x a float one to make and 30x to apply) and divides the spectrum on its real view (``spectral.py``).
    """
    shape = (y.shape[-2], y.shape[-1])
    fk = kernel_spectrum(kernel, shape)
    fdx, fdy = _diff_spectra(shape, y.device)
    num_data = fk.conj() * torch.fft.rfft2(y)
    den_data = real_pairs(fk.abs().square())
    den_grad = real_pairs(fdx.abs().square() + fdy.abs().square())
    gx, gy, div, keep = (torch.empty_like(y) for _ in range(4))
    den = torch.empty_like(den_data)
    x = y
    beta = 2.0 * lam
    while beta < beta_max:
        forward_differences(x, gx, gy)
        torch.mul(gx, gx, out=keep)
        keep.add_(gy.square())
        torch.ge(keep, lam / beta, out=keep)  # 1.0 where the gradient is kept
        gx.mul_(keep)
        gy.mul_(keep)
        num = torch.fft.rfft2(backward_divergence(gx, gy, div, keep)).mul_(beta).add_(num_data)
        torch.add(den_data, den_grad, alpha=beta, out=den)
        x = torch.fft.irfft2(divide_(num, den), s=shape)
        beta *= BETA_GROWTH
    return x


def _correlations(
    x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient autocorrelation of x at lags within ``±(k-1)`` and cross-correlation x->y within ``±k//2``.

    Gradients are multiplied by a smooth window that vanishes at the borders, so the circular
    correlations have no wrap-around term and the unreliable extended borders carry no weight.
    """
    r = k // 2
    fx = [torch.fft.rfft2(g * weight) for g in forward_differences(x)]
    fy = [torch.fft.rfft2(g * weight) for g in forward_differences(y)]
    shape = (x.shape[-2], x.shape[-1])
    auto = torch.fft.irfft2(fx[0].abs().square() + fx[1].abs().square(), s=shape)
    cross = torch.fft.irfft2(fx[0].conj() * fy[0] + fx[1].conj() * fy[1], s=shape)
    auto = auto.roll(shifts=(k - 1, k - 1), dims=(-2, -1))[..., : 2 * k - 1, : 2 * k - 1]
    cross = cross.roll(shifts=(r, r), dims=(-2, -1))[..., :k, :k]
    return auto, cross


def _normal_operator(auto: torch.Tensor, k: int, gamma: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v -> (A + gamma I) v`` for ``B x k x k`` kernels ``v``, where ``A[(i1, j1), (i2, j2)] = auto(i1 - i2,
    j1 - j2)`` is the normal matrix of the kernel fit (``auto``: ``B x (2k-1) x (2k-1)``, lag 0 at the centre).

    ``A v`` is the linear convolution of ``v`` with the lag table, read at offset ``k - 1``; every lag it reads
    lies within the table, so a circular convolution of only ``2k - 1`` samples has no wrap-around there. From
    :data:`DENSE_MAX` px on that small FFT pair is cheaper than the dense ``k^2 x k^2`` matrix (measured on two
    cores, a whole solve: equal at 19 px, 2.7x faster at 25 px, where the dense matrix took 12 ms to gather and
    0.7 ms per product); below, the dense product is (3x at 9 px).
    """
    b = auto.shape[0]
    if k <= DENSE_MAX:
        idx = torch.arange(k, device=auto.device)
        lag = (idx[:, None] - idx[None, :]) + (k - 1)  # k x k table of row/column lags
        rows = lag[:, None, :, None].expand(k, k, k, k)
        cols = lag[None, :, None, :].expand(k, k, k, k)
        normal = auto[:, rows, cols].reshape(b, k * k, k * k) + gamma * torch.eye(k * k, device=auto.device)
        return lambda v: torch.bmm(normal, v.reshape(b, k * k, 1)).view(b, k, k)
    n = fast_fft_size(2 * k - 1)
    spectrum = torch.fft.rfft2(auto, s=(n, n))

    def apply(v: torch.Tensor) -> torch.Tensor:
        product = torch.fft.irfft2(torch.fft.rfft2(v, s=(n, n)).mul_(spectrum), s=(n, n))
        return product[..., k - 1 : 2 * k - 1, k - 1 : 2 * k - 1].add(v, alpha=gamma)

    return apply


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-item inner product of two ``B x k x k`` batches, shaped to broadcast back over them."""
    return (a * b).sum(dim=(-2, -1), keepdim=True)


def solve_kernel(
    x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, init: torch.Tensor, gamma: float, iters: int = 20,
    positive_iters: int = 0,
) -> torch.Tensor:
    """Least-squares ``k x k`` kernel (per batch item) from latent ``x`` and observed ``y`` gradients.

    Minimises ``sum_p w(p)^2 |(k * grad x)(p) - grad y(p)|^2 + gamma ||k||^2`` by conjugate gradients
    started from ``init``; the normal equations only involve the latent gradients' autocorrelation
    (:func:`_normal_operator`), so the iterations never touch the image. With ``positive_iters`` > 0 the
    solution is then refined under the constraint k >= 0. Returns the raw solution (not yet normalised).
    """
    k = init.shape[-1]
    auto, rhs = _correlations(x, y, weight, k)
    apply = _normal_operator(auto, k, gamma)
    sol = init.clone()
    res = rhs - apply(sol)
    direction = res.clone()
    rr = _dot(res, res)
    for _ in range(iters):
        ad = apply(direction)
        step = rr / _dot(direction, ad).clamp(min=1e-30)
        sol = sol + step * direction
        res = res - step * ad
        rr_new = _dot(res, res)
        direction = res + (rr_new / rr.clamp(min=1e-30)) * direction
        rr = rr_new
    return _project_nonnegative(apply, rhs, sol.clamp(min=0), positive_iters)


def _project_nonnegative(
    apply: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, start: torch.Tensor, iters: int,
) -> torch.Tensor:
    """Accelerated projected gradient (FISTA) on the same quadratic with the constraint k >= 0.

    Clamping the unconstrained solution leaves a web of small positive taps where it oscillated around
    zero; solving with the constraint puts them at exactly zero, so the path stands out of a clean
    background (the constrained solution of a least-squares fit is sparse).
    """
    if iters <= 0:
        return start
    v = torch.ones_like(start)
    for _ in range(8):  # power iteration: the step must stay under 1 / largest eigenvalue
        v = apply(v)
        v = v / _dot(v, v).sqrt().clamp(min=1e-30)
    lipschitz = _dot(v, apply(v)).clamp(min=1e-30) * 1.1
    x = start
    z = start
    t = 1.0
    for _ in range(iters):
        x_new = (z - (apply(z) - rhs) / lipschitz).clamp(min=0)
        t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
        z = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return x

def normalise(kernel: torch.Tensor) -> torch.Tensor:
    """Non-negative and summing to 1; an all-zero kernel becomes the delta (nothing to trust in it)."""
    kernel = kernel.clamp(min=0)
    total = kernel.sum(dim=(-2, -1), keepdim=True)
    k = kernel.shape[-1]
    delta = torch.zeros_like(kernel)
    delta[..., k // 2, k // 2] = 1.0
    return torch.where(total > 1e-12, kernel / total.clamp(min=1e-12), delta)


def _components(mask: torch.Tensor) -> torch.Tensor:
    """8-connected component labels of a ``B x k x k`` boolean mask (0 = background), by max propagation.

    Each pixel starts with its own index and repeatedly takes the largest label in its 3x3 neighbourhood
    inside the mask; it stops when nothing changes (at most the length of the longest component).
    """
    b, k, _ = mask.shape
    m = mask.float()
    labels = (torch.arange(1, k * k + 1, device=mask.device, dtype=torch.float32).view(1, k, k) * m)
    for _ in range(k * k):
        grown = F.max_pool2d(labels[:, None], 3, stride=1, padding=1)[:, 0] * m
        if torch.equal(grown, labels):
            break
        labels = grown
    return labels.long()


def recentre(kernel: torch.Tensor) -> torch.Tensor:
    """Shift each kernel by whole pixels so that its centroid is within half a pixel of the centre."""
    k = kernel.shape[-1]
    coords = torch.arange(k, device=kernel.device, dtype=kernel.dtype) - k // 2
    mass = kernel.sum(dim=(-2, -1)).clamp(min=1e-12)
    cy = (kernel.sum(-1) * coords).sum(-1) / mass
    cx = (kernel.sum(-2) * coords).sum(-1) / mass
    out = torch.empty_like(kernel)
    for i in range(kernel.shape[0]):  # a handful of candidates; roll has no batched per-item shift
        sy, sx = -int(torch.round(cy[i])), -int(torch.round(cx[i]))
        padded = F.pad(kernel[i], (k, k, k, k))
        out[i] = padded.roll((sy, sx), dims=(0, 1))[k : 2 * k, k : 2 * k]
    return normalise(out)


def clean_kernel(kernel: torch.Tensor, threshold: float = 0.1, min_piece: float = 0.1) -> torch.Tensor:
    """Threshold at ``threshold x max``, drop 8-connected pieces under ``min_piece`` of the mass, recentre."""
    kernel = normalise(kernel)
    peak = kernel.amax(dim=(-2, -1), keepdim=True)
    kernel = torch.where(kernel >= threshold * peak, kernel, torch.zeros_like(kernel))
    labels = _components(kernel > 0)
    b, k, _ = kernel.shape
    piece_mass = torch.zeros(b, k * k + 1, device=kernel.device, dtype=kernel.dtype)
    piece_mass.scatter_add_(1, labels.flatten(1), kernel.flatten(1))
    share = piece_mass / piece_mass[:, 1:].sum(1, keepdim=True).clamp(min=1e-12)
    keep = torch.gather(share, 1, labels.flatten(1)).view(b, k, k) >= min_piece
    return recentre(normalise(kernel * keep))
