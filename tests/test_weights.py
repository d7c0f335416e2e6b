"""Weights: the catalogue, safe reading, saving, and loading generators from names and files of any origin."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import constants

from deblurcli import weights
from deblurcli.errors import WeightsError
from deblurcli.models.dgf import DGF
from deblurcli.models.nafnet import TLC_LOCAL_POOL, NAFNet
from deblurcli.models.patchgan import PatchGAN
from deblurcli.models.spandrel import SPANDREL_TILE_MARGIN, SpandrelGenerator
from deblurcli.models.registry import PRESETS
from deblurcli.weights import (
    DEFAULT_MODEL,
    get_entry,
    list_models,
    load_generator,
    read_state_dict,
    resolve_weights,
    save_generator,
)

REPO_CATALOGUE = Path(__file__).resolve().parent.parent / "weights" / "models.json"


def _nafnet(local_pool: int | None = None) -> NAFNet:
    torch.manual_seed(0)
    net = NAFNet(width=8, enc_blk_nums=[1, 2], middle_blk_num=1, dec_blk_nums=[1, 1], local_pool=local_pool)
    for name, p in net.named_parameters():  # beta/gamma start at 0 (identity blocks): make them act
        if name.endswith(("beta", "gamma")):
            torch.nn.init.normal_(p, std=0.5)
    return net.eval()


def _run(model: torch.nn.Module, seed: int = 1, size: tuple[int, int] = (37, 45)) -> torch.Tensor:
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(torch.rand(1, 3, *size))


@pytest.fixture
def bundled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty bundled-weights folder holding a copy of the real catalogue, its bundled pins removed (the
    tests' own small files stand in for the shipped ones)."""
    folder = tmp_path / "bundled"
    folder.mkdir()
    raw = json.loads(REPO_CATALOGUE.read_text(encoding="utf-8"))
    for item in raw["models"]:
        if item["source"] == "bundled":
            item["sha256"] = item["size"] = None
    (folder / "models.json").write_text(json.dumps(raw), encoding="utf-8")
    monkeypatch.setattr(weights, "bundled_dir", lambda: folder)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return folder


# --- the catalogue ---------------------------------------------------------------------------------------


def test_catalogue_entries_are_pinned_and_consistent() -> None:
    entries = {e.name: e for e in list_models()}
    assert list(entries)[:3] == ["nafnet-s", "nafnet-s-free", "dgf-light"]  # bundled first, best first
    for name in ("nafnet-gopro-w32", "nafnet-gopro-w64"):
        e = entries[name]
        assert (e.source, e.repo_id) == ("hub", "mikestealth/nafnet-models")
        assert e.revision == "9526c38b626f6e8ca0c02e4a282859ac84d240a2"
        assert len(e.sha256 or "") == 64 and e.license == "MIT"
        assert "published figure, not measured here" in e.published_quality
        assert e.for_inference == {"local_pool": TLC_LOCAL_POOL}
    assert entries["nafnet-gopro-w64"].size == 271_778_961
    assert entries["nafnet-gopro-w64"].sha256 == "329d3ab4077b8d6b7ff61de376e483714667960bf85be027bf4335cda701196f"
    assert entries["nafnet-gopro-w32"].sha256 == "19394e6155d12ef6371d1d57496f87f0ec88f92bdffa27c0792690722d5d1a5c"
    # Catalogue configs agree with the architecture presets used for training and benchmarks.
    pairs = {
        "nafnet-s": "nafnet-s",
        "nafnet-s-free": "nafnet-s",
        "dgf-light": "dgf-light",
        "nafnet-gopro-w32": "nafnet-w32",
        "nafnet-gopro-w64": "nafnet-w64",
    }
    for entry_name, preset in pairs.items():
        assert (entries[entry_name].arch, entries[entry_name].config) == PRESETS[preset]


def test_shipped_bundled_weights_are_pinned_and_match() -> None:
    """Issue 19.24: a bundled file is checked like a Hub one; a shipped entry without a pin (or with a stale
    one after retraining) fails here, not silently in a user's install."""
    shipped = [e for e in list_models() if e.source == "bundled" and e.shipped]
    assert shipped
    for entry in shipped:
        assert len(entry.sha256 or "") == 64 and entry.size, f"{entry.name}: no sha256/size in models.json"
        path = weights.bundled_dir() / entry.file
        assert path.stat().st_size == entry.size and weights.sha256_file(path) == entry.sha256, entry.name
        assert resolve_weights(entry) == path


