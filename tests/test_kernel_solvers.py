"""The estimator's and deconvolution's inner solvers against plain reference formulations of the same maths.

The solvers are written for speed (buffers reused, float masks, an FFT form of the kernel fit's normal matrix);
these tests pin them to the textbook forms, so a faster rewrite cannot change what they compute.
"""

from __future__ import annotations

import pytest
import torch

from deblurcli.kernel import prior
from deblurcli.kernel.differences import backward_divergence, forward_differences


def _image(seed: int, shape: tuple[int, ...] = (2, 40, 56)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_differences_match_roll_and_are_adjoint() -> None:
    x, gx, gy = _image(0), _image(1), _image(2)
    dx, dy = forward_differences(x)
    assert torch.equal(dx, x.roll(-1, dims=-1) - x)
    assert torch.equal(dy, x.roll(-1, dims=-2) - x)
    div = backward_divergence(gx, gy)
    torch.testing.assert_close(div, (gx.roll(1, dims=-1) - gx) + (gy.roll(1, dims=-2) - gy))
    # <D x, g> = <x, D^T g>: the FFT solvers rely on the divergence being the exact adjoint.
    torch.testing.assert_close((dx * gx + dy * gy).sum(), (x * div).sum(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("k", [prior.DENSE_MAX, prior.DENSE_MAX + 4])
def test_normal_operator_is_the_dense_normal_matrix(k: int) -> None:
    """Both forms (dense below ``DENSE_MAX``, FFT above) equal ``(A + gamma I) v`` with A gathered by lag."""
    auto = _image(3, (2, 2 * k - 1, 2 * k - 1))
    v = _image(4, (2, k, k))
    gamma = 0.7
    dense = torch.empty(2, k, k)
    for i1 in range(k):
        for j1 in range(k):
            lags = auto[:, i1 - torch.arange(k)[:, None] + k - 1, j1 - torch.arange(k)[None, :] + k - 1]
            dense[:, i1, j1] = (lags * v).sum(dim=(-2, -1)) + gamma * v[:, i1, j1]
    torch.testing.assert_close(prior._normal_operator(auto, k, gamma)(v), dense, rtol=1e-5, atol=1e-4)


def _latent_reference(y: torch.Tensor, kernel: torch.Tensor, lam: float) -> torch.Tensor:
    """Half-quadratic L0 splitting as Xu et al. write it: boolean masks, rolls, a complex division."""
    shape = (y.shape[-2], y.shape[-1])
    fk = prior.kernel_spectrum(kernel, shape)
    fdx, fdy = prior._diff_spectra(shape, y.device)
    num_data, den_data = fk.conj() * torch.fft.rfft2(y), fk.abs().square()
    den_grad = fdx.abs().square() + fdy.abs().square()
    x, beta = y, 2.0 * lam
    while beta < prior.BETA_MAX:
        gx, gy = x.roll(-1, dims=-1) - x, x.roll(-1, dims=-2) - x
        keep = (gx.square() + gy.square()) >= lam / beta
        gx, gy = gx * keep, gy * keep
        div = (gx.roll(1, dims=-1) - gx) + (gy.roll(1, dims=-2) - gy)
        x = torch.fft.irfft2((num_data + beta * torch.fft.rfft2(div)) / (den_data + beta * den_grad), s=shape)
        beta *= prior.BETA_GROWTH
    return x


def test_latent_l0_matches_the_reference_splitting() -> None:
    """On a cartoon (flat regions, strong edges: what L0 is for) the thresholds are far from every gradient, so
    the two must agree to rounding."""
    y = torch.zeros(2, 48, 64)
    y[0, 10:30, 12:40] = 0.8
    y[1, :, 30:] = 0.5
    y[1, 20:, :] += 0.3
    kernel = torch.zeros(2, 7, 7)
    kernel[0, 3, 1:6] = 0.2
    kernel[1, 1:6, 3] = 0.2
    blurred = torch.fft.irfft2(torch.fft.rfft2(y) * prior.kernel_spectrum(kernel, (48, 64)), s=(48, 64))
    torch.testing.assert_close(prior.latent_l0(blurred, kernel, 4e-3), _latent_reference(blurred, kernel, 4e-3),
                               rtol=0, atol=1e-4)


def test_solve_kernel_recovers_a_kernel_from_its_own_blur() -> None:
    """Given the sharp image, the least-squares fit is the kernel itself, in both operator forms."""
    for k in (9, 21):
        sharp = torch.nn.functional.avg_pool2d(_image(5, (2, 1, 96, 96)), 3, stride=1, padding=1)[:, 0]
        kernel = torch.zeros(2, k, k)
        kernel[0, k // 2, 2 : k - 2] = 1.0
        kernel[1, 2 : k - 2, k // 2] = 1.0
        kernel = prior.normalise(kernel)
        y = torch.fft.irfft2(torch.fft.rfft2(sharp) * prior.kernel_spectrum(kernel, (96, 96)), s=(96, 96))
        fit = prior.solve_kernel(sharp, y, torch.ones(96, 96), prior.normalise(torch.ones(2, k, k)), 1e-4,
                                 iters=200, positive_iters=50)
        torch.testing.assert_close(prior.normalise(fit), kernel, rtol=0, atol=0.02)
