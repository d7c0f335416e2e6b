"""The OpenVINO backend: its export form equals NAFNet, its output equals torch's, its cache is reused, and
``--backend`` resolves (or fails in one line) as documented."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from deblurcli.backends import resolve_backend
from deblurcli.backends.export import PoolForExport, export_form
from deblurcli.engine import psnr
from deblurcli.errors import MissingExtraError, OptionError
from deblurcli.models.nafnet import NAFNet
from deblurcli.models.nafnet.model import ChannelPool, box_mean
from deblurcli.session import Session

CPU = torch.device("cpu")


def photo(h: int = 150, w: int = 200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([xx / w, yy / h, 0.5 + 0.3 * np.sin(xx / 7.0) * np.cos(yy / 5.0)], axis=-1)
    return (0.8 * rgb + 0.2 * rng.random((h, w, 3), dtype=np.float32)).astype(np.float32)


def busy_nafnet(local_pool: int | None = 16) -> NAFNet:
    """A tiny NAFNet whose residual branches do work (``beta``/``gamma`` start at zero in a fresh model)."""
    torch.manual_seed(0)
    net = NAFNet(width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1], local_pool=local_pool).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.normal_(0.0, 0.3)
    return net


@pytest.fixture
def without_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import openvino`` fails, as where the extra is not installed."""
    monkeypatch.setitem(sys.modules, "openvino", None)


# --------------------------------------------------------------------------- export form (torch only)


@pytest.mark.parametrize("k", [1, 2, 3, 7, 8, 16, 64])
@pytest.mark.parametrize("shape", [(5, 9), (16, 16), (40, 24)])
def test_pool_for_export_is_the_clipped_box_mean(k: int, shape: tuple[int, int]) -> None:
    x = torch.rand(2, 3, *shape)
    assert torch.allclose(PoolForExport(k, 1)(x), box_mean(x, k), atol=1e-6)


@pytest.mark.parametrize(("k", "step"), [(16, 2), (64, 8), (32, 4)])
@pytest.mark.parametrize("shape", [(16, 16), (40, 24), (5, 9)])
def test_pool_for_export_pools_the_same_cells_as_the_model(k: int, step: int, shape: tuple[int, int]) -> None:
    pool = ChannelPool()
    pool.window, pool.step = k, step
    x = torch.rand(2, 3, *shape)
    assert torch.allclose(PoolForExport(k, step)(x), pool(x), atol=1e-6)


@pytest.mark.parametrize("local_pool", [16, 64, None])
def test_export_form_equals_the_model_in_fp32(local_pool: int | None) -> None:
    net = busy_nafnet(local_pool)
    twin = export_form(net)
    x = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        assert (twin(x) - net(x)).abs().max() < 1e-5
    assert all(not isinstance(m, type(net.encoders[0][0])) for m in twin.modules())  # every block rewritten
    assert any(isinstance(m, type(net.encoders[0][0])) for m in net.modules())  # the original untouched


def test_the_export_cache_key_follows_the_pool_cells_not_only_the_weights() -> None:
    from deblurcli.backends.openvino import weights_digest

    net = busy_nafnet(64)
    before = weights_digest(net)
    net.encoders[0][0].sca[0].step = 1  # same weights and config, a different graph
    assert weights_digest(net) != before


# --------------------------------------------------------------------------- resolution