def test_bundled_dir_is_the_repo_weights_folder_in_a_source_install() -> None:
    assert weights.bundled_dir() == REPO_CATALOGUE.parent


def test_unknown_model_lists_the_names_of_trained_models() -> None:
    with pytest.raises(WeightsError, match="unknown model 'sharpest'; choose one of: nafnet-s, nafnet-s-free, nafnet-gopro-w32") as info:
        get_entry("sharpest")
    assert "dgf-light" not in str(info.value)  # catalogued, but not trained yet: not offered


def test_default_is_the_first_bundled_model_present(bundled: Path) -> None:
    assert weights.default_model_name() == DEFAULT_MODEL == "nafnet-s"  # nothing bundled yet
    save_generator(
        DGF(growth_rate=4, width=8, dilations=[1, 1], norm="instance"), bundled / "deblur-dgf-light.safetensors", {}
    )
    assert weights.default_model_name() == "dgf-light"
    save_generator(_nafnet(64), bundled / "deblur-nafnet-s.safetensors", {})
    assert weights.default_model_name() == "nafnet-s"


def test_catalogue_says_what_each_model_was_trained_on() -> None:
    """The licence question a commercial user has is answered by the catalogue: which data, which terms."""
    entries = {e.name: e for e in list_models()}
    assert all(e.training_data for e in entries.values())
    assert "non-commercial" in entries["nafnet-s"].training_data
    free = entries["nafnet-s-free"].training_data
    assert "freely licensed photos only" in free and "BSDS" not in free and "non-commercial" not in free


def test_deblur_model_environment_variable_picks_the_default(bundled: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_generator(_nafnet(64), bundled / "deblur-nafnet-s.safetensors", {})
    monkeypatch.setenv("DEBLUR_MODEL", "nafnet-gopro-w32")
    assert weights.default_model_name() == "nafnet-gopro-w32"
    monkeypatch.setenv("DEBLUR_MODEL", "sharpest")
    with pytest.raises(WeightsError, match=r"^DEBLUR_MODEL: unknown model 'sharpest'; choose one of: nafnet-s,"):
        weights.default_model_name()
    monkeypatch.setenv("DEBLUR_MODEL", " ")
    assert weights.default_model_name() == "nafnet-s"


def test_missing_bundled_weights_give_one_clear_line(bundled: Path) -> None:
    with pytest.raises(WeightsError) as info:
        load_generator()
    assert str(info.value) == (
        "bundled weights missing for model 'nafnet-s' (deblur-nafnet-s.safetensors); reinstall deblurcli or pass --weights"
    )


def test_untrained_bundled_model_says_train_not_reinstall(bundled: Path) -> None:
    assert get_entry("dgf-light").shipped is False and get_entry("nafnet-s").shipped is True
    with pytest.raises(WeightsError) as info:
        load_generator("dgf-light")
    assert str(info.value) == (
        "model 'dgf-light' has no trained weights yet (docs/MODEL_CARD.md); "
        "train one with 'deblur train --arch dgf-light' and pass --weights"
    )


def test_damaged_bundled_weights_are_refused(bundled: Path) -> None:
    path = bundled / "deblur-nafnet-s.safetensors"
    save_generator(_nafnet(64), path, {})
    raw = json.loads((bundled / "models.json").read_text())
    raw["models"][0]["sha256"] = hashlib.sha256(b"something else").hexdigest()
    (bundled / "models.json").write_text(json.dumps(raw))
    with pytest.raises(WeightsError, match="bundled weights deblur-nafnet-s.safetensors are damaged"):
        resolve_weights(get_entry("nafnet-s"))
    raw["models"][0]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (bundled / "models.json").write_text(json.dumps(raw))
    assert resolve_weights(get_entry("nafnet-s")) == path


def test_broken_catalogue_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "models.json").write_text('{"models": [{"name": "x"}]}')
    monkeypatch.setattr(weights, "bundled_dir", lambda: tmp_path)
    with pytest.raises(WeightsError, match="model catalogue .* is missing or broken"):
        list_models()


# --- reading files safely --------------------------------------------------------------------------------


