"""``deblur models``: an 80-column table, ``show`` for the rest, a saved default, and a fast offline failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_startup import torch_imported_by
from click.testing import CliRunner
from PIL import Image

from deblurcli.cli import group
from deblurcli.hub import unreachable
from deblurcli.weights import list_models

ROOT = Path(__file__).resolve().parent.parent


def models(*args: str, **env: str) -> object:
    return CliRunner().invoke(group, ["models", *args], env={"COLUMNS": "80", **env})


def config_file() -> Path:
    return Path(os.environ["XDG_CONFIG_HOME"]) / "deblurcli" / "config.toml"


def test_table_fits_80_columns_one_line_per_trained_model() -> None:
    result = models()
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 80
    for entry in list_models():
        rows = [line for line in lines if line.split() and line.split()[0] == entry.name]
        if entry.shipped:
            assert len(rows) == 1 and entry.quality_summary in rows[0] and entry.arch in rows[0]
        else:  # catalogued before it is trained: not offered
            assert rows == [] and f"not trained yet, so not offered: {entry.name}" in result.stdout
    header = lines[0].split()
    assert header == ["name", "arch", "params", "source", "here", "quality"]
    assert "deblur models show NAME" in result.stdout


def test_show_has_the_paragraph_the_table_leaves_out() -> None:
    shown = models("show", "nafnet-s-free")
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.stdout.split())
    for fact in ("licence MIT", "trained on 44 freely licensed photos only", "measured: LIVE1", "1.97 M parameters"):
        assert fact in text
    hub = " ".join(models("show", "nafnet-gopro-w64").stdout.split())
    assert "from mikestealth/nafnet-models at commit 9526c38b" in hub and "published GoPro 33.71 dB" in hub
    untrained = models("show", "dgf-light")
    assert untrained.exit_code == 0 and "not trained yet" in untrained.stdout


def test_default_is_saved_in_a_toml_config_and_deblur_model_still_wins(tmp_path: Path) -> None:
    assert models("default").stdout.strip() == "default model: nafnet-s (from best model available offline)"
    saved = models("default", "nafnet-s-free")
    assert saved.exit_code == 0 and str(config_file()) in saved.stdout
    assert config_file().read_text() == 'model = "nafnet-s-free"\n'
    listed = json.loads(models("--json").stdout)
    assert listed["default"] == "nafnet-s-free" and listed["default_from"] == f"saved in {config_file()}"
    assert "nafnet-s-free *" in models().stdout

    Image.new("RGB", (40, 32), (90, 120, 150)).save(tmp_path / "p.png")
    run = CliRunner().invoke(group, [str(tmp_path / "p.png"), "-o", str(tmp_path / "o.png"), "-v", "--method", "network"])
    assert run.exit_code == 0, run.output
    assert "model nafnet-s-free" in run.stderr

    assert json.loads(models("--json", DEBLUR_MODEL="nafnet-s").stdout)["default"] == "nafnet-s"
    shadowed = models("default", "nafnet-s-free", DEBLUR_MODEL="nafnet-s")
    assert "DEBLUR_MODEL=nafnet-s is set, and wins" in shadowed.stderr

    refused = models("default", "dgf-light")
    assert refused.exit_code == 2 and config_file().read_text() == 'model = "nafnet-s-free"\n'
    unset = models("default", "--unset")
    assert unset.exit_code == 0 and "default model: nafnet-s" in unset.stdout
    assert config_file().read_text() == ""


@pytest.mark.parametrize(
    ("content", "message"),
    [("model = [1", "not a valid TOML file"), ("model = 3\n", "model must be a string"), ('model = "gone"\n', "unknown model 'gone'")],
)
def test_a_broken_config_is_one_line_naming_the_file(content: str, message: str) -> None:
    config_file().parent.mkdir(parents=True)
    config_file().write_text(content)
    result = models()
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith(f"error: {config_file()}: ") and message in result.output


def test_offline_download_fails_in_seconds_with_the_two_remedies(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9",
    }  # the discard port refuses connections, as a machine without a network does; no proxy variables
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "deblurcli", "models", "download", "nafnet-gopro-w32"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model 'nafnet-gopro-w32' is not in the Hugging Face cache")
    assert "http://127.0.0.1:9 cannot be reached" in lines[0]
    assert "set HF_ENDPOINT to a Hub mirror" in lines[0] and "pass --weights FILE" in lines[0]
    assert "/mikestealth/nafnet-models/resolve/9526c38b626f6e8ca0c02e4a282859ac84d240a2/NAFNet-GoPro-width32.pth" in lines[0]
    assert elapsed < 15  # the client's own retries took 26 s; this is interpreter start-up and one refused connect


def test_a_proxy_is_left_to_the_http_client(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "HTTP_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    assert unreachable("http://127.0.0.1:9") is not None
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert unreachable("http://127.0.0.1:9") is None  # only the client can tell whether the proxy gets through


def test_a_refiner_is_listed_as_one_and_not_offered_as_a_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deblurcli import weights

    entry = {"arch": "nafnet", "config": {}, "source": "bundled"}
    catalogue = {"models": [
        {**entry, "name": "deblur-b", "file": "b.safetensors", "quality_summary": "+1 dB"},
        {**entry, "name": "refiner-a", "file": "a.safetensors", "role": "refine"},
    ]}
    (tmp_path / "models.json").write_text(json.dumps(catalogue))
    for name in ("a", "b"):
        (tmp_path / f"{name}.safetensors").write_bytes(b"x")
    monkeypatch.setattr(weights, "bundled_dir", lambda: tmp_path)
    row = [line for line in models().stdout.splitlines() if line.startswith("refiner-a")]
    assert len(row) == 1 and "refiner: -" in row[0]
    for args in (["x.jpg", "--model", "refiner-a"], ["models", "default", "refiner-a"]):
        refused = CliRunner().invoke(group, args)
        assert refused.exit_code == 2
        assert "model 'refiner-a' refines deconvolutions (pass it as --refiner); choose one of: deblur-b (see" in refused.output


def test_the_catalogue_counts_parameters_exactly_as_the_models_have_them() -> None:
    import torch

    from deblurcli.models.registry import build
    from deblurcli.weights import list_models

    for entry in list_models():
        with torch.device("meta"):
            model = build(entry.arch, entry.config)
        assert entry.params == sum(p.numel() for p in model.parameters()), entry.name


def test_listing_models_does_not_import_torch() -> None:
    """`deblur models` and `models show` answer in well under a second: torch's import alone takes one."""
    assert not torch_imported_by(["models"], ["models", "show", "nafnet-s"])
