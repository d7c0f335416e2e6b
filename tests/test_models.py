"""DGF, PatchGAN and the registry: structure and parameter counts, size handling, receptive fields, detection."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deblurcli.errors import WeightsError
from deblurcli.models.dgf import DGF, DGF_FULL, DGF_LIGHT, InstanceNorm, default_dilations
from deblurcli.models.nafnet import NAFNet
from deblurcli.models.patchgan import PatchGAN
from deblurcli.models.registry import (
    ARCHITECTURES,
    PRESETS,
    SPECS,
    arch_of,
    build,
    detect,
    generator_choices,
    names,
    preset,
    spec_for,
)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _on_meta(arch: str, config: dict) -> nn.Module:
    """Built without allocating memory (fast for 68 M parameters); spectral norm's set-up is slow there."""
    with torch.device("cpu" if arch == "patchgan" else "meta"):
        return build(arch, config)


def _dgf_params_by_hand(gr: int, width: int, layers: int, batch: bool) -> int:
    """DGF's parameter count from FACTS.md's description, written out independently of the module."""
    norm = (lambda c: 2 * c) if batch else (lambda c: 0)  # BN has weight+bias; InstanceNorm(affine=False) none
    total = 3 * width * 9 + width  # head 3x3 conv 3 -> width
    for i in range(layers):
        c_in = width + i * gr
        total += c_in * width + width + norm(width)  # 1x1 bottleneck -> width
        total += width * gr * 9 + gr + norm(gr)  # 3x3 conv -> growth rate
    total += (width + layers * gr) * width + width + norm(width)  # tail 1x1 back to width
    total += width * gr * 9 + gr + gr * 3 * 9 + 3  # output 3x3 width -> GR -> 3
    return total


def test_dgf_full_matches_the_paper_structure() -> None:
    model = _on_meta("dgf", DGF_FULL)
    assert _params(model) == _dgf_params_by_hand(64, 256, 10, batch=True) == 3_263_363
    assert model.dense[-1].conv1.in_channels == 256 + 9 * 64 and model.tail_conv.in_channels == 896
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 21
    assert [layer.conv2.dilation[0] for layer in model.dense] == [1, 1, 2, 2, 3, 3, 2, 2, 1, 1]
    assert model.tail_dropout.p == 0.5


def test_dgf_light_matches_the_poster() -> None:
    model = _on_meta("dgf", DGF_LIGHT)
    assert _params(model) == _dgf_params_by_hand(32, 128, 10, batch=False) == 817_219
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert [layer.conv2.dilation[0] for layer in model.dense] == [1, 1, 2, 1, 3, 1, 2, 1, 1, 1]


def test_nafnet_presets_match_published_sizes() -> None:
    counts = {name: _params(_on_meta(*PRESETS[name])) for name in ("nafnet-s", "nafnet-w32", "nafnet-w64")}
    assert round(counts["nafnet-w32"] / 1e6, 1) == 17.1  # NAFNet paper: 17.1 M
    assert round(counts["nafnet-w64"] / 1e6, 1) == 67.9  # 67.9 M
    assert 1e6 <= counts["nafnet-s"] <= 4e6  # the small model we train and ship


def test_default_dilations_rise_and_fall() -> None:
    assert default_dilations(10) == DGF_FULL["dilations"]
    assert default_dilations(6) == [1, 1, 2, 2, 1, 1]


@pytest.mark.parametrize("config", [DGF_FULL, DGF_LIGHT], ids=["full", "light"])
def test_dgf_keeps_odd_sizes_and_range(config: dict) -> None:
    torch.manual_seed(0)
    model = DGF(**config).eval()
    x = torch.rand(2, 3, 13, 9)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert y.min() >= 0 and y.max() <= 1
    assert model.size_multiple == 1


def _small_dgf(**overrides: object) -> DGF:
    torch.manual_seed(1)
    config = {"growth_rate": 4, "width": 8, "dilations": DGF_FULL["dilations"], "norm": "batch", **overrides}
    return DGF(**config).eval()


