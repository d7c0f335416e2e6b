"""Motion-blur synthesis: kernels, convolution, the photometric pipeline and reproducibility."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from deblurcli.blur import (
    BlurConfig,
    apply_kernels,
    linear_to_srgb,
    random_homography_paths,
    random_kernels,
    random_object_masks,
    srgb_to_linear,
    synthesize,
    synthesize_pair,
    warp_average,
)

#: Only the blur itself: no noise, no highlight boost, no JPEG, nothing left sharp, no warps.
PLAIN = BlurConfig(
    sharp_prob=0.0, noise_prob=0.0, saturation_prob=0.0, jpeg_prob=0.0, nonuniform_prob=0.0, linear_prob=1.0
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def texture(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth-ish random texture: blur must change it, and borders matter little."""
    x = torch.rand(n, 3, size // 4, size // 4, generator=gen(seed))
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------------------------------ kernels


def test_kernels_sum_to_one_are_nonnegative_centred_and_within_extent() -> None:
    cfg = BlurConfig()
    k = random_kernels(64, cfg, gen(0))
    assert k.shape == (64, 1, cfg.kernel_size, cfg.kernel_size)
    assert k.dtype == torch.float32
    assert torch.allclose(k.sum(dim=(1, 2, 3)), torch.ones(64), atol=1e-5)
    assert (k >= 0).all()
    grid = torch.arange(cfg.kernel_size, dtype=torch.float32) - cfg.kernel_size // 2
    cy = (k[:, 0].sum(2) * grid).sum(1)
    cx = (k[:, 0].sum(1) * grid).sum(1)
    assert cx.abs().max() < 1e-3 and cy.abs().max() < 1e-3  # centroid centred: pairs stay aligned
    support = k[:, 0] > 0
    rows = support.any(2).float()
    cols = support.any(1).float()
    height = rows.shape[1] - rows.argmax(1) - rows.flip(1).argmax(1)
    width = cols.shape[1] - cols.argmax(1) - cols.flip(1).argmax(1)
    side = torch.maximum(height, width).float()
    assert (side <= cfg.max_extent + 2).all()  # +2: bilinear splat touches one pixel on each side
    assert side.max() > 0.6 * cfg.max_extent and side.min() < 2 * cfg.min_extent + 3  # range is used


def test_kernels_are_reproducible_and_vary_with_seed() -> None:
    cfg = BlurConfig()
    a = random_kernels(8, cfg, gen(7))
    b = random_kernels(8, cfg, gen(7))
    c = random_kernels(8, cfg, gen(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])  # per-kernel draws, not one kernel repeated


def test_max_extent_is_configurable() -> None:
    cfg = BlurConfig(kernel_size=21, min_extent=3.0, max_extent=9.0)
    k = random_kernels(32, cfg, gen(1))
    assert k.shape[-1] == 21
    support = (k[:, 0] > 0).any(0).nonzero()
    assert (support - 10).abs().max() <= 9


@pytest.mark.parametrize(
    "bad",
    [dict(sharp_prob=1.5), dict(kernel_size=20), dict(max_extent=60.0), dict(jpeg_quality=(90, 60)),
     dict(exposure_fractions=(0.0,)), dict(shot_noise=(0.0, 1e-4))],
)
def test_config_rejects_out_of_range_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        BlurConfig(**bad)


# ------------------------------------------------------------------------------------------------ convolution


def test_apply_kernels_is_a_true_centred_convolution() -> None:
    x = texture(2, 32)
    delta = torch.zeros(2, 1, 5, 5)
    delta[:, 0, 2, 2] = 1
    for method in ("conv", "fft"):
        assert torch.allclose(apply_kernels(x, delta, method=method), x, atol=1e-5)
    # A tap right of centre moves content right: out[j] = in[j - 1].
    shift = torch.zeros(2, 1, 5, 5)
    shift[:, 0, 2, 3] = 1
    for method in ("conv", "fft"):
        out = apply_kernels(x, shift, method=method)
        assert torch.allclose(out[..., 1:], x[..., :-1], atol=1e-5)


def test_fft_and_grouped_conv_agree_and_preserve_flat_images() -> None:
    x = texture(3, 48)
    k = random_kernels(3, BlurConfig(kernel_size=25, max_extent=21.0), gen(2))
    a = apply_kernels(x, k, method="conv")
    b = apply_kernels(x, k, method="fft")
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, x, atol=1e-2)
    flat = torch.full((3, 3, 40, 40), 0.3)
    assert torch.allclose(apply_kernels(flat, k), flat, atol=1e-5)