def test_official_nafnet_checkpoint_loads_with_tlc(tmp_path: Path) -> None:
    """A BasicSR-format .pth (state dict under 'params', no metadata) loads without naming its config."""
    reference = _nafnet()
    path = tmp_path / "NAFNet-GoPro-width8.pth"
    torch.save({"params": reference.state_dict()}, path)
    model = load_generator(weights=path)
    assert isinstance(model, NAFNet) and not model.training
    assert model.config == {**reference.config, "local_pool": TLC_LOCAL_POOL}
    reference.set_local_pool(TLC_LOCAL_POOL)
    assert torch.allclose(_run(model), _run(reference), atol=1e-6)


@pytest.mark.parametrize("wrap", ["params_ema", "state_dict", "module."])
def test_checkpoint_wrappers_are_unwrapped(tmp_path: Path, wrap: str) -> None:
    state = _nafnet().state_dict()
    if wrap == "module.":  # saved from DataParallel
        obj: object = {f"module.{k}": v for k, v in state.items()}
    elif wrap == "params_ema":  # EMA weights win over 'params' (BasicSR evaluates with them when present)
        obj = {wrap: state, "params": {k: torch.zeros_like(v) for k, v in state.items()}, "iter": 5}
    else:  # Lightning
        obj = {wrap: state, "epoch": 3, "optimizer_states": []}
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    tensors, metadata = read_state_dict(path)
    assert metadata == {} and tensors.keys() == state.keys()
    assert all(torch.equal(tensors[k], state[k]) for k in state)


