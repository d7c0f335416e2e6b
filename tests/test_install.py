"""The install story: inference needs no training packages, and a command that needs an extra says which.

The base dependencies leave out lpips (which pulls torchvision, which pins an exact torch and so replaced a
CPU torch installed first), piq and piexif; ``deblur train`` and ``deblur eval`` name the extra to install
in one line. Inference is run in a fresh interpreter where those packages cannot be imported at all.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from deblurcli.cli import group
from deblurcli.models.nafnet import NAFNet
from deblurcli.weights import save_generator

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
EXTRAS_ONLY = ("lpips", "torchvision", "piq", "piexif")

#: runs the CLI with the training/evaluation packages made unimportable, as in a base install
_WITHOUT_EXTRAS = (
    "import sys\n"
    f"for name in {EXTRAS_ONLY!r}: sys.modules[name] = None\n"
    "from deblurcli.cli import main\n"
    "main(sys.argv[1:])\n"
)


def _requirement_names(requirements: list[str]) -> set[str]:
    return {req.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip() for req in requirements}


def test_base_dependencies_are_inference_only_and_dev_pulls_the_test_extras() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    base = _requirement_names(project["dependencies"])
    assert {"torch", "click", "rich", "pillow", "safetensors", "huggingface-hub", "psutil", "platformdirs"} <= base
    assert not base & set(EXTRAS_ONLY)
    torch_req = next(r for r in project["dependencies"] if r.startswith("torch"))
    assert "==" not in torch_req  # any torch a user installed first (a CPU build) satisfies it
    extras = project["optional-dependencies"]
    assert {"lpips", "piq"} <= _requirement_names(extras["train"]) and {"lpips", "piq"} <= _requirement_names(extras["eval"])
    assert any("train" in r and "eval" in r for r in extras["all"])
    assert any(r.startswith("deblurcli[") and "train" in r and "eval" in r for r in extras["dev"])
    assert {"pytest", "hypothesis", "piexif"} <= _requirement_names(extras["dev"])
    assert "openvino" in _requirement_names(extras["openvino"])  # --backend openvino, tested in CI through dev
    assert any("openvino" in r for r in extras["all"]) and any(r.startswith("deblurcli[") and "openvino" in r for r in extras["dev"])


def _cli_without_extras(home: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HOME": str(home), "XDG_CONFIG_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_EXTRAS, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env
    )


def test_help_and_a_photo_work_without_the_extras_and_train_eval_name_theirs(tmp_path: Path) -> None:
    weights = tmp_path / "tiny.safetensors"
    save_generator(NAFNet(width=8, enc_blk_nums=[1], middle_blk_num=1, dec_blk_nums=[1], local_pool=16), weights, {})
    Image.new("RGB", (40, 32), (90, 120, 150)).save(tmp_path / "p.png")

    assert _cli_without_extras(tmp_path, "--help").returncode == 0
    run = _cli_without_extras(tmp_path, tmp_path / "p.png", "-o", tmp_path / "o.png", "--weights", weights, "--method", "network")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "o.png").is_file()

    for command, extra in (("eval", "eval"), ("train", "train")):
        source = ["--pairs", tmp_path] if command == "eval" else ["--synthetic", tmp_path, "-o", tmp_path / "run"]
        result = _cli_without_extras(tmp_path, command, *source)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            f"error: piq is not installed; install the {extra!r} extra: pip install 'deblurcli[{extra}]'"
        ]
    assert not (tmp_path / "run").exists()  # refused before any work


def test_no_lpips_needs_only_piq(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--no-lpips (the same switch in train and eval) drops the lpips requirement, and only that."""
    monkeypatch.setitem(sys.modules, "lpips", None)
    train = ["train", "--synthetic", str(tmp_path), "-o", str(tmp_path / "run"), "--lpips-net", "alex"]
    missing = CliRunner().invoke(group, train)
    assert missing.exit_code == 2 and "lpips is not installed; install the 'train' extra" in missing.output
    past = CliRunner().invoke(group, [*train, "--no-lpips", "--arch", "nafnet", "--model", "nafnet-s"])
    assert past.exit_code == 2 and "exclude each other" in past.output  # got past the extra check
    evaluated = CliRunner().invoke(group, ["eval", "--pairs", str(tmp_path)])
    assert evaluated.exit_code == 2 and "install the 'eval' extra" in evaluated.output
    scored = CliRunner().invoke(group, ["eval", "--pairs", str(tmp_path), "--no-lpips"])
    assert scored.exit_code == 1 and "no blurry/sharp pairs" in scored.output