def test_srgb_round_trip() -> None:
    x = torch.linspace(0, 1, 1001)
    assert torch.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-5)
    assert abs(float(linear_to_srgb(torch.tensor(0.5))) - 0.7354) < 1e-3


# ------------------------------------------------------------------------------------------------ synthesize


def test_synthesize_shape_dtype_device_range_and_reproducibility() -> None:
    x = texture(4, 64)
    cfg = BlurConfig(jpeg_prob=0.5)
    a = synthesize(x, cfg, gen(3))
    b = synthesize(x, cfg, gen(3))
    c = synthesize(x, cfg, gen(4))
    assert a.shape == x.shape and a.dtype == torch.float32 and a.device == x.device
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert (a - x).abs().mean() > 1e-3


def test_sharp_samples_are_returned_unchanged() -> None:
    x = texture(3, 32)
    assert torch.equal(synthesize(x, dataclasses.replace(BlurConfig(), sharp_prob=1.0), gen(0)), x)


def test_linear_light_blur_differs_from_srgb_blur_the_way_physics_says() -> None:
    # Black/white edge, mostly horizontal blur: averaging light (linear) gives a brighter transition than
    # averaging gamma-encoded values.
    x = torch.zeros(4, 3, 64, 64)
    x[..., 32:] = 1.0
    lin = synthesize(x, PLAIN, gen(5))
    srgb = synthesize(x, dataclasses.replace(PLAIN, linear_prob=0.0), gen(5))
    assert not torch.allclose(lin, srgb, atol=1e-3)
    band = slice(20, 44)
    assert lin[..., band].mean() > srgb[..., band].mean() + 0.02


@pytest.mark.parametrize("linear", [0.0, 1.0])
def test_noise_level_stays_within_the_configured_range(linear: float) -> None:
    grey = 0.5
    cfg = dataclasses.replace(PLAIN, noise_prob=1.0, linear_prob=linear)
    x = torch.full((16, 3, 64, 64), grey)
    y = synthesize(x, cfg, gen(6))
    std = (y - grey).flatten(1).std(dim=1)
    if linear:
        level = float(srgb_to_linear(torch.tensor(grey)))
        slope = 1.055 / 2.4 * level ** (1 / 2.4 - 1)  # d sRGB / d linear at the grey level
    else:
        level, slope = grey, 1.0
    lo = slope * math.sqrt(cfg.shot_noise[0] * level + cfg.read_noise[0])
    hi = math.hypot(slope * math.sqrt(cfg.shot_noise[1] * level + cfg.read_noise[1]), cfg.srgb_noise[1])
    assert (std > 0.9 * lo).all() and (std < 1.1 * hi).all()
    assert std.max() > 2 * std.min()  # levels are drawn per sample, not fixed
    quiet = synthesize(x, PLAIN, gen(6))
    assert (quiet - grey).abs().max() < 1e-4


def test_saturated_highlights_make_brighter_streaks() -> None:
    x = torch.full((4, 3, 64, 64), 0.05)
    x[..., 28:36, 28:36] = 1.0  # a clipped light
    plain = synthesize(x, PLAIN, gen(9))
    boosted = synthesize(x, dataclasses.replace(PLAIN, saturation_prob=1.0), gen(9))
    assert (boosted.sum(dim=(1, 2, 3)) > plain.sum(dim=(1, 2, 3)) * 1.05).all()


