"""Issue 8, untrusted weights: only the gaps the library-level tests leave.

Already proven (not repeated): pickled code in a .pth is refused and never run
(test_weights.py::test_pickled_code_is_never_run); broken files are one line (test_broken_files_give_one_line);
the wrong architecture names expected and found (test_wrong_architecture_names_expected_and_found); a
tampered or wrong-size Hub download is deleted and refused (test_hub.py::test_wrong_sha256_is_refused_and_deleted,
test_tampered_cache_file_is_refused_and_deleted, test_size_mismatch_is_refused_before_hashing).

Here: the same refusals as the user meets them through ``deblur --weights`` (one line, exit 1, nothing
written, no traceback), a guard that no module of the package can ever full-unpickle a file, and the one
third-party load path that still does (LPIPS's torchvision backbone).
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

import deblurcli
from deblurcli.cli import group
from deblurcli.models.dgf import DGF
from deblurcli.models.nafnet import NAFNet
from deblurcli.weights import save_generator

PACKAGE = Path(deblurcli.__file__).parent


class _Payload:
    """Unpickling this creates ``marker``: proof that a loader ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))


def deblur(*args: str | Path) -> Result:
    return CliRunner().invoke(group, [*map(str, args), "--threads", "1"], catch_exceptions=False)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    return path


def _one_error_line(result: Result, path: Path) -> str:
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0], result.stderr
    return errors[0]


def test_cli_refuses_a_pickle_that_would_run_code(tmp_path: Path, photo: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    net = NAFNet(width=8, enc_blk_nums=[1], middle_blk_num=1, dec_blk_nums=[1])
    torch.save({"params": net.state_dict(), "extra": _Payload(marker)}, evil)
    line = _one_error_line(deblur(photo, "--weights", evil), evil)
    assert "refused to load" in line
    assert not marker.exists() and not (tmp_path / "a_deblurred.png").exists()


def test_cli_wrong_architecture_names_both(tmp_path: Path, photo: Path) -> None:
    dgf = tmp_path / "dgf.safetensors"
    save_generator(DGF(growth_rate=4, width=8, dilations=[1]), dgf, {})
    line = _one_error_line(deblur(photo, "--model", "nafnet-s", "--weights", dgf), dgf)
    assert "expected nafnet weights for model 'nafnet-s', found dgf" in line
    assert not (tmp_path / "a_deblurred.png").exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00" * 7, b"\xff" * 8 + b"{}", (2**62).to_bytes(8, "little") + b"{"],
    ids=["empty", "short", "huge-header-length", "forged-header-length"],
)
def test_cli_broken_safetensors_is_one_line(tmp_path: Path, photo: Path, content: bytes) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    _one_error_line(deblur(photo, "--weights", path), path)
    assert not (tmp_path / "a_deblurred.png").exists()


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """Every call in ``tree`` with its dotted callee name ("torch.load", "pickle.loads", ...)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts = []
            func: ast.AST = node.func
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                parts.append(func.id)
            found.append((".".join(reversed(parts)), node))
    return found


def test_no_module_can_full_unpickle() -> None:
    """Every torch.load in the package passes weights_only=True, and nothing calls pickle/hub loaders."""
    loads = 0
    for source in sorted(PACKAGE.rglob("*.py")):
        for name, call in _calls(ast.parse(source.read_text(encoding="utf-8"), str(source))):
            where = f"{source.relative_to(PACKAGE.parent)}:{call.lineno}"
            if name.endswith(("pickle.load", "pickle.loads", "load_state_dict_from_url", "hub.load")):
                raise AssertionError(f"{where}: {name} can run code from a file")
            if name == "torch.load":
                loads += 1
                value = {k.arg: k.value for k in call.keywords}.get("weights_only")
                assert isinstance(value, ast.Constant) and value.value is True, f"{where}: torch.load without weights_only=True"
    assert loads >= 2  # weights.py and train/checkpoint.py: the guard is looking at real code


def test_lpips_backbone_in_the_cache_is_not_full_unpickled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deblurcli import metrics

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))  # the cache, restored afterwards
    marker = tmp_path / "pwned"
    backbone = metrics.lpips_backbone_path("alex")
    backbone.parent.mkdir(parents=True)
    torch.save({"features.0.weight": _Payload(marker)}, backbone)
    metrics.make_lpips("alex")
    assert not marker.exists()