def test_dgf_tile_margin_is_the_exact_receptive_field() -> None:
    model = _small_dgf().double()
    m = model.tile_margin
    assert m == 3 + sum(DGF_FULL["dilations"]) == 21
    # The input pixels that one output pixel depends on: exactly a (2m+1)-px square around it.
    x = torch.rand(1, 3, 61, 61, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(model(x)[0, :, 30, 30].sum(), x)
    rows = torch.nonzero(grad[0].abs().sum(dim=(0, 2))).flatten()
    cols = torch.nonzero(grad[0].abs().sum(dim=(0, 1))).flatten()
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (30 - m, 30 + m, 30 - m, 30 + m)
    # So a tile reproduces the whole image everywhere but in its margin.
    x = torch.rand(1, 3, 90, 90, dtype=torch.float64)
    with torch.no_grad():
        ref = model(x)[:, :, 20:70, 20:70]
        tile = model(x[:, :, 20:70, 20:70])
    inner = slice(m, 50 - m)
    assert torch.allclose(tile[:, :, inner, inner], ref[:, :, inner, inner], rtol=0, atol=1e-12)


def test_instance_norm_global_and_windowed() -> None:
    x = torch.randn(2, 3, 11, 14)
    assert torch.allclose(InstanceNorm()(x), nn.InstanceNorm2d(3)(x), atol=1e-5)
    k = 5
    mu = F.avg_pool2d(x, k, 1, k // 2, count_include_pad=False)
    var = F.avg_pool2d(x * x, k, 1, k // 2, count_include_pad=False) - mu * mu
    assert torch.allclose(InstanceNorm(k)(x), (x - mu) / torch.sqrt(var + 1e-5), atol=1e-4)


def test_dgf_norm_window_makes_the_light_model_local() -> None:
    model = _small_dgf(norm="instance", dilations=[1, 1], norm_window=5)
    # Receptive field: convs 3 + 2 px, and 5 norm layers each reaching 2 px further.
    reach = 3 + 2 + 5 * 2
    x = torch.rand(1, 3, 60, 60)
    with torch.no_grad():
        whole = model(x)
        tile = model(x[:, :, 10:50, 10:50])
        model.set_norm_window(None)
        global_tile = model(x[:, :, 10:50, 10:50])
    inner = slice(reach, 40 - reach)
    assert torch.allclose(tile[:, :, inner, inner], whole[:, :, 10:50, 10:50][:, :, inner, inner], atol=1e-4)
    assert not torch.allclose(global_tile[:, :, inner, inner], tile[:, :, inner, inner], atol=1e-3)
    assert model.config["norm_window"] is None
    with pytest.raises(ValueError):
        _small_dgf().set_norm_window(5)


def test_dgf_rejects_unknown_norm() -> None:
    with pytest.raises(ValueError, match="batch, instance"):
        DGF(norm="group")


@pytest.mark.parametrize("norm", ["spectral", "none", "batch"])
def test_patchgan_shapes_and_receptive_field(norm: str) -> None:
    torch.manual_seed(0)
    d = PatchGAN(ndf=8, norm=norm)
    assert d.receptive_field == 70
    blurry, candidate = torch.rand(2, 3, 96, 96), torch.rand(2, 3, 96, 96)
    d.eval()  # spectral norm's power iteration would change the weights between two training-mode calls
    out = d(blurry, candidate)
    assert out.shape == (2, 1, 10, 10)  # pix2pix: 96 -> 48 -> 24 -> 12 -> 11 -> 10
    assert torch.equal(out, d(torch.cat([blurry, candidate], dim=1)))
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    assert has_bn == (norm == "batch")
    with pytest.raises(ValueError, match="6 input channels"):
        d(blurry)


def test_patchgan_receptive_field_and_per_sample_gradients() -> None:
    """Each logit sees a 70x70 patch; and (no BatchNorm) a sample's logits depend on that sample alone,
    which WGAN-GP's per-sample gradient penalty needs."""
    d = PatchGAN(ndf=8, norm="none").double()
    x = torch.rand(3, 6, 128, 128, dtype=torch.float64, requires_grad=True)
    out = d(x)
    (grad,) = torch.autograd.grad(out[0, 0, 7, 7], x)
    rows = torch.nonzero(grad[0].abs().sum(dim=(0, 2))).flatten()
    cols = torch.nonzero(grad[0].abs().sum(dim=(0, 1))).flatten()
    assert rows.max() - rows.min() + 1 == cols.max() - cols.min() + 1 == d.receptive_field == 70
    assert grad[1:].abs().sum() == 0


def test_patchgan_spectral_norm_bounds_the_weights() -> None:
    d = PatchGAN(ndf=8, norm="spectral").train()
    for _ in range(20):  # power iterations run in training-mode forwards
        d(torch.rand(1, 6, 70, 70))
    conv = d.body[2]
    sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
    assert sigma == pytest.approx(1.0, abs=0.05)


def test_patchgan_rejects_unknown_norm() -> None:
    with pytest.raises(ValueError, match="spectral, none, batch"):
        PatchGAN(norm="instance")


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_detect_and_rebuild(name: str) -> None:
    arch, config = PRESETS[name]
    model = _on_meta(arch, config)
    assert arch_of(model) == arch
    json.dumps(model.config)  # JSON-serialisable
    assert model.config == config
    found_arch, found = detect(model.state_dict())
    assert found_arch == arch
    # Everything the weights can tell is recovered; local_pool is an inference setting, not in the weights.
    assert {k: v for k, v in found.items() if k != "local_pool"} == {
        k: v for k, v in config.items() if k != "local_pool"
    }


def test_detect_recovers_irregular_nafnet_configs() -> None:
    config = {"img_channel": 3, "width": 8, "middle_blk_num": 0, "enc_blk_nums": [2, 0, 3], "dec_blk_nums": [1, 2, 0]}
    model = NAFNet(**config)
    arch, found = detect(model.state_dict())
    assert arch == "nafnet"
    assert found == {**config, "local_pool": None}
    rebuilt = build(arch, found)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_detect_recovers_dgf_growth_rate_norm_and_layers() -> None:
    model = DGF(growth_rate=12, width=40, dilations=[1, 2, 2, 1, 1, 1], norm="instance", dropout=0.0)
    arch, found = detect(model.state_dict())
    assert (arch, found["growth_rate"], found["width"], found["norm"]) == ("dgf", 12, 40, "instance")
    assert len(found["dilations"]) == 6  # rates leave no trace in the weights: the default schedule is used


def test_detect_names_expected_and_found_for_unknown_weights() -> None:
    state = {"conv_first.weight": torch.zeros(1), "body.x": torch.zeros(1)}
    with pytest.raises(WeightsError) as info:
        detect(state)
    message = str(info.value)
    assert "expected nafnet, dgf, patchgan" in message and "'conv_first.weight'" in message
    assert "\n" not in message


def test_build_errors_are_one_line() -> None:
    with pytest.raises(WeightsError, match="unknown architecture 'unet'"):
        build("unet", {})
    with pytest.raises(WeightsError, match="cannot build dgf"):
        build("dgf", {"growth": 3})
    with pytest.raises(WeightsError, match="dilations must be one or more positive integers"):
        build("dgf", {"dilations": [1, 0]})
    assert names() == ["nafnet", "dgf", "patchgan"]


def test_specs_are_consistent() -> None:
    """Preset names are unique, default presets exist, and what specs take from metadata is a config key."""
    all_presets = [name for spec in SPECS for name in spec.presets]
    assert len(all_presets) == len(set(all_presets)) == len(PRESETS)
    for spec, folder in zip(SPECS, ARCHITECTURES):
        assert spec.name == folder and spec.default_preset in spec.presets
        for config in spec.presets.values():
            assert set(spec.not_in_weights) <= set(config) and set(spec.inference_defaults) <= set(config)
    assert spec_for("nafnet").inference_defaults == {"local_pool": 384}
    with pytest.raises(WeightsError, match="unknown architecture 'unet'; expected one of nafnet, dgf, patchgan"):
        spec_for("unet")


def test_preset_resolves_bare_names_and_copies() -> None:
    assert preset("nafnet") == PRESETS["nafnet-s"] and preset("dgf") == PRESETS["dgf"]
    arch, config = preset("dgf-light")
    config["dilations"].append(9)
    assert arch == "dgf" and preset("dgf-light")[1] == DGF_LIGHT  # callers cannot alter the tables
    with pytest.raises(WeightsError, match="unknown preset 'unet'"):
        preset("unet")
    assert generator_choices() == ["dgf", "dgf-light", "nafnet", "nafnet-s", "nafnet-s-unshuffle", "nafnet-w32", "nafnet-w64"]


def test_registry_and_train_command_import_without_torch() -> None:
    """The CLI builds its --arch choices from the registry at import time; torch must stay out of --help."""
    code = "import sys, deblurcli.cli.train; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
