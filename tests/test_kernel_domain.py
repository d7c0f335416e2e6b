"""Deconvolution in linear light (``kernel/domain.py``, ``--blur-domain``): a camera blurs light, not sRGB values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scenes
import torch
from click.testing import CliRunner
from PIL import Image

from deblurcli.blur import apply_kernels
from deblurcli.cli import group
from deblurcli.errors import OptionError
from deblurcli.kernel.deconv import SATURATION, Deconvolver
from deblurcli.kernel.domain import choose_domain, from_linear, linear_noise, linear_saturation, to_linear
from deblurcli.metrics import psnr, shift_tolerant_psnr
from deblurcli.session import Session

pytestmark = pytest.mark.usefixtures("one_thread")


def _kernel() -> torch.Tensor:
    """A 9 px L-shaped shake path."""
    k = torch.zeros(11, 11)
    k[3, 2:9] = torch.tensor([0.05, 0.08, 0.1, 0.12, 0.12, 0.1, 0.1])
    k[4:9, 8] = torch.tensor([0.1, 0.1, 0.08, 0.05, 0.05])
    return k / k.sum()


def _scene() -> torch.Tensor:
    """Rectangles and discs from near black to near white, where the sRGB curve bends most: 1 x 3 x H x W."""
    grey = torch.from_numpy(scenes.shapes(112, 112, seed=4)).float()
    return grey.expand(3, -1, -1)[None].contiguous()


def _blur(sharp: torch.Tensor, kernel: torch.Tensor, linear: bool) -> torch.Tensor:
    k = kernel[None, None]
    out = from_linear(apply_kernels(to_linear(sharp), k)) if linear else apply_kernels(sharp, k)
    noise = 0.003 * torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    return (out + noise).clamp(0, 1)


def test_curves_round_trip_and_the_noise_follows_the_slope() -> None:
    x = torch.linspace(0, 1, 101)
    assert torch.allclose(from_linear(to_linear(x)), x, atol=1e-5)
    # At 0.5 the sRGB decoding curve rises by 2.4 / 1.055 * ((0.5 + 0.055) / 1.055) ** 1.4 = 0.926 per unit.
    assert linear_noise(torch.full((3, 4, 4), 0.5), 0.01) == pytest.approx(0.009257, rel=1e-3)
    assert linear_noise(torch.zeros(3, 4, 4), 0.01) == pytest.approx(0.01 / 12.92, rel=1e-3)
    assert linear_saturation(SATURATION) == pytest.approx(float(to_linear(torch.tensor(SATURATION))))


@pytest.mark.parametrize("linear", [False, True])
def test_the_domain_the_photo_was_blurred_in_deconvolves_it_best(linear: bool) -> None:
    kernel, sharp = _kernel(), _scene()
    blurry = _blur(sharp, kernel, linear)
    scores = {}
    for domain in ("srgb", "linear"):
        noise = 0.003 if domain == "srgb" else linear_noise(blurry[0], 0.003)
        out = Deconvolver(kernel, noise=noise, domain=domain)(blurry)
        scores[domain] = psnr(out[0].permute(1, 2, 0).numpy(), sharp[0].permute(1, 2, 0).numpy())
    right, wrong = ("linear", "srgb") if linear else ("srgb", "linear")
    assert scores[right] > scores[wrong] + 1.0, scores


def test_session_deconvolves_in_the_domain_asked_for_and_rejects_others() -> None:
    kernel, sharp = _kernel(), _scene()
    blurry = _blur(sharp, kernel, linear=True)[0].permute(1, 2, 0).numpy()
    target = sharp[0].permute(1, 2, 0).numpy()
    # A kernel file is recentred on its centroid, which shifts the output: score up to a 3 px shift.
    def gain(domain: str) -> float:
        session = Session("kernel", kernel=kernel, refiner="none", device="cpu", blur_domain=domain)
        return shift_tolerant_psnr(session.deblur(blurry).rgb, target, 3)

    gains = {domain: gain(domain) for domain in ("srgb", "linear")}
    assert gains["linear"] > gains["srgb"] + 1.0, gains
    estimated = Session("kernel", refiner="none", device="cpu", blur_domain="linear").deblur(blurry)
    assert estimated.method == "kernel" and "linear light" in estimated.notes[0]
    with pytest.raises(OptionError, match="blur domain"):
        Session("kernel", refiner="none", device="cpu", blur_domain="log")


def test_cli_blur_domain_option(tmp_path: Path) -> None:
    kernel = _kernel()
    blurry = _blur(_scene(), kernel, linear=True)[0].permute(1, 2, 0).numpy()
    src = tmp_path / "a.png"
    Image.fromarray(np.rint(blurry * 255).astype(np.uint8)).save(src)
    np.save(tmp_path / "k.npy", kernel.numpy())
    common = [str(src), "--kernel", str(tmp_path / "k.npy"), "--refiner", "none", "--json"]
    runs = {d: CliRunner().invoke(group, [*common, "--blur-domain", d, "-o", str(tmp_path / f"{d}.png")], catch_exceptions=False)
            for d in ("srgb", "linear")}
    assert all(r.exit_code == 0 and json.loads(r.stdout)["method"] == "kernel" for r in runs.values())
    with Image.open(tmp_path / "srgb.png") as a, Image.open(tmp_path / "linear.png") as b:
        assert not np.array_equal(np.asarray(a), np.asarray(b))
    bad = CliRunner().invoke(group, [*common, "--blur-domain", "log", "-o", str(tmp_path / "x.png")])
    assert bad.exit_code == 2 and "--blur-domain" in bad.stderr


@pytest.mark.parametrize("linear", [False, True])
def test_choose_domain_tells_where_the_blur_was_made(linear: bool) -> None:
    kernel = _kernel()
    blurry = _blur(_scene(), kernel, linear)[0]
    domain, ratio = choose_domain(blurry, kernel, 0.003)
    assert domain == ("linear" if linear else "srgb"), ratio


@pytest.mark.parametrize("linear", [False, True])
def test_auto_blur_domain_picks_the_domain_per_photo_and_says_so(linear: bool) -> None:
    kernel, sharp = _kernel(), _scene()
    blurry = _blur(sharp, kernel, linear)[0].permute(1, 2, 0).numpy()
    result = Session("kernel", kernel=kernel, refiner="none", device="cpu", blur_domain="auto").deblur(blurry)
    assert len(result.notes) == 1 and result.notes[0].startswith(f"blurred in {'linear light' if linear else 'sRGB'} (")
    known = "linear" if linear else "srgb"
    fixed = Session("kernel", kernel=kernel, refiner="none", device="cpu", blur_domain=known).deblur(blurry)
    assert np.array_equal(result.rgb, fixed.rgb)


def test_a_second_estimate_on_the_first_ones_windows_decodes_only_them() -> None:
    """Auto's linear-light estimate reuses the sRGB estimate's windows: on a photo with room for one window the
    windows are the same, so the estimate must be too, while the whole photo is never decoded."""
    kernel, sharp = _kernel(), _scene()
    blurry = _blur(sharp, kernel, linear=True)[0].permute(1, 2, 0).numpy()
    session = Session("kernel", refiner="none", device="cpu", blur_domain="auto")
    first = session.estimate(blurry)
    assert first.windows and first.region in first.windows
    whole = session.estimate(blurry, domain="linear")
    reused = session.estimate(blurry, domain="linear", like=first)
    assert reused.windows == first.windows == whole.windows
    assert torch.equal(reused.kernel, whole.kernel) and reused.confidence == whole.confidence
    assert reused.details["noise"] == pytest.approx(whole.details["noise"])
    assert not torch.equal(reused.kernel, first.kernel)  # it did run in linear light