def test_saturation_boosts_only_the_clipped_channels() -> None:
    x = torch.full((2, 3, 64, 64), 0.05)
    x[:, 0, 28:36, 28:36] = 1.0  # a saturated red light: only red clips
    on = dataclasses.replace(PLAIN, saturation_prob=1.0, saturation_alpha=(1.5, 1.5))
    plain, boosted = synthesize(x, PLAIN, gen(3)), synthesize(x, on, gen(3))
    gain = (boosted - plain).sum(dim=(2, 3))
    assert (gain[:, 0] > 1.0).all() and torch.allclose(gain[:, 1:], torch.zeros_like(gain[:, 1:]))
    whole = synthesize(x, dataclasses.replace(on, saturation_per_channel=False), gen(3))
    assert ((whole - plain).sum(dim=(2, 3))[:, 1:] > 1.0).all()  # the old model whitened the glow


def test_jpeg_changes_the_output_reproducibly() -> None:
    x = texture(2, 64)
    plain = synthesize(x, PLAIN, gen(1))
    cfg = dataclasses.replace(PLAIN, jpeg_prob=1.0, jpeg_quality=(30, 40))
    a = synthesize(x, cfg, gen(1))
    assert torch.equal(a, synthesize(x, cfg, gen(1)))
    assert 1e-3 < (a - plain).abs().mean() < 0.05


# ------------------------------------------------------------------------------------------------ non-uniform


def test_rotation_warp_blurs_corners_more_than_the_centre() -> None:
    coarse = torch.rand(1, 3, 17, 17, generator=gen(0))
    x = torch.nn.functional.interpolate(coarse, size=(65, 65), mode="bicubic")
    angles = torch.linspace(-0.08, 0.08, 9)
    hm = torch.zeros(1, 9, 3, 3)
    hm[0, :, 0, 0] = hm[0, :, 1, 1] = torch.cos(angles)
    hm[0, :, 0, 1], hm[0, :, 1, 0] = -torch.sin(angles), torch.sin(angles)
    hm[0, :, 2, 2] = 1
    change = (warp_average(x, hm) - x).abs().mean(1)[0]
    centre = change[28:37, 28:37].mean()  # the rotation centre barely moves
    assert change[:8, :8].mean() > 4 * centre and change[-8:, -8:].mean() > 4 * centre


def test_homography_paths_move_corners_by_the_drawn_amount_and_vary_in_space() -> None:
    cfg = BlurConfig(nonuniform_px=(4.0, 10.0))
    h, w = 96, 128
    hm = random_homography_paths(32, cfg, gen(2), h, w)
    assert hm.shape == (32, cfg.nonuniform_copies, 3, 3)
    assert torch.equal(hm, random_homography_paths(32, cfg, gen(2), h, w))
    half = math.hypot(h, w) / 2
    pts = torch.tensor([[0.0, 0.0, 1.0], [-w / 2, -h / 2, 1.0], [w / 2, -h / 2, 1.0], [-w / 2, h / 2, 1.0],
                        [w / 2, h / 2, 1.0]])
    pts[:, :2] /= half
    moved = torch.einsum("nmij,pj->nmpi", hm, pts)
    shift = ((moved[..., :2] / moved[..., 2:] - pts[:, :2]).norm(dim=-1) * half).amax(1)  # (n, points)
    corner = shift[:, 1:].amax(1)
    assert (corner > 4.0 - 0.2).all() and (corner < 10.0 + 0.2).all()
    assert (shift[:, 0] < corner).float().mean() > 0.8  # the centre moves less than the corners
    assert shift[:, 0].mean() < 0.5 * corner.mean()


def test_synthesize_with_nonuniform_blur_differs_spatially_from_uniform() -> None:
    x = texture(4, 96)
    uniform = synthesize(x, PLAIN, gen(11))
    varying = synthesize(x, dataclasses.replace(PLAIN, nonuniform_prob=1.0), gen(11))
    diff = (varying - uniform).abs().mean(1)  # same kernels (same draws), so this is the warp's part
    centre = diff[:, 40:56, 40:56].mean()
    corners = torch.stack([diff[:, :16, :16], diff[:, :16, -16:], diff[:, -16:, :16], diff[:, -16:, -16:]])
    corners = corners.mean()
    assert corners > 1.5 * centre > 0


