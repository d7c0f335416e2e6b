"""Metrics against independent numpy formulas, size guards, conventions and the offline LPIPS path."""

from __future__ import annotations

import math
import socket
import urllib.error

import numpy as np
import pytest

from deblurcli import metrics
from deblurcli.errors import DeblurError


def uint8_pair(h: int, w: int, seed: int = 0, noise: float = 12.0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth-ish target and a noisy version of it, both uint8, so 8-bit quantisation is exact."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xx / 7.0)[..., None] * np.cos(yy / 5.0)[..., None] + rng.normal(0, 20, (h, w, 3))
    target = np.clip(base, 0, 255).round().astype(np.uint8)
    output = np.clip(target + rng.normal(0, noise, target.shape), 0, 255).round().astype(np.uint8)
    return output, target


def as_float(a: np.ndarray) -> np.ndarray:
    return (a / 255.0).astype(np.float32)


def ref_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of an H x W image with the 1-D window g (rows then columns)."""
    rows = np.lib.stride_tricks.sliding_window_view(img, len(g), axis=0) @ g
    return np.lib.stride_tricks.sliding_window_view(rows, len(g), axis=1) @ g


def ref_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al.'s SSIM by formula: 11x11 Gaussian sigma 1.5, valid window, range 255, channel mean."""
    x = np.arange(11) - 5
    g = np.exp(-(x**2) / (2 * 1.5**2))
    g /= g.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for c in range(a.shape[2]):
        p, q = a[..., c].astype(np.float64), b[..., c].astype(np.float64)
        mp, mq = _filter_valid(p, g), _filter_valid(q, g)
        vp = _filter_valid(p * p, g) - mp**2
        vq = _filter_valid(q * q, g) - mq**2
        cov = _filter_valid(p * q, g) - mp * mq
        ssim_map = ((2 * mp * mq + c1) * (2 * cov + c2)) / ((mp**2 + mq**2 + c1) * (vp + vq + c2))
        values.append(ssim_map.mean())
    return float(np.mean(values))


def ref_y(a: np.ndarray) -> np.ndarray:
    """MATLAB rgb2ycbcr luma on uint8 RGB, in [16, 235] (float, unrounded, as BasicSR computes it)."""
    f = a.astype(np.float64) / 255.0
    return (16.0 + 65.481 * f[..., 0] + 128.553 * f[..., 1] + 24.966 * f[..., 2])[..., None]


@pytest.fixture(scope="module")
def lpips_rand():
    model, note = metrics.make_lpips("alex", random_backbone=True)
    assert note is None
    return model


def test_psnr_and_ssim_match_numpy_formulas() -> None:
    out, tgt = uint8_pair(70, 90)
    m = metrics.image_metrics(as_float(out), as_float(tgt))
    assert m["psnr"] == pytest.approx(ref_psnr(out, tgt), abs=1e-5)
    assert m["ssim"] == pytest.approx(ref_ssim(out, tgt), abs=1e-5)
    assert 0.0 < m["ssim"] < 0.99


def test_ssim_is_not_downsampled_on_large_images() -> None:
    # piq's default would average-pool by round(400 / 256) = 2 first; the convention is full resolution.
    out, tgt = uint8_pair(400, 410, seed=1, noise=20)
    m = metrics.image_metrics(as_float(out), as_float(tgt))
    assert m["ssim"] == pytest.approx(ref_ssim(out, tgt), abs=1e-5)
    import piq
    import torch

    x, y = (torch.from_numpy(as_float(a)).permute(2, 0, 1)[None].double() for a in (out, tgt))
    assert abs(float(piq.ssim(x, y, data_range=1.0)) - m["ssim"]) > 1e-3  # the default really differs


def test_y_channel_matches_matlab_luma() -> None:
    out, tgt = uint8_pair(60, 64, seed=2)
    m = metrics.image_metrics(as_float(out), as_float(tgt), y_channel=True)
    yo, yt = ref_y(out), ref_y(tgt)
    assert m["psnr"] == pytest.approx(ref_psnr(yo, yt), abs=1e-4)
    assert m["ssim"] == pytest.approx(ref_ssim(yo, yt), abs=1e-5)
    rgb = metrics.image_metrics(as_float(out), as_float(tgt))
    assert m["psnr"] != pytest.approx(rgb["psnr"], abs=0.1)


def test_identical_images(lpips_rand) -> None:
    _, tgt = uint8_pair(170, 180, seed=3)
    m = metrics.image_metrics(as_float(tgt), as_float(tgt), lpips_model=lpips_rand)
    assert m["psnr"] == math.inf
    assert m["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert m["ms_ssim"] == pytest.approx(1.0, abs=1e-9)
    assert m["fsim"] == pytest.approx(1.0, abs=1e-9)
    assert m["vif"] == pytest.approx(1.0, abs=1e-6)
    assert m["lpips"] == pytest.approx(0.0, abs=1e-7)
    assert set(m) == set(metrics.METRICS)


@pytest.mark.parametrize(
    ("side", "expect_none"),
    [(160, {"ms_ssim"}), (161, set()), (40, {"ms_ssim", "vif"}), (41, {"ms_ssim"}), (30, {"ms_ssim", "vif", "lpips"}), (10, {"ms_ssim", "vif", "lpips", "ssim"})],
)
def test_size_guards_give_none_not_errors(side: int, expect_none: set[str], lpips_rand) -> None:
    out, tgt = uint8_pair(side, side + 7, seed=side)
    m = metrics.image_metrics(as_float(out), as_float(tgt), lpips_model=lpips_rand)
    assert {k for k, v in m.items() if v is None} == expect_none
    assert set(metrics.unavailable(side, side + 7, "alex")) == expect_none
    assert all(str(side + 7) + "x" + str(side) in reason for reason in metrics.unavailable(side, side + 7, "alex").values())


def test_crop_border_crops_before_everything() -> None:
    out, tgt = uint8_pair(64, 80, seed=4)
    m = metrics.image_metrics(as_float(out), as_float(tgt), crop_border=5)
    assert m["psnr"] == pytest.approx(ref_psnr(out[5:-5, 5:-5], tgt[5:-5, 5:-5]), abs=1e-5)
    assert m["ssim"] == pytest.approx(ref_ssim(out[5:-5, 5:-5], tgt[5:-5, 5:-5]), abs=1e-5)
    with pytest.raises(DeblurError, match="crop border of 32"):
        metrics.image_metrics(as_float(out), as_float(tgt), crop_border=32)


def test_output_is_scored_as_saved_8_bit() -> None:
    out, tgt = uint8_pair(48, 48, seed=5)
    raw = as_float(out) + np.float32(0.4 / 255)  # an unrounded network output just below the next level
    saved = metrics.quantize8(raw)
    assert np.array_equal(np.round(saved * 255).astype(np.uint8), out)
    assert metrics.image_metrics(raw, as_float(tgt))["psnr"] == pytest.approx(ref_psnr(out, tgt), abs=1e-5)
    assert metrics.image_metrics(raw, as_float(tgt), quantize=False)["psnr"] != pytest.approx(ref_psnr(out, tgt), abs=1e-3)


def test_shape_mismatch_is_a_user_error() -> None:
    with pytest.raises(DeblurError, match="same H x W x 3"):
        metrics.image_metrics(np.zeros((20, 20, 3), np.float32), np.zeros((20, 21, 3), np.float32))


def test_lpips_orders_distortions(lpips_rand) -> None:
    out, tgt = uint8_pair(64, 64, seed=6, noise=5)
    worse, _ = uint8_pair(64, 64, seed=6, noise=40)
    near = metrics.image_metrics(as_float(out), as_float(tgt), lpips_model=lpips_rand)["lpips"]
    far = metrics.image_metrics(as_float(worse), as_float(tgt), lpips_model=lpips_rand)["lpips"]
    assert 0 < near < far


def test_means_and_gain() -> None:
    rows = [
        {"psnr": 20.0, "ssim": 0.5, "ms_ssim": None, "fsim": 0.8, "vif": None, "lpips": 0.3},
        {"psnr": 30.0, "ssim": 0.7, "ms_ssim": 0.9, "fsim": 0.9, "vif": None, "lpips": 0.1},
    ]
    mean = metrics.mean_metrics(rows)
    assert mean == pytest.approx({"psnr": 25.0, "ssim": 0.6, "ms_ssim": 0.9, "fsim": 0.85, "vif": None, "lpips": 0.2})
    assert metrics.mean_metrics([*rows, {**rows[0], "psnr": math.inf}])["psnr"] == math.inf
    g = metrics.gain({"psnr": math.inf, "ssim": 0.9, "lpips": None}, {"psnr": math.inf, "ssim": 0.6, "lpips": 0.2})
    assert g["psnr"] is None and g["ssim"] == pytest.approx(0.3) and g["lpips"] is None


def test_make_lpips_offline_returns_note_fast(tmp_path, monkeypatch) -> None:
    import torch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    calls = []

    def unreachable(url, dst, hash_prefix=None, progress=True):
        calls.append((url, socket.getdefaulttimeout()))
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    before = socket.getdefaulttimeout()
    model, note = metrics.make_lpips("alex")
    assert model is None
    assert "alexnet-owt-7be5be79.pth" in note and str(tmp_path / "hub" / "checkpoints") in note
    assert "Name or service not known" in note
    assert len(calls) == 1 and calls[0][1] == metrics.DOWNLOAD_TIMEOUT_S  # one try, with a timeout
    assert socket.getdefaulttimeout() == before


def test_make_lpips_reports_a_corrupt_cached_backbone(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = metrics.lpips_backbone_path("alex")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    model, note = metrics.make_lpips("alex")
    assert model is None and str(path) in note and "delete it" in note


def test_make_lpips_none_and_unknown() -> None:
    assert metrics.make_lpips("none") == (None, "LPIPS not computed (--no-lpips)")
    with pytest.raises(DeblurError, match="unknown LPIPS backbone"):
        metrics.make_lpips("resnet")


# ------------------------------------------------------------------------------ scoring up to a shift


def shifted_copy(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``out[y, x] = a[y - dy, x - dx]``: the image displaced by (dy, dx) (wrapped rows/columns stay at the edge)."""
    return np.roll(a, (dy, dx), axis=(0, 1))


def test_shift_errors_match_a_brute_force_search() -> None:
    out, tgt = uint8_pair(40, 52, seed=7, noise=6)
    out, tgt = as_float(shifted_copy(out, 2, -1)), as_float(tgt)
    s = 3
    brute = np.array([
        [np.mean((out[s + dy : 40 - s + dy, s + dx : 52 - s + dx].astype(np.float64) - tgt[s:-s, s:-s]) ** 2)
         for dx in range(-s, s + 1)]
        for dy in range(-s, s + 1)
    ])
    errors = metrics.shift_errors(out, tgt, s)
    assert errors.shape == (7, 7)
    assert errors == pytest.approx(brute, abs=1e-12)
    dy, dx, mse = metrics.best_shift(out, tgt, s)
    assert (dy, dx) == (2, -1) and mse == pytest.approx(brute.min(), abs=0)


def test_shift_ssims_match_piq_at_every_shift(monkeypatch) -> None:
    import piq
    import torch

    out, tgt = uint8_pair(36, 44, seed=8, noise=10)
    out, tgt = as_float(shifted_copy(out, -1, 2)), as_float(tgt)
    s = 2
    got = metrics.shift_ssims(out, tgt, s)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]

    for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
            window = out[s + dy : 36 - s + dy, s + dx : 44 - s + dx]
            want = float(piq.ssim(t(window), t(tgt[s:-s, s:-s]), data_range=1.0, downsample=False))
            assert got[s + dy, s + dx] == pytest.approx(want, abs=1e-5)
    assert np.unravel_index(got.argmax(), got.shape) == (s - 1, s + 2)
    monkeypatch.setattr(metrics, "SHIFT_BATCH_ELEMENTS", 2 * 3 * 32 * 40)  # 2 shifts per pass, not 5
    assert metrics.shift_ssims(out, tgt, s) == pytest.approx(got, abs=1e-6)  # float32 sums in another order


@pytest.mark.parametrize(("dy", "dx"), [(0, 0), (3, -2), (-5, 5)])
def test_a_shifted_copy_is_perfect_only_within_the_shift(dy: int, dx: int) -> None:
    _, tgt = uint8_pair(64, 72, seed=9)
    tgt = as_float(tgt)
    out = shifted_copy(tgt, dy, dx)
    assert metrics.shift_tolerant_psnr(out, tgt, max_shift=5) == math.inf
    assert metrics.shift_tolerant_ssim(out, tgt, max_shift=5) == pytest.approx(1.0, abs=1e-6)
    m = metrics.image_metrics(out, tgt, max_shift=5)
    assert m["psnr"] == math.inf and m["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert m["fsim"] == pytest.approx(1.0, abs=1e-6) and m["vif"] == pytest.approx(1.0, abs=1e-5)
    if (dy, dx) != (0, 0):
        plain = metrics.image_metrics(out, tgt)
        assert math.isfinite(plain["psnr"]) and plain["ssim"] < 0.9
        small = max(abs(dy), abs(dx)) - 1  # a window too small to undo the shift
        assert math.isfinite(metrics.shift_tolerant_psnr(out, tgt, max_shift=small))
        assert metrics.shift_tolerant_ssim(out, tgt, max_shift=small) < 0.9


def test_max_shift_scores_the_central_region_and_guards_sizes() -> None:
    out, tgt = uint8_pair(170, 180, seed=10)
    out, tgt = as_float(out), as_float(tgt)
    aligned = metrics.image_metrics(out, tgt, crop_border=2)
    shifted = metrics.image_metrics(out, tgt, crop_border=2, max_shift=3)
    assert aligned["ms_ssim"] is not None and shifted["ms_ssim"] is None  # 166 px aligned; 160 < 161 up to a shift
    assert shifted["psnr"] >= metrics.image_metrics(out, tgt, crop_border=5)["psnr"] - 1e-9  # shift 0 is a candidate
    assert shifted["ssim"] >= metrics.image_metrics(out, tgt, crop_border=5)["ssim"] - 1e-6
    y = metrics.image_metrics(out, tgt, max_shift=2, y_channel=True)
    yo, yt = ref_y(np.round(out * 255)), ref_y(np.round(tgt * 255))
    dy, dx, _ = metrics.best_shift(yo / 255, yt / 255, 2)
    assert y["psnr"] == pytest.approx(ref_psnr(yo[2 + dy : 168 + dy, 2 + dx : 178 + dx], yt[2:-2, 2:-2]), abs=1e-4)
    with pytest.raises(DeblurError, match="max shift of 85"):
        metrics.image_metrics(out, tgt, max_shift=85)
    with pytest.raises(DeblurError, match="max shift must be 0 or more"):
        metrics.shift_tolerant_psnr(out, tgt, max_shift=-1)


@pytest.mark.parametrize("net", ["alex", "squeeze"])
def test_make_lpips_loads_a_torchvision_backbone_as_plain_tensors(tmp_path, monkeypatch, net) -> None:
    """A cached torchvision checkpoint (classifier included) lands in lpips' slices, every tensor of it."""
    import torch
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    reference = torchvision.models.alexnet() if net == "alex" else torchvision.models.squeezenet1_1()
    path = metrics.lpips_backbone_path(net)
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model, note = metrics.make_lpips(net)
    assert note is None
    loaded = {k.split(".", 1)[1]: v for k, v in model.net.state_dict().items()}
    expected = {k.split(".", 1)[1]: v for k, v in reference.state_dict().items() if k.startswith("features.")}
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
