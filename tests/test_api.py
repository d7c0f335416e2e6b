"""Python API: same type out as in (PIL mode, numpy dtype/shape), lossless round trips, model loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import deblurcli
from deblurcli import api, weights
from deblurcli.api import deblur_image, load_model
from deblurcli.errors import DeblurError, DeviceError, PhotoError
from deblurcli.models.nafnet import NAFNet


class Affine(nn.Module):
    """out = gain * x + shift: the identity by default, so conversions can be checked for exactness."""

    size_multiple = 1
    tile_margin = 0

    def __init__(self, gain: float = 1.0, shift: float = 0.0) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(gain))
        self.shift = shift
        self.config: dict[str, object] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * x + self.shift


IDENTITY = Affine()
DARKEN = Affine(gain=0.5)


def _rgb8(h: int = 24, w: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "1", "CMYK", "I;16", "I", "F"])
def test_pil_round_trip_keeps_mode_and_pixels(mode: str) -> None:
    rng = np.random.default_rng(1)
    if mode in ("I;16", "I"):
        image = Image.fromarray(rng.integers(0, 65536, (20, 30), dtype=np.uint16)).convert(mode)
    elif mode == "F":
        image = Image.fromarray(rng.random((20, 30), dtype=np.float32))
    elif mode == "CMYK":
        image = Image.fromarray(_rgb8(20, 30)).convert("CMYK")
    else:
        base = Image.fromarray(_rgb8(20, 30)).convert("RGBA")
        base.putalpha(Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8)))
        image = base.convert(mode)
    image.info["icc_profile"] = b"fake profile"
    out = deblur_image(image, IDENTITY)
    assert out.mode == image.mode and out.size == image.size
    assert out.info["icc_profile"] == b"fake profile"
    expected, got = np.asarray(image), np.asarray(out)
    if mode == "F":
        assert np.allclose(got, expected, atol=1e-6)
    elif mode == "CMYK":  # CMYK -> RGB -> CMYK is Pillow's naive conversion, not a bijection
        assert np.array_equal(np.asarray(out.convert("RGB")), np.asarray(image.convert("RGB")))
    else:
        assert np.array_equal(got, expected)


def test_pil_palette_keeps_palette_and_transparent_index() -> None:
    palette_source = Image.fromarray(_rgb8(16, 16)).quantize(colors=16)
    image = palette_source.copy()
    indices = np.asarray(image).copy()
    indices[:4, :4] = 3
    image = Image.fromarray(indices, "P")
    image.putpalette(palette_source.getpalette())
    image.info["transparency"] = 3
    out = deblur_image(image, IDENTITY)
    assert out.mode == "P" and out.getpalette() == image.getpalette()
    assert out.info["transparency"] == 3
    assert np.array_equal(np.asarray(out.convert("RGBA")), np.asarray(image.convert("RGBA")))


def test_pil_output_really_changes_and_alpha_is_kept() -> None:
    image = Image.fromarray(np.full((16, 16, 4), 200, np.uint8), "RGBA")
    out = deblur_image(image, DARKEN)
    assert np.asarray(out)[..., :3].max() == 100 and np.asarray(out)[..., 3].min() == 200


@pytest.mark.parametrize(
    "array",
    [
        _rgb8(),
        _rgb8()[..., 0],
        _rgb8()[..., :1],
        np.random.default_rng(2).integers(0, 65536, (12, 10, 4), dtype=np.uint16),
        np.random.default_rng(3).random((12, 10, 3), dtype=np.float32),
        np.random.default_rng(4).random((12, 10, 2)),  # float64 grey + alpha
    ],
    ids=["uint8-rgb", "uint8-grey", "uint8-grey1", "uint16-rgba", "float32-rgb", "float64-grey-alpha"],
)
def test_numpy_round_trip_keeps_dtype_shape_and_values(array: np.ndarray) -> None:
    out = deblur_image(array, IDENTITY)
    assert out.dtype == array.dtype and out.shape == array.shape
    assert np.allclose(out, array, atol=1e-5 if array.dtype.kind == "f" else 0)


def test_strength_blends_with_the_input() -> None:
    array = np.full((8, 8, 3), 200, np.uint8)
    assert (deblur_image(array, DARKEN, strength=0.0) == 200).all()
    assert (deblur_image(array, DARKEN, strength=0.5) == 150).all()
    assert (deblur_image(array, DARKEN) == 100).all()
    with pytest.raises(DeblurError, match="between 0 and 1"):
        deblur_image(array, DARKEN, strength=-0.1)


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(PhotoError, match="dtype int32"):
        deblur_image(np.zeros((4, 4, 3), np.int32), IDENTITY)
    with pytest.raises(PhotoError, match="shape"):
        deblur_image(np.zeros((4, 4, 5), np.uint8), IDENTITY)
    with pytest.raises(PhotoError, match="not list"):
        deblur_image([[0]], IDENTITY)  # type: ignore[type-var]
    with pytest.raises(DeviceError):
        deblur_image(_rgb8(), IDENTITY, device="cuda:7")


def _tiny_nafnet_file(tmp_path: Path) -> tuple[NAFNet, Path]:
    torch.manual_seed(0)
    net = NAFNet(width=8, enc_blk_nums=[1], middle_blk_num=1, dec_blk_nums=[1], local_pool=16)
    path = tmp_path / "tiny.safetensors"
    weights.save_generator(net, path, {"name": "tiny"})
    return net, path


def test_load_model_from_file(tmp_path: Path) -> None:
    net, path = _tiny_nafnet_file(tmp_path)
    model = load_model(weights=path, device="cpu")
    assert isinstance(model, NAFNet) and not model.training
    assert model.config == net.config
    x = torch.rand(1, 3, 16, 16)
    assert torch.allclose(model(x), net.eval()(x))
    with pytest.raises(DeviceError):
        load_model(weights=path, device="mps" if not torch.backends.mps.is_available() else "tpu")


def test_default_model_is_loaded_once_and_follows_deblur_model(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, object]] = []

    def fake_load(name: str | None = None, weights: Path | None = None) -> nn.Module:
        calls.append((name, weights))
        return Affine(gain={"nafnet-s": 0.5, "nafnet-gopro-w32": 0.25, "nafnet-s-refiner": 1.0}[str(name)])

    monkeypatch.setattr(weights, "load_generator", fake_load)
    image = np.full((4, 4, 3), 0.5, np.float32)
    api._cached_session.cache_clear()
    try:
        for _ in range(2):
            assert (deblurcli.deblur_image(image) == 0.25).all()
        monkeypatch.setenv("DEBLUR_MODEL", "nafnet-gopro-w32")
        assert (deblurcli.deblur_image(image) == 0.125).all()  # the newly chosen model, not the cached one
    finally:
        api._cached_session.cache_clear()
    refiner = ("nafnet-s-refiner", None)  # auto may deconvolve, so each session loads the refiner too
    assert calls == [("nafnet-s", None), refiner, ("nafnet-gopro-w32", None), refiner]
    assert deblurcli.load_model is load_model