# ------------------------------------------------------------------------------------------------ valsets


@pytest.fixture()
def photos(tmp_path):
    """Two small photos: a landscape JPEG and a portrait PNG."""
    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    rgb = (texture(1, 96, seed=3)[0].permute(1, 2, 0).numpy() * 255).astype("uint8")
    Image.fromarray(rgb[:64]).save(src / "land.jpg", quality=92)
    Image.fromarray(rgb[:, :40]).save(src / "port.png")
    (src / "notes.txt").write_text("not a photo")
    return src


def _tree_bytes(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("family", ["synthetic", "heldout", "sharp", "dynamic"])
def test_valsets_are_deterministic_pairs_in_the_eval_layout(photos, tmp_path, family: str) -> None:
    import numpy as np
    from PIL import Image

    from deblurcli.pairs import find_pairs
    from deblurcli.valsets import build_valset

    a = build_valset(photos, tmp_path / "a", family=family, seed=0)
    build_valset(photos, tmp_path / "b", family=family, seed=0)
    build_valset(photos, tmp_path / "c", family=family, seed=1)
    assert [p.name for p in a] == ["land.png", "port.png"]
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "b")
    assert len(find_pairs(tmp_path / "a").pairs) == 2
    for blur_path in a:
        blurry, sharp = Image.open(blur_path), Image.open(blur_path.parent.parent / "sharp" / blur_path.name)
        assert blurry.mode == sharp.mode == "RGB" and blurry.size == sharp.size
        x, y = np.asarray(blurry, dtype=float), np.asarray(sharp, dtype=float)
        psnr = 10 * np.log10(255**2 / max(np.mean((x - y) ** 2), 1e-12))
        if family == "sharp":
            assert blur_path.read_bytes() == (blur_path.parent.parent / "sharp" / blur_path.name).read_bytes()
        else:
            assert 15 < psnr < 40
    source = np.asarray(Image.open(photos / "port.png"))
    target = np.asarray(Image.open(tmp_path / "a" / "sharp" / "port.png"))
    if family == "dynamic":  # the object is pasted into the sharp side; the rest is the photo
        pasted = (target != source).any(-1)
        assert 0.002 < pasted.mean() < 0.5
    else:
        assert np.array_equal(target, source)
    if family != "sharp":
        other = (tmp_path / "c" / "blur" / "land.png").read_bytes()
        assert (tmp_path / "a" / "blur" / "land.png").read_bytes() != other


def test_heldout_kernels_have_the_protocol_sizes_and_sum_to_one() -> None:
    import numpy as np

    from deblurcli.valsets import heldout_kernels

    sizes = [13, 17, 21, 27]
    k = heldout_kernels(np.random.default_rng(0), sizes)
    assert np.allclose(k.sum(axis=(1, 2)), 1, atol=1e-5) and (k >= 0).all()
    for kernel, size in zip(k, sizes):
        on = kernel > 0.02 * kernel.max()
        side = max(np.ptp(np.nonzero(on.any(1))[0]), np.ptp(np.nonzero(on.any(0))[0])) + 1
        assert size - 3 <= side <= size + 3


def test_fit_crop_keeps_orientation_and_small_photos() -> None:
    import numpy as np

    from deblurcli.valsets import fit_crop

    assert fit_crop(np.zeros((600, 800, 3))).shape == (512, 768, 3)
    assert fit_crop(np.zeros((800, 600, 3))).shape == (768, 512, 3)
    assert fit_crop(np.zeros((300, 200, 3))).shape == (300, 200, 3)


def test_valset_errors_are_one_line_user_errors(photos, tmp_path) -> None:
    from deblurcli.errors import PairsError
    from deblurcli.valsets import build_valset

    with pytest.raises(PairsError, match="does not exist"):
        build_valset(tmp_path / "missing", tmp_path / "o1", family="sharp", seed=0)
    with pytest.raises(PairsError, match="unknown validation family"):
        build_valset(photos, tmp_path / "o2", family="gopro", seed=0)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("precious")
    with pytest.raises(PairsError, match="not a validation set"):
        build_valset(photos, busy, family="sharp", seed=0)
    assert (busy / "thesis.tex").read_text() == "precious"


