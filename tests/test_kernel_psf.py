"""Kernel files in (read_kernel) and kernel pictures out (kernel_picture)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deblurcli.errors import DeblurError
from deblurcli.kernel.psf import MAX_KERNEL_SIZE, kernel_picture, normalise_kernel, read_kernel


def streak() -> np.ndarray:
    """An off-centre L-shaped streak on a 21 px canvas with empty margins, as a user might save it."""
    k = np.zeros((21, 21))
    k[5, 3:12] = 1.0
    k[5:9, 11] = 2.0
    return k


def centroid(k: torch.Tensor) -> tuple[float, float]:
    ys, xs = torch.meshgrid(torch.arange(k.shape[0]), torch.arange(k.shape[1]), indexing="ij")
    return float((k * ys).sum()), float((k * xs).sum())


def check_convention(k: torch.Tensor) -> None:
    assert k.dtype == torch.float32 and k.dim() == 2
    assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    assert float(k.min()) >= 0 and float(k.sum()) == pytest.approx(1.0, abs=1e-5)
    c = k.shape[0] // 2
    cy, cx = centroid(k)
    assert abs(cy - c) <= 0.5 and abs(cx - c) <= 0.5


def test_normalise_crops_centres_and_keeps_the_shape() -> None:
    k = normalise_kernel(streak())
    check_convention(k)
    assert k.shape[0] < 21  # cropped to the support (9 x 4 px) plus the centring margin
    assert int((k > 0).sum()) == int((streak() > 0).sum())


def test_read_8_and_16_bit_and_colour_png(tmp_path: Path) -> None:
    k = streak() / streak().max()
    Image.fromarray((k * 255).astype(np.uint8)).save(tmp_path / "k8.png")
    Image.fromarray((k * 65535).astype(np.uint16)).save(tmp_path / "k16.png")
    Image.fromarray(np.repeat((k * 255).astype(np.uint8)[..., None], 3, axis=2)).save(tmp_path / "rgb.png")
    reference = normalise_kernel(streak())
    for name in ("k8.png", "k16.png", "rgb.png"):
        got = read_kernel(tmp_path / name)
        check_convention(got)
        assert torch.allclose(got, reference, atol=2e-3), name


def test_read_npy(tmp_path: Path) -> None:
    np.save(tmp_path / "k.npy", streak().astype(np.float32))
    assert torch.allclose(read_kernel(tmp_path / "k.npy"), normalise_kernel(streak()), atol=1e-6)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("zero.npy", np.zeros((5, 5)), "all zero"),
        ("neg.npy", np.array([[0.0, 1.0, -0.5]]), "negative"),
        ("nan.npy", np.array([[0.0, np.nan, 1.0]]), "NaN"),
        ("cube.npy", np.ones((3, 3, 3)), "2-D"),
        ("huge.npy", np.eye(300), "more than 255"),
        ("text.npy", np.array([["a", "b"]]), "real numbers"),
    ],
)
def test_bad_npy_kernels_raise_one_line(tmp_path: Path, name: str, content: np.ndarray, message: str) -> None:
    np.save(tmp_path / name, content)
    with pytest.raises(DeblurError, match=message) as info:
        read_kernel(tmp_path / name)
    assert "\n" not in str(info.value)


def test_bad_png_and_missing_files_raise_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "broken.npy").write_bytes(b"garbage")
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / "black.png")
    big = np.zeros((MAX_KERNEL_SIZE + 40, MAX_KERNEL_SIZE + 40), np.uint8)
    big[0, 0] = big[-1, -1] = 255
    Image.fromarray(big).save(tmp_path / "big.png")
    cases = {
        "broken.png": "cannot read",
        "broken.npy": "cannot read",
        "black.png": "all zero",
        "big.png": "more than 255",
        "missing.png": "not found",
    }
    for name, message in cases.items():
        with pytest.raises(DeblurError, match=message) as info:
            read_kernel(tmp_path / name)
        assert "\n" not in str(info.value), name


def test_kernel_picture_one_and_many() -> None:
    one = kernel_picture(torch.from_numpy(streak()), scale=4)
    assert one.dtype == np.uint8 and one.shape == (84, 84)
    assert one.max() == 255 and one.min() == 0
    many = kernel_picture([torch.ones(3, 3), torch.ones(5, 5), np.eye(7)], scale=2)
    # 3 kernels -> 2 x 2 grid of 14 px cells with 2 px separators.
    assert many.shape == (30, 30) and many.dtype == np.uint8
    assert (many[14:16] == 128).all() and (many[:, 14:16] == 128).all()
    with pytest.raises(ValueError):
        kernel_picture([])