class _Payload:
    """Unpickling this would create a file: proof that a full unpickle happened."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))


def test_pickled_code_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"params": _nafnet().state_dict(), "extra": _Payload(marker)}, path)
    with pytest.raises(WeightsError, match="evil.pth: refused to load .*full unpickle") as info:
        load_generator(weights=path)
    assert "\n" not in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, this is not a checkpoint\n", b"PK\x03\x04truncated zip", b'\x10\x00\x00\x00\x00\x00\x00\x00{"a":'],
    ids=["empty", "text", "truncated-zip", "truncated-safetensors"],
)
def test_broken_files_give_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError) as info:
        load_generator(weights=path)
    assert str(info.value).startswith("model.pth: ") and "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no such weights file"):
        load_generator(weights=tmp_path / "nope.safetensors")


# --- saving and loading our own ------------------------------------------------------------------------------


def test_save_and_load_roundtrip_keeps_config_and_local_pool(tmp_path: Path) -> None:
    model = _nafnet(local_pool=64)
    path = tmp_path / "mine.safetensors"
    path.write_bytes(b"old contents")  # replaced atomically
    save_generator(model, path, {"step": 1200, "note": "test run"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.safetensors"]  # no temp file left
    _, metadata = read_state_dict(path)
    assert metadata["arch"] == "nafnet" and json.loads(metadata["config"]) == model.config
    assert metadata["step"] == "1200" and metadata["note"] == "test run"
    loaded = load_generator(weights=path)
    assert loaded.config["local_pool"] == 64  # trained with it, run with it (not TLC's 384)
    assert torch.allclose(_run(loaded), _run(model), atol=1e-6)


def test_dgf_metadata_keeps_what_shapes_cannot_tell(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DGF(growth_rate=4, width=8, dilations=[3, 1, 2], norm="batch").eval()
    path = tmp_path / "dgf.safetensors"
    save_generator(model, path, {})
    loaded = load_generator(weights=path)
    assert loaded.config == model.config and loaded.tile_margin == 3 + 6
    assert torch.allclose(_run(loaded, size=(15, 11)), _run(model, size=(15, 11)), atol=1e-6)


def test_named_model_loads_bundled_file_with_its_inference_settings(bundled: Path) -> None:
    model = _nafnet(local_pool=64)
    save_generator(model, bundled / "deblur-nafnet-s.safetensors", {})
    loaded = load_generator("nafnet-s")
    assert isinstance(loaded, NAFNet) and not loaded.training
    assert torch.allclose(_run(loaded), _run(model), atol=1e-6)


# --- the wrong architecture ---------------------------------------------------------------------------------


def test_wrong_architecture_names_expected_and_found(bundled: Path, tmp_path: Path) -> None:
    dgf_file = tmp_path / "dgf.safetensors"
    save_generator(DGF(growth_rate=4, width=8, dilations=[1]), dgf_file, {})
    with pytest.raises(WeightsError) as info:
        load_generator("nafnet-s", weights=dgf_file)
    assert str(info.value) == "dgf.safetensors: expected nafnet weights for model 'nafnet-s', found dgf"

    official = tmp_path / "plain.pth"  # no metadata: recognised from its keys
    torch.save(DGF(growth_rate=4, width=8, dilations=[1]).state_dict(), official)
    with pytest.raises(WeightsError, match="expected nafnet weights for model 'nafnet-s', found dgf"):
        load_generator("nafnet-s", weights=official)

    alien = tmp_path / "alien.pth"
    torch.save({"conv_first.weight": torch.zeros(4, 3, 3, 3), "conv_last.weight": torch.zeros(3, 4, 3, 3)}, alien)
    with pytest.raises(WeightsError, match="expected nafnet .*found an unrecognised architecture.*'conv_first.weight'"):
        load_generator("nafnet-s", weights=alien)


def test_discriminator_is_not_a_generator(tmp_path: Path) -> None:
    path = tmp_path / "d.pth"
    torch.save(PatchGAN(ndf=8).state_dict(), path)
    with pytest.raises(WeightsError, match=r"expected a generator \(nafnet, dgf\), found patchgan"):
        load_generator(weights=path)


def test_metadata_cannot_override_what_the_tensors_say(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = _nafnet(local_pool=64)
    path = tmp_path / "liar.safetensors"
    save_generator(model, path, {})
    tensors, metadata = read_state_dict(path)
    # A huge width in the metadata would make build() allocate gigabytes: the shapes win, the pool is kept.
    save_file(tensors, str(path), metadata={**metadata, "config": json.dumps({**model.config, "width": 10**7})})
    loaded = load_generator(weights=path)
    assert loaded.config["width"] == 8 and loaded.config["local_pool"] == 64
    save_file(tensors, str(path), metadata={**metadata, "arch": "dgf"})
    with pytest.raises(WeightsError, match="its metadata says dgf but its tensors are nafnet"):
        load_generator(weights=path)


def test_tensors_that_do_not_fit_are_summarised(tmp_path: Path) -> None:
    state = _nafnet().state_dict()
    state["ending.weight"] = torch.zeros(3, 8, 5, 5)  # a variant with another kernel size
    del state["encoders.0.0.conv1.bias"]
    path = tmp_path / "variant.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as info:
        load_generator(weights=path)
    message = str(info.value)
    assert message.startswith("variant.pth: weights do not fit nafnet")
    assert "1 missing, 0 unexpected, 1 of another shape (first: 'ending.weight')" in message


# --- other architectures through spandrel ---------------------------------------------------------------------


def _dncnn_file(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    dncnn = pytest.importorskip("spandrel.architectures.DnCNN")
    torch.manual_seed(0)
    net = dncnn.DnCNN(in_nc=3, out_nc=3, nc=8, nb=8, act_mode="R").eval()
    path = tmp_path / "dncnn.pth"
    torch.save(net.state_dict(), path)
    return path, net


def test_spandrel_loads_architectures_we_do_not_know(tmp_path: Path) -> None:
    path, net = _dncnn_file(tmp_path)
    model = load_generator(weights=path)
    assert isinstance(model, SpandrelGenerator)
    assert model.size_multiple == 1 and model.tile_margin == SPANDREL_TILE_MARGIN
    assert model.config == {"spandrel_arch": "DnCNN"}
    x = torch.rand(1, 3, 21, 17)
    with torch.no_grad():
        assert torch.allclose(model(x), net(x).clamp(0, 1), atol=1e-6)


def test_spandrel_missing_gives_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "restormer.pth"
    torch.save({"patch_embed.proj.weight": torch.zeros(8, 3, 3, 3)}, path)
    monkeypatch.setitem(sys.modules, "spandrel", None)  # import fails as if not installed
    with pytest.raises(WeightsError, match=r"unrecognised architecture .*pip install deblurcli\[spandrel\]"):
        load_generator(weights=path)


# --- deblur models ---------------------------------------------------------------------------------------------


def test_models_command_json_and_table(bundled: Path) -> None:
    from deblurcli.cli import group

    result = CliRunner().invoke(group, ["models", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["default"] == "nafnet-s" and data["default_from"] == "best model available offline"
    rows = {row["name"]: row for row in data["models"]}
    assert round(rows["nafnet-gopro-w64"]["params"] / 1e6, 1) == 67.9
    assert rows["nafnet-s"]["cached"] is False and rows["nafnet-gopro-w32"]["cached"] is False
    assert rows["dgf-light"]["trained"] is False and rows["nafnet-s"]["trained"] is True
    assert rows["nafnet-s-free"]["training_data"].startswith("44 freely licensed photos only")
    table = CliRunner().invoke(group, ["models"], env={"COLUMNS": "200"})
    assert table.exit_code == 0
    for name in rows:
        assert name in table.output
    assert "missing" in table.output and "33.71 dB" in table.output
    assert "not trained yet, so not offered: dgf-light" in table.output
    chosen = CliRunner().invoke(group, ["models", "--json"], env={"DEBLUR_MODEL": "nafnet-gopro-w64"})
    assert json.loads(chosen.output)["default"] == "nafnet-gopro-w64"
    bad = CliRunner().invoke(group, ["models"], env={"DEBLUR_MODEL": "nope"})
    assert bad.exit_code == 1 and bad.output.startswith("error: DEBLUR_MODEL: unknown model 'nope'")


def test_deblur_names_and_uses_the_model_deblur_model_picks(bundled: Path, tmp_path: Path) -> None:
    from PIL import Image

    from deblurcli.cli import group

    save_generator(_nafnet(64), bundled / "deblur-nafnet-s-free.safetensors", {})
    Image.new("RGB", (40, 32), (90, 120, 150)).save(tmp_path / "p.png")
    ok = CliRunner().invoke(group, [str(tmp_path / "p.png"), "-o", str(tmp_path / "o.png"), "-v"], env={"DEBLUR_MODEL": "nafnet-s-free"})
    assert ok.exit_code == 0, ok.stderr
    assert "model nafnet-s-free (NAFNet)" in ok.stderr and (tmp_path / "o.png").is_file()
    bad = CliRunner().invoke(group, [str(tmp_path / "p.png"), "-o", str(tmp_path / "x.png")], env={"DEBLUR_MODEL": "nope"})
    assert bad.exit_code == 1 and not (tmp_path / "x.png").exists()
    assert bad.stderr.strip().splitlines() == [
        "error: DEBLUR_MODEL: unknown model 'nope'; choose one of: nafnet-s, nafnet-s-free, "
        "nafnet-gopro-w32, nafnet-gopro-w64 (or pass --weights FILE)"
    ]


def test_models_download_errors_are_one_line(bundled: Path) -> None:
    from deblurcli.cli import group

    missing = CliRunner().invoke(group, ["models", "download", "nafnet-s"])  # bundled, but its file is gone
    assert missing.exit_code == 1
    assert missing.output.startswith("error: ") and missing.output.count("\n") == 1
    unknown = CliRunner().invoke(group, ["models", "download", "nope"])
    assert unknown.exit_code == 2 and "model 'nope' is not in the catalogue" in unknown.output


def test_refiners_are_never_the_default_deblurring_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``refine`` entry maps deconvolutions, not blurry photos: the default model skips it, and the
    default refiner is the first shipped refine entry whose file is present."""
    folder = tmp_path / "weights"
    folder.mkdir()
    entry = {"arch": "nafnet", "config": {}, "source": "bundled"}
    catalogue = {"format": 1, "models": [
        {**entry, "name": "refiner-a", "file": "a.safetensors", "role": "refine"},
        {**entry, "name": "deblur-b", "file": "b.safetensors"},
    ]}
    (folder / "models.json").write_text(json.dumps(catalogue))
    for name in ("a", "b"):
        (folder / f"{name}.safetensors").write_bytes(b"x")
    monkeypatch.setattr(weights, "bundled_dir", lambda: folder)
    monkeypatch.delenv("DEBLUR_MODEL", raising=False)
    assert weights.default_model_name() == "deblur-b"
    assert weights.default_refiner_name() == "refiner-a"
    (folder / "a.safetensors").unlink()
    assert weights.default_refiner_name() is None
    catalogue["models"][0]["role"] = "sharpen"
    (folder / "models.json").write_text(json.dumps(catalogue))
    with pytest.raises(WeightsError, match="role must be"):
        weights.list_models()