def test_make_valsets_script_skips_cleanly_without_data(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "make_valsets.py"
    args = [sys.executable, str(script), "--src", str(tmp_path / "absent"), "--out", str(tmp_path / "o")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "skipped" in done.stdout
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------ moving objects


def test_without_moving_objects_the_pair_is_the_sharp_photo_and_synthesize():
    x = texture(3, 64, seed=2)
    target, blurry = synthesize_pair(x, BlurConfig(), gen(8))
    assert torch.equal(target, x)
    assert torch.equal(blurry, synthesize(x, BlurConfig(), gen(8)))


def test_synthesize_refuses_moving_objects_whose_target_it_cannot_return():
    with pytest.raises(ValueError, match="synthesize_pair"):
        synthesize(texture(1), BlurConfig(dynamic_prob=0.5), gen(0))


def test_object_masks_are_soft_blobs_of_the_drawn_size():
    cfg = BlurConfig(object_radius=(0.2, 0.3))
    masks = random_object_masks(16, 96, 128, cfg, gen(4))
    assert masks.shape == (16, 1, 96, 128) and masks.min() >= 0 and masks.max() <= 1
    area = masks.sum(dim=(1, 2, 3)) / (96 * 128)
    # A blob of radius 0.2-0.3 of 96 px (aspect 0.5-1, outline +-40 %), possibly cut by the border.
    assert bool((area > 0.005).all()) and bool((area < 0.45).all())
    soft = ((masks > 0.01) & (masks < 0.99)).float().mean()
    assert 0 < soft < 0.05  # edges are about a pixel wide, not a blur of the whole mask


def test_a_moving_object_is_pasted_into_the_target_and_blurred_by_its_own_kernel_over_a_still_background():
    x = texture(2, 96, seed=5)
    cfg = dataclasses.replace(PLAIN, dynamic_prob=1.0, static_background_prob=1.0, linear_prob=0.0)
    target, blurry = synthesize_pair(x, cfg, gen(12))
    # The same draws as synthesize_pair makes, to know where the object is and how it moved.
    g = gen(12)
    synthesize(x, PLAIN, g)
    torch.rand((2, 2), generator=g)
    masks = random_object_masks(2, 96, 96, cfg, g)
    object_kernels = random_kernels(2, cfg, g)
    texture_ = x.roll(1, dims=0).flip(-1)
    assert torch.allclose(target, masks * texture_ + (1 - masks) * x)
    smeared = apply_kernels(torch.cat([masks * texture_, masks], dim=1), object_kernels)
    expected = (smeared[:, :3] + (1 - smeared[:, 3:]) * x).clamp(0, 1)
    assert torch.allclose(blurry, expected, atol=1e-5)
    # Far from the object the still background is untouched; on it, the input is not the target.
    untouched = (smeared[:, 3:] < 1e-6).expand_as(x)
    assert bool(untouched.any()) and torch.allclose(blurry[untouched], x[untouched], atol=1e-5)
    inside = masks > 0.99
    assert (blurry - target).abs()[inside.expand_as(x)].mean() > 0.01


def test_moving_objects_are_reproducible_and_spare_the_samples_left_sharp():
    x = texture(8, 64, seed=1)
    cfg = BlurConfig(dynamic_prob=0.7, sharp_prob=0.3, static_background_prob=0.5)
    a, b = synthesize_pair(x, cfg, gen(1)), synthesize_pair(x, cfg, gen(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    kept = (a[1] == x).flatten(1).all(1)
    pasted = (a[0] != x).flatten(1).any(1)
    assert bool(kept.any()) and bool(pasted.any()) and bool((~kept & ~pasted).any())  # every kind in one batch
    assert not bool((kept & pasted).any())
