"""Step 4 of auto: the share of a photo its kernel leaves unexplained (``deblurcli.kernel.residual``)."""

from __future__ import annotations

import pytest
import scenes
import torch

from deblurcli.decide import MAX_UNEXPLAINED, after_deconvolution
from deblurcli.kernel.deconv import deconvolve
from deblurcli.kernel.residual import unexplained_share

pytestmark = pytest.mark.usefixtures("one_thread")

NOISE = 0.01


def scene(side: int = 320, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(scenes.shapes(side, side, seed=seed, count=120))


def line(length: int, vertical: bool = False) -> torch.Tensor:
    k = torch.zeros(length, length)
    k[length // 2] = 1.0 / length
    return k.T.contiguous() if vertical else k


def blurred(img: torch.Tensor, kernel: torch.Tensor, seed: int) -> torch.Tensor:
    return scenes.blurred(img, kernel, noise=NOISE, seed=seed)


def share_after_deconvolution(photo: torch.Tensor, kernel: torch.Tensor) -> float:
    restored = deconvolve(photo[None].expand(3, -1, -1).contiguous(), kernel, noise=NOISE)[0]
    return unexplained_share(photo, restored, kernel, NOISE)


def test_a_camera_shake_is_explained_everywhere_by_its_kernel() -> None:
    k = line(11)
    assert share_after_deconvolution(blurred(scene(), k, seed=1), k) < 0.02


def test_a_moving_object_is_what_the_kernel_leaves_unexplained() -> None:
    img, k = scene(seed=3), line(11)
    photo = blurred(img, k, seed=1)
    # A disc of a quarter of the frame moved vertically while the camera shook horizontally.
    yy, xx = torch.meshgrid(torch.arange(320.0), torch.arange(320.0), indexing="ij")
    disc = ((yy - 200) ** 2 + (xx - 160) ** 2 < 90**2).float()
    photo = disc * blurred(img, line(15, vertical=True), seed=2) + (1 - disc) * photo
    share = share_after_deconvolution(photo, k)
    assert share > 2 * MAX_UNEXPLAINED


def test_clipped_highlights_and_tiny_photos_do_not_count() -> None:
    k = line(9)
    img = scene(seed=4)
    img[150:190, 150:190] = 4.0  # a light source: clipped after the blur, where the linear model breaks
    photo = blurred(img, k, seed=5)
    assert share_after_deconvolution(photo, k) < 0.02
    assert unexplained_share(photo[:80, :80], photo[:80, :80], k, NOISE) == 0.0


def test_auto_replaces_a_deconvolution_that_leaves_too_much_unexplained() -> None:
    assert after_deconvolution(MAX_UNEXPLAINED, method="auto", has_network=True) is None
    choice = after_deconvolution(0.2, method="auto", has_network=True)
    assert choice is not None and choice.method == "network" and "20%" in choice.reason
    fallback = after_deconvolution(0.2, method="auto", has_network=False)
    assert fallback is not None and fallback.method == "unchanged"
    kept = after_deconvolution(0.2, method="kernel", has_network=True)  # the user asked for deconvolution
    assert kept is not None and kept.method == "kernel" and "20%" in kept.reason
