"""deblurcli.session: options resolved once per run, then one call per photo."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from deblurcli import engine, tiling, weights
from deblurcli.errors import DeviceError, OptionError
from deblurcli.session import Session
from deblurcli.tiling import TilePlan


class Conv(nn.Module):
    """A small convolutional generator (has 4-D weights, so NHWC applies)."""

    size_multiple = 1
    tile_margin = 2
    config: ClassVar[dict] = {}

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 0.1 * self.conv(x)).clamp(0, 1)


def _photo(h: int = 40, w: int = 48) -> np.ndarray:
    return np.random.default_rng(0).random((h, w, 3), dtype=np.float32)


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "conv.safetensors"
    from deblurcli.models.nafnet import NAFNet

    torch.manual_seed(0)
    weights.save_generator(NAFNet(width=8, enc_blk_nums=[1], middle_blk_num=1, dec_blk_nums=[1], local_pool=16), path, {})
    return path


def test_a_given_tile_on_cuda_is_planned_once_per_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--tile N`` on CUDA takes its batch size from free memory: once when the Session is built, never per
    photo (each plan costs a probe forward pass). CUDA is stood in for: the count is what matters."""
    probes: list[int] = []
    monkeypatch.setattr(tiling, "auto_plan", lambda model, device, overlap: probes.append(1) or (512, 6))
    monkeypatch.setattr("deblurcli.devices.resolve_device", lambda spec: torch.device("cuda", 0))
    monkeypatch.setattr("deblurcli.devices.resolve_precision", lambda spec, device, inference=False: torch.float32)
    monkeypatch.setattr(nn.Module, "to", lambda self, *a, **k: self)
    plans: list[TilePlan] = []
    monkeypatch.setattr(engine, "deblur_array", lambda model, rgb, *, plan, **kw: plans.append(plan) or rgb.copy())
    session = Session("network", module=Conv(), device="cuda", tile=256)
    for _ in range(3):
        session.deblur(_photo())
    assert probes == [1]
    assert plans == [TilePlan(256, 6, 32)] * 3


def test_the_model_is_prepared_once_not_per_photo(model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prepared: list[nn.Module] = []
    real = engine.prepare_model
    monkeypatch.setattr(engine, "prepare_model", lambda model, device: prepared.append(model) or real(model, device))
    session = Session("network", weights=model_file, device="cpu", precision="fp32", tile=0)
    assert session.model is not None and not session.model.training
    conv = next(p for p in session.model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    for _ in range(3):
        out = session.deblur(_photo()).rgb
        assert out.shape == (40, 48, 3) and out.dtype == np.float32
    assert len(prepared) == 1


def test_a_callers_module_keeps_its_layout_and_the_input_is_not_modified() -> None:
    model = Conv()
    session = Session("network", module=model, device="cpu", precision="fp32", tile=0, strength=0.5)
    rgb = _photo()
    before = rgb.copy()
    result = session.deblur(rgb)
    assert np.array_equal(rgb, before)
    assert result.method == "network" and result.kernel is None
    full = Session("network", module=model, device="cpu", precision="fp32", tile=0).deblur(rgb).rgb
    assert np.allclose(result.rgb, 0.5 * (rgb + full), atol=1e-6)  # strength 0.5 is halfway
    assert all(p.is_contiguous() for p in model.parameters())


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"method": "magic"}, "--method"),
        ({"strength": 1.5}, "--strength"),
        ({"tile": 3}, "--tile"),
        ({"overlap": -1}, "--overlap"),
        ({"kernel_size": 1}, "--kernel-size"),
        ({"precision": "fp8"}, "--precision"),
        ({"threads": 0}, "--threads"),
    ],
)
def test_bad_options_are_option_errors_naming_the_option(kwargs: dict, option: str) -> None:
    args = {"method": "network", "module": Conv(), "device": "cpu", **kwargs}
    with pytest.raises(OptionError) as info:
        Session(**args)
    assert info.value.option == option


def test_an_absent_device_is_a_device_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pytest.raises(DeviceError, match="CUDA is not available") as info:
        Session("network", module=Conv(), device="cuda")
    assert info.value.option == "--device"


def test_describe_names_what_every_photo_goes_through() -> None:
    text = Session("network", module=Conv(), device="cpu", precision="fp32", tile=0).describe()
    assert "method network" in text and "device cpu" in text and "precision float32" in text and "whole image" in text