def test_auto_is_torch_without_openvino(without_openvino: None, model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEBLUR_BACKEND")
    session = Session("network", weights=model_file, device="cpu", precision="bf16")
    assert session.backend is None
    assert "backend torch" in session.describe()


def test_deblur_backend_sets_the_default(model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEBLUR_BACKEND", "tensorrt")
    with pytest.raises(OptionError, match="unknown backend"):
        Session("network", weights=model_file, device="cpu")
    assert Session("network", weights=model_file, device="cpu", backend="torch").backend is None  # an explicit choice wins


def test_explicit_openvino_without_openvino_names_the_extra(without_openvino: None, model_file: Path) -> None:
    with pytest.raises(MissingExtraError, match=r"pip install 'deblurcli\[openvino\]'"):
        Session("network", weights=model_file, device="cpu", backend="openvino")


def test_python_api_takes_the_backend(without_openvino: None, model_file: Path) -> None:
    from deblurcli.api import deblur_image, load_model

    model = load_model(weights=model_file, device="cpu")
    photo = np.zeros((32, 40, 3), dtype=np.uint8)
    with pytest.raises(OptionError, match="unknown backend"):
        deblur_image(photo, model, method="network", backend="tensorrt")
    with pytest.raises(MissingExtraError, match=r"pip install 'deblurcli\[openvino\]'"):
        deblur_image(photo, model, method="network", backend="openvino")
    assert deblur_image(photo, model, method="network", backend="torch").shape == photo.shape


def test_cli_backend_openvino_without_openvino_is_one_line(without_openvino: None, model_file: Path, tmp_path: Path) -> None:
    from deblurcli.cli import group

    Image.new("RGB", (40, 32), (90, 120, 150)).save(tmp_path / "p.png")
    result = CliRunner().invoke(group, [str(tmp_path / "p.png"), "--weights", str(model_file), "--backend", "openvino"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'deblurcli[openvino]'" in lines[0], result.stderr
    assert not (tmp_path / "p_deblurred.png").exists()


def test_auto_leaves_other_architectures_and_fp16_to_torch() -> None:
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    assert resolve_backend("auto", conv, CPU, torch.bfloat16) is None
    assert resolve_backend("auto", busy_nafnet(), CPU, torch.float16) is None
    assert resolve_backend("torch", busy_nafnet(), CPU, torch.bfloat16) is None
    with pytest.raises(OptionError, match="unknown backend"):
        resolve_backend("tensorrt", conv, CPU, torch.float32)


# --------------------------------------------------------------------------- OpenVINO itself


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    pytest.importorskip("openvino")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "deblurcli" / "openvino"


@pytest.mark.own_process
def test_auto_is_openvino_for_a_bf16_nafnet_on_cpu(cache: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEBLUR_BACKEND")
    session = Session("auto", weights=model_file, device="cpu", precision="bf16", refiner=str(model_file))
    assert session.backend is not None and session.refiner_backend is not None
    assert "backend openvino" in session.describe() and session.plan is not None and session.plan.batch_size >= session.backend.streams
    assert Session("network", weights=model_file, device="cpu", precision="fp32").backend is None  # bf16 only


def test_explicit_openvino_refuses_what_it_cannot_run(cache: Path) -> None:
    with pytest.raises(OptionError, match="NAFNet"):
        resolve_backend("openvino", torch.nn.Conv2d(3, 3, 3), CPU, torch.float32)
    with pytest.raises(OptionError, match="fp16"):
        resolve_backend("openvino", busy_nafnet(), CPU, torch.float16)


@pytest.mark.own_process
@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_openvino_matches_torch_fp32_tiled_and_whole(cache: Path, one_thread: None, precision: str) -> None:
    net = busy_nafnet()
    rgb = photo()
    reference = Session("network", module=net, precision="fp32", backend="torch", tile=0).run_network(rgb)
    for tile in (0, 128):
        session = Session("network", module=net, precision=precision, backend="openvino", tile=tile)
        assert session.backend is not None and "backend openvino" in session.describe()
        out = session.run_network(rgb)
        assert not session.backend.failed
        assert psnr(torch.from_numpy(out), torch.from_numpy(reference)) >= 45
        assert psnr(torch.from_numpy(reference), torch.from_numpy(rgb)) < 35  # the network does change the photo


@pytest.mark.own_process
def test_openvino_export_is_cached_and_reused(cache: Path, one_thread: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from deblurcli.backends import openvino

    net, rgb = busy_nafnet(), photo(96, 112)
    first = Session("network", module=net, precision="fp32", backend="openvino", tile=0).run_network(rgb)
    assert len(list(cache.glob("*/*.xml"))) == 1 and any(cache.glob("*/compiled/*"))

    def no_export(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(openvino, "export_form", no_export)
    assert len(list(cache.glob("*/checked/*"))) == 1  # the passed check of that shape is remembered too
    checks: list[tuple[int, ...]] = []
    real_check = openvino.OpenVINONetwork._matches

    def counted(self: object, tile: torch.Tensor, out: torch.Tensor) -> bool:
        checks.append(tuple(tile.shape[2:]))
        return real_check(self, tile, out)  # type: ignore[arg-type]

    monkeypatch.setattr(openvino.OpenVINONetwork, "_matches", counted)
    again = Session("network", module=net, precision="fp32", backend="openvino", tile=0).run_network(rgb)
    np.testing.assert_allclose(again, first, atol=1e-6)
    assert checks == []  # no torch fp32 tile for a shape that passed before
    Session("network", module=net, precision="fp32", backend="openvino", tile=0).run_network(photo(64, 96))
    assert len(checks) == 1  # a new shape is checked


@pytest.mark.own_process
def test_openvino_that_misses_torch_hands_the_run_to_torch(cache: Path, one_thread: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from deblurcli import engine

    net, rgb = busy_nafnet(), photo(64, 96)
    session = Session("network", module=net, precision="fp32", backend="openvino", tile=0)
    monkeypatch.setattr(engine, "MIN_REDUCED_PSNR", 1000.0)  # no output can pass the check
    out = session.run_network(rgb)
    assert session.backend is not None and session.backend.failed
    torch_out = Session("network", module=net, precision="fp32", backend="torch", tile=0).run_network(rgb)
    np.testing.assert_array_equal(out, torch_out)
