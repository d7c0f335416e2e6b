"""Non-blind deconvolution (deblurcli.kernel.deconv), its boundary extension and the noise estimate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deblurcli.engine import deblur_array, prepare_model
from deblurcli.kernel.boundary import extend_periodic, fast_fft_size, mirror_index
from deblurcli.kernel.deconv import (
    Deconvolver,
    _otf,
    _solve,
    deconvolve,
    deconvolve_grid,
    shrinkage_table,
    weight_for_noise,
)
from deblurcli.kernel.noise import estimate_noise
from deblurcli.tiling import TilePlan, plan_tiles


def scene(size: int, seed: int = 0, channels: int = 3) -> torch.Tensor:
    """A sharp synthetic photo: random flat rectangles (edges) over a smooth gradient, values in [0.1, 0.9]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    img = 0.3 + 0.2 * torch.sin(3 * xx + 2 * yy)[None].repeat(channels, 1, 1)
    for _ in range(40):
        y0, x0 = (torch.randint(0, size - 4, (2,), generator=g)).tolist()
        h, w = (torch.randint(3, size // 3, (2,), generator=g)).tolist()
        img[:, y0 : y0 + h, x0 : x0 + w] = torch.rand(channels, 1, 1, generator=g) * 0.8 + 0.1
    return img


def motion_kernel(size: int = 9, angle: float = 0.5) -> torch.Tensor:
    """A straight motion streak of ``size`` px, normalised (symmetric about its centre, so centred)."""
    k = torch.zeros(size, size)
    c = size // 2
    for t in torch.linspace(-c, c, 4 * size):
        y, x = c + float(t) * math.sin(angle), c + float(t) * math.cos(angle)
        k[round(y), round(x)] += 1
    return k / k.sum()


def blur_valid(sharp: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """'Valid' convolution: the blurry photo of a scene that continues beyond it (the realistic boundary)."""
    weight = kernel.flip(0, 1)[None, None].repeat(sharp.shape[0], 1, 1, 1)
    return F.conv2d(sharp[None], weight, groups=sharp.shape[0])[0]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * math.log10(float((a - b).double().square().mean()))


Pair = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def blurry_pair(size: int, ksize: int = 9, noise: float = 0.01, seed: int = 0) -> Pair:
    """(blurry, sharp crop aligned with it, kernel); blurry has 1 % noise by default."""
    k = motion_kernel(ksize)
    sharp = scene(size + ksize - 1, seed)
    r = ksize // 2
    blurry = blur_valid(sharp, k) + noise * torch.randn(3, size, size, generator=torch.Generator().manual_seed(seed))
    return blurry.clamp(0, 1), sharp[:, r:-r, r:-r], k


# --- boundary -----------------------------------------------------------------------------------


def test_fast_fft_size_is_5_smooth_and_minimal() -> None:
    assert [fast_fft_size(n) for n in (1, 7, 97, 481, 1025)] == [1, 8, 100, 486, 1080]


def test_mirror_index_matches_reflect_padding_and_wraps_far_out() -> None:
    assert mirror_index(torch.arange(-3, 8), 5).tolist() == [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]
    assert mirror_index(torch.tensor([0, 5]), 1).tolist() == [0, 0]


def test_extension_keeps_the_image_and_is_smooth_across_every_seam() -> None:
    x = scene(64)
    canvas = extend_periodic(x, 100, 90)
    assert canvas.shape == (3, 100, 90)
    assert torch.equal(canvas[:, :64, :64], x)
    # Periodic neighbours differ no more than neighbours inside the photo do (no hard edge at the seams).
    inside = max(float(x.diff(dim=-1).abs().max()), float(x.diff(dim=-2).abs().max()))
    seam_y = float((canvas[:, 0] - canvas[:, -1]).abs().max())
    seam_x = float((canvas[:, :, 0] - canvas[:, :, -1]).abs().max())
    assert max(seam_y, seam_x) <= inside + 1e-6


# --- the solver -----------------------------------------------------------------------------------


def test_shrinkage_table_matches_brute_force_minimisation() -> None:
    alpha, beta = 2 / 3, 8.0
    table = shrinkage_table(alpha, beta).double()
    n = table.numel()
    candidates = torch.linspace(-2.5, 2.5, 200001, dtype=torch.float64)
    for v in (-1.3, -0.4, -0.05, 0.0, 0.2, 0.35, 0.9, 1.7):
        best = candidates[(candidates.abs() ** alpha + 0.5 * beta * (candidates - v) ** 2).argmin()]
        index = round(v * (n // 2) / 2.0) + n // 2
        assert abs((v - float(table[index])) - float(best)) < 1e-3, v


def test_true_kernel_deconvolution_gains_several_db() -> None:
    blurry, sharp, k = blurry_pair(128, ksize=11)
    out = deconvolve(blurry, k, noise=0.01)
    assert out.shape == blurry.shape and out.dtype == torch.float32
    assert psnr(out, sharp) > psnr(blurry, sharp) + 4.0


def test_the_prior_on_opponent_colour_axes_beats_one_per_channel() -> None:
    """A photo's channels share their edges (here: one grey scene under a warm tint) while their noise is
    independent: shrinking gradients on luminance and colour-opponent axes gains about a dB over shrinking
    R, G and B apart, with the same data term and weight."""
    k = motion_kernel(11)
    for seed in range(2):
        sharp = (scene(138, seed, channels=1) * torch.tensor([1.05, 1.0, 0.9])[:, None, None]).clamp(0, 1)
        noise = 0.01 * torch.randn(3, 128, 128, generator=torch.Generator().manual_seed(seed))
        blurry, truth = (blur_valid(sharp, k) + noise).clamp(0, 1), sharp[:, 5:-5, 5:-5]
        apart = psnr(deconvolve(blurry, k, noise=0.01, opponent=False), truth)
        assert psnr(deconvolve(blurry, k, noise=0.01), truth) > apart + 0.5


def test_no_wraparound_ringing_at_the_borders() -> None:
    """The 12 px border band gains clearly too, not much less than the interior; a plain FFT solve (no
    extension: the photo's opposite edges treated as neighbours) rings there and loses against the input."""
    blurry, sharp, k = blurry_pair(128, ksize=11, seed=5)
    band = torch.ones(128, 128, dtype=torch.bool)
    band[12:-12, 12:-12] = False

    def gain(out: torch.Tensor, where: torch.Tensor) -> float:
        def err(x: torch.Tensor) -> float:
            return float((x - sharp).square().mean(0)[where].mean())

        return 10 * math.log10(err(blurry) / err(out))

    ours = deconvolve(blurry, k, noise=0.01)
    assert gain(ours, band) > 3.0
    assert gain(ours, ~band) - gain(ours, band) < 8.0
    naive = _solve(blurry, torch.ones_like(blurry), _otf(k, 128, 128), weight_for_noise(0.01), 2 / 3).clamp(0, 1)
    assert gain(naive, band) < 0.0


def test_delta_kernel_returns_the_input() -> None:
    x = scene(96)
    for k in (torch.ones(1, 1), F.pad(torch.ones(1, 1), (1, 1, 1, 1))):
        assert psnr(deconvolve(x, k, noise=0.002), x) > 40.0


def test_sixteen_bit_steps_survive() -> None:
    """Float32 throughout: steps of one 16-bit level are not rounded away (no 8-bit quantisation)."""
    ramp = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 64, 64) / 65535 + 0.3
    out = deconvolve(ramp, torch.ones(1, 1), weight=1e-9)
    assert float((out - ramp).abs().max()) < 2e-5


@pytest.mark.parametrize("channels", [1, 3])
def test_clipped_highlights_do_not_ring(channels: int) -> None:
    """A light far brighter than white is blurred and clipped: masking the clipped pixels out of the data term
    keeps the dark halo around it small; trusting them (no mask) digs a much deeper one. In colour (the prior
    on opponent axes) too, with a lamp clipped in two channels of three."""
    size, ksize = 128, 11
    k = motion_kernel(ksize, 0.3)
    sharp = torch.full((channels, size + ksize - 1, size + ksize - 1), 0.4)
    sharp[:, 60:78, 60:78] = 4.0  # a lamp, 4x white before clipping
    if channels == 3:
        sharp[2, 60:78, 60:78] = 0.6  # a warm lamp: its blue channel is not clipped
    blurry = blur_valid(sharp, k).clamp(0, 1)
    r = ksize // 2
    truth = sharp[:, r:-r, r:-r].clamp(0, 1)
    ring = torch.zeros(size, size, dtype=torch.bool)
    ring[40:92, 40:92] = True
    ring[52:80, 52:80] = False  # the neighbourhood of the lamp, not the lamp

    def halo(mask_saturated: bool) -> float:
        out = deconvolve(blurry, k, noise=0.005, mask_saturated=mask_saturated)
        return float((truth - out)[:, ring].clamp(min=0).max())

    masked, unmasked = halo(True), halo(False)
    assert masked < 0.1
    assert unmasked > 2 * masked


def test_weight_for_noise_grows_with_noise() -> None:
    assert weight_for_noise(0.0) == weight_for_noise(0.001) > 0
    assert weight_for_noise(0.005) < weight_for_noise(0.01) < weight_for_noise(0.03)


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError):
        deconvolve(torch.rand(8, 8), torch.ones(1, 1))
    with pytest.raises(ValueError):
        deconvolve(torch.rand(1, 8, 8), torch.ones(2, 2))
    with pytest.raises(ValueError):
        Deconvolver(torch.zeros(3, 3))


# --- tiled engine -----------------------------------------------------------------------------------


def test_engine_tiles_match_the_whole_image() -> None:
    blurry, _, k = blurry_pair(192, ksize=9, seed=5)
    rgb = blurry.permute(1, 2, 0).numpy()
    model = prepare_model(Deconvolver(k, noise=0.01), torch.device("cpu"))
    assert model.tile_margin >= k.shape[0] and model.size_multiple == 1
    whole = deblur_array(model, rgb, device="cpu", plan=TilePlan(tile=0))
    tiled = deblur_array(model, rgb, device="cpu", plan=TilePlan(tile=128, overlap=16))
    assert tiled.shape == rgb.shape and tiled.dtype == np.float32
    mse = float(np.mean((whole.astype(np.float64) - tiled) ** 2))
    assert -10 * math.log10(mse) > 45.0


def test_engine_border_mirror_is_not_taken_as_data() -> None:
    """The engine mirrors the photo by tile_margin at its borders; the Deconvolver recognises that band and
    solves the edge as an unknown boundary, exactly as deconvolve() does on the bare photo."""
    blurry, _, k = blurry_pair(96, ksize=9, seed=9)
    model = prepare_model(Deconvolver(k, noise=0.01), torch.device("cpu"))
    whole = deblur_array(model, blurry.permute(1, 2, 0).numpy(), device="cpu", plan=TilePlan(tile=0))
    direct = deconvolve(blurry, k, noise=0.01).permute(1, 2, 0).numpy()
    assert np.abs(whole - direct).max() < 1e-5
    real = blurry + 0.0  # a tile whose margins hold real (noisy) pixels keeps them as data
    assert model._mirrored(real) == (0, 0, 0, 0)


def test_auto_tile_plan_copes_with_a_module_without_layers() -> None:
    """The engine's memory probe finds no leaf layers inside the Deconvolver and falls back to a small
    network's estimate; the plan must still be a usable tile."""
    model = Deconvolver(motion_kernel(9), noise=0.01)
    plan = plan_tiles(model, torch.device("cpu"), tile=None)
    assert plan.tile >= 2 * model.tile_margin + plan.overlap + 32


def test_deconvolver_forward_batches_and_reports_config() -> None:
    k = motion_kernel(7)
    model = Deconvolver(k, noise=0.01)
    x = torch.rand(2, 3, 40, 48)
    out = model(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.allclose(out[1], deconvolve(x[1], k, noise=0.01))
    assert model.config["kernel_size"] == 7 and model.config["kind"] == "deconvolution"


# --- spatially varying --------------------------------------------------------------------------------


def test_grid_with_one_kernel_matches_the_whole_image() -> None:
    blurry, _, k = blurry_pair(160, ksize=9, seed=6)
    boxes = [(0, 0, 96, 96), (0, 64, 96, 96), (64, 0, 96, 96), (64, 64, 96, 96)]
    grid = deconvolve_grid(blurry, [k] * 4, boxes, noise=0.01)
    assert psnr(grid, deconvolve(blurry, k, noise=0.01)) > 40.0


def test_grid_uses_each_regions_own_kernel() -> None:
    """Left half blurred one way, right half another: the grid beats either single kernel."""
    size = 128
    ka, kb = motion_kernel(9, 0.0), motion_kernel(9, math.pi / 2)
    sharp = scene(size + 8, seed=7)
    left, right = blur_valid(sharp, ka), blur_valid(sharp, kb)
    blurry = torch.cat([left[:, :, : size // 2], right[:, :, size // 2 :]], dim=2)
    truth = sharp[:, 4:-4, 4:-4]
    boxes = [(0, 0, size, size // 2 + 8), (0, size // 2 - 8, size, size // 2 + 8)]
    grid = deconvolve_grid(blurry, [ka, kb], boxes, noise=0.005)
    single = max(psnr(deconvolve(blurry, k, noise=0.005), truth) for k in (ka, kb))
    assert psnr(grid, truth) > single + 1.0


def test_grid_rejects_uncovered_pixels_and_mismatched_lists() -> None:
    x = torch.rand(3, 32, 32)
    with pytest.raises(ValueError, match="cover"):
        deconvolve_grid(x, [torch.ones(1, 1)], [(0, 0, 16, 32)], noise=0.01)
    with pytest.raises(ValueError, match="one kernel per box"):
        deconvolve_grid(x, [torch.ones(1, 1)] * 2, [(0, 0, 32, 32)], noise=0.01)


# --- noise ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.01, 0.02])
def test_noise_estimate_within_20_percent(sigma: float) -> None:
    blurry, _, _ = blurry_pair(160, ksize=9, noise=0.0, seed=8)
    noisy = blurry + sigma * torch.randn(blurry.shape, generator=torch.Generator().manual_seed(1))
    assert estimate_noise(noisy.clamp(0, 1)) == pytest.approx(sigma, rel=0.2)


def test_noise_estimate_ignores_clipped_areas_and_tiny_images() -> None:
    x = torch.rand(3, 64, 64) * 0.02 + 0.5
    x[:, :, :32] = 1.0  # half the photo is blown-out sky
    assert estimate_noise(x) == pytest.approx(0.02 / math.sqrt(12), rel=0.25)
    assert estimate_noise(torch.rand(2, 2)) == 0.0
