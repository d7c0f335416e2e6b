"""bench/camera_shake.py and its held-out kernel family (bench/shake_kernels.py): fast checks on tiny inputs."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import camera_shake  # noqa: E402
import shake_kernels  # noqa: E402

from deblurcli.blur import BlurConfig, apply_kernels, random_kernels  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


def top_mass_share(kernel: np.ndarray, fraction: float = 0.1) -> float:
    """Share of the mass in the brightest ``fraction`` of the support: high where the camera dwelt."""
    values = np.sort(kernel[kernel > 0].ravel())[::-1]
    n = max(1, round(fraction * values.size))
    return float(values[:n].sum() / values.sum())


@pytest.mark.parametrize("size", [13, 17, 20, 27])
def test_kernels_are_normalised_centred_and_of_the_drawn_extent(size: int) -> None:
    rng = np.random.default_rng(size)
    for _ in range(5):
        k = shake_kernels.shake_kernel(rng, size)
        assert k.dtype == np.float32 and k.ndim == 2 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
        assert (k >= 0).all() and abs(float(k.sum()) - 1) < 1e-5
        c = (k.shape[0] - 1) / 2
        ys, xs = np.mgrid[: k.shape[0], : k.shape[1]]
        assert abs(float((k * xs).sum()) - c) < 1e-3 and abs(float((k * ys).sum()) - c) < 1e-3
        assert size - 1 <= shake_kernels.kernel_extent(k) <= size
        # cropped to the support: some tap on the outermost ring is non-zero
        assert k[0].any() or k[-1].any() or k[:, 0].any() or k[:, -1].any()


def test_sizes_outside_the_family_are_refused() -> None:
    with pytest.raises(ValueError, match="13..27"):
        shake_kernels.shake_kernel(np.random.default_rng(0), 29)


def test_kernels_are_deterministic_per_seed() -> None:
    a, b, c = (shake_kernels.sample_kernels(s, 4) for s in (7, 7, 8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_kernels_differ_from_the_training_family() -> None:
    """Uneven speed (dwell dots) puts more mass in the brightest pixels than constant-speed Boracchi-Foi paths."""
    ours = shake_kernels.sample_kernels(3, 30)
    cfg = dataclasses.replace(BlurConfig(), min_extent=13.0, max_extent=27.0, kernel_size=33)
    theirs = random_kernels(30, cfg, torch.Generator().manual_seed(3))[:, 0].numpy()
    ours_share = np.median([top_mass_share(k) for k in ours])
    theirs_share = np.median([top_mass_share(k) for k in theirs])
    assert ours_share > theirs_share + 0.04, (ours_share, theirs_share)


def test_valid_blur_is_the_interior_of_a_true_convolution() -> None:
    rng = np.random.default_rng(0)
    sharp = rng.random((40, 52, 3)).astype(np.float32)
    kernel = shake_kernels.shake_kernel(rng, 13)
    k, r = kernel.shape[0], (kernel.shape[0] - 1) // 2
    out = camera_shake.blur_valid(sharp, kernel)
    assert out.shape == (40 - k + 1, 52 - k + 1, 3)
    image = torch.from_numpy(sharp).permute(2, 0, 1)[None]
    full = apply_kernels(image, torch.from_numpy(kernel)[None, None], method="conv")
    interior = full[0].permute(1, 2, 0).numpy()[r : 40 - r, r : 52 - r]
    np.testing.assert_allclose(out, interior, atol=1e-5)


def test_blurry_photo_is_aligned_with_its_target() -> None:
    """A point of the sharp photo lands, blurred, with its centroid on the same point of the target."""
    rng = np.random.default_rng(5)
    kernel = shake_kernels.shake_kernel(rng, 25)
    r = (kernel.shape[0] - 1) // 2
    sharp = np.zeros((80, 90, 3), np.float32)
    sharp[40, 47] = 1.0
    spot = camera_shake.blur_valid(sharp, kernel)[..., 0]
    ys, xs = np.mgrid[: spot.shape[0], : spot.shape[1]]
    assert abs(float((spot * ys).sum()) - (40 - r)) < 1e-3 and abs(float((spot * xs).sum()) - (47 - r)) < 1e-3
    photo = synthetic_photos()["alpha"]
    blurry, kernel, target = camera_shake.degrade(photo, "alpha", 0)
    r = (kernel.shape[0] - 1) // 2
    assert blurry.shape == target.shape and np.array_equal(target, photo[r : 88 - r, r : 88 - r])
    assert np.array_equal(blurry, np.round(blurry * 255) / 255)  # 8-bit levels, as saved


def test_clean_and_jpeg_variants_degrade_the_same_blur_differently(monkeypatch: pytest.MonkeyPatch) -> None:
    photo = synthetic_photos()["alpha"]
    base, kernel, target = camera_shake.degrade(photo, "alpha", 0)
    monkeypatch.setitem(camera_shake.DEGRADATION, "noise", 0.0)
    clean, clean_kernel, _ = camera_shake.degrade(photo, "alpha", 0)
    assert np.array_equal(kernel, clean_kernel)  # the same photo stream: the same blur
    assert np.abs(clean - base).mean() > 0.004  # 1 % noise gone
    monkeypatch.setitem(camera_shake.DEGRADATION, "jpeg", 30)
    compressed, _, _ = camera_shake.degrade(photo, "alpha", 0)
    assert compressed.shape == target.shape and not np.array_equal(compressed, clean)
    assert np.array_equal(compressed, np.round(compressed * 255) / 255)


def synthetic_photos() -> dict[str, np.ndarray]:
    """Two smooth 8-bit 'photos' with edges (blur lowers their PSNR a lot)."""
    photos = {}
    for i, name in enumerate(("alpha", "beta")):
        g = torch.Generator().manual_seed(i)
        coarse = torch.rand(1, 3, 10, 10, generator=g)
        img = torch.nn.functional.interpolate(coarse, size=(88, 88), mode="nearest")[0].permute(1, 2, 0).numpy()
        photos[name] = np.round(img * 255) / 255
    return photos


def test_bench_reports_gains_failures_and_the_sharp_check() -> None:
    photos = synthetic_photos()
    seen: list[str] = []
    kernels: list[tuple[int, int]] = []

    def identity(rgb: np.ndarray) -> np.ndarray:
        return rgb

    def harms_first(rgb: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """Darkens the first blurry photo it sees by 0.1 (a clear failure), leaves everything else alone."""
        seen.append("x")
        return (np.clip(rgb - 0.1, 0, 1) if len(seen) == 1 else rgb), {"calls": float(len(seen))}

    def oracle(rgb: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        kernels.append(kernel.shape)
        return rgb

    def broken(rgb: np.ndarray) -> np.ndarray:
        raise RuntimeError("not today")

    def gated(rgb: np.ndarray) -> tuple[np.ndarray, dict[str, str]]:
        return rgb, {"ran": "unchanged"}

    methods = {"identity": identity, "stub": harms_first, "oracle": camera_shake.TrueKernel(oracle), "broken": broken,
               "gated": gated}
    result = camera_shake.run_bench(photos, methods, seed=1, log=None)
    s = result["summary"]
    assert s["identity"]["mean_gain_psnr"] == 0.0 and s["identity"]["failures"] == 0
    assert s["identity"]["below_minus_half_db"] == 0 and s["identity"]["photos"] == 2
    assert s["stub"]["failures"] == 1 and s["stub"]["below_minus_half_db"] == 1
    assert s["stub"]["worst_photo"] == "alpha" and s["stub"]["worst_gain_psnr"] < -0.5
    assert s["stub"]["mean_gain_psnr"] == pytest.approx(s["stub"]["worst_gain_psnr"] / 2)
    assert s["broken"]["photos"] == 0 and len(s["broken"]["errors"]) == 2 and "not today" in s["broken"]["errors"][0]
    rows = result["photos"]
    assert [r["photo"] for r in rows] == ["alpha", "beta"]
    assert rows[0]["input"]["psnr"] < 30  # the blur is real
    assert rows[0]["methods"]["stub"]["info"] == {"calls": 1.0}
    # the oracle got each photo's true kernel (odd square), then a delta on the sharp photo
    sides = [rows[0]["kernel_side"], 1, rows[1]["kernel_side"], 1]
    assert all(13 <= r["kernel_extent"] <= 27 for r in rows)
    assert kernels == [(side, side) for side in sides]
    sharp = result["sharp"]
    assert sharp["identity"]["identical"] == 2 and sharp["identity"]["passed"]
    assert sharp["identity"]["worst_psnr"] is None  # identical: an infinite PSNR
    assert sharp["stub"]["identical"] == 2  # it only harmed its first call, a blurry photo
    assert s["gated"]["ran"] == {"unchanged": 2} and sharp["gated"]["ran"] == {"unchanged": 2} and s["stub"]["ran"] == {}
    assert "identity" in camera_shake.blurred_table(s, 2) and "identical" in camera_shake.sharp_table(sharp, 2)


def test_bench_is_deterministic_per_seed() -> None:
    photos = dict(list(synthetic_photos().items())[:1])
    a, b, c = (
        camera_shake.run_bench(photos, {"id": lambda x: x}, seed=s, sharp_check=False, log=None) for s in (2, 2, 3)
    )
    assert a["photos"][0]["input"] == b["photos"][0]["input"] != c["photos"][0]["input"]


def test_missing_modules_make_a_method_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "deblurcli.kernel.estimate", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "deblurcli.session", None)
    methods, missing = camera_shake.build_methods(["kernel", "auto"], "cpu")
    assert methods == {} and set(missing) == {"kernel", "auto"} and "unavailable" in missing["kernel"]


def test_main_skips_without_photos_and_pictures_kernels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert camera_shake.main(["--photos", str(tmp_path / "absent"), "--methods", "network"]) == 0
    assert "skipped" in capsys.readouterr().out
    png = tmp_path / "k.png"
    assert camera_shake.main(["--photos", str(tmp_path / "absent"), "--kernels-png", str(png)]) == 0
    from PIL import Image

    with Image.open(png) as im:
        assert im.mode == "L" and im.width > 4 * 27 and im.height > 3 * 27
