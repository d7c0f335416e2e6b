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


# --------------------------------------------------------------- issue 19.4: forged sizes and configs


def _tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = NAFNet(width=8, enc_blk_nums=[1], middle_blk_num=1, dec_blk_nums=[1], local_pool=16)
    return {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}


@pytest.fixture
def no_real_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail a test the moment a model would be built with real memory (a forged file must not get there)."""
    from deblurcli.models import registry

    real = registry.build

    def guarded(arch: str, config: dict[str, object]) -> torch.nn.Module:
        if torch.empty(0).device.type != "meta":
            pytest.fail(f"a {arch} was built for real from {str(config)[:120]}")
        return real(arch, config)

    monkeypatch.setattr(registry, "build", guarded)


def test_forged_block_count_is_refused_before_anything_is_built(tmp_path: Path, photo: Path, no_real_build: None) -> None:
    """20,000 ``middle_blks.N`` keys (a few hundred KB) asked for a ~37 GB model."""
    from safetensors.torch import save_file

    state = _tiny_state()
    state.update({f"middle_blks.{i}.beta": torch.zeros(1) for i in range(1, 20_000)})
    path = tmp_path / "forged.safetensors"
    save_file(state, str(path))
    line = _one_error_line(deblur(photo, "--weights", path, "-o", tmp_path / "out.png"), path)
    assert "not a plausible nafnet (20002 blocks (at most 256))" in line
    assert not (tmp_path / "out.png").exists()


def test_forged_width_is_refused_by_the_file_own_tensor_sizes(tmp_path: Path, no_real_build: None) -> None:
    """An ``intro.weight`` 4096 wide with the rest of a tiny model: only a shapes-only build can tell."""
    from safetensors.torch import save_file

    from deblurcli.errors import WeightsError
    from deblurcli.weights import load_generator

    state = _tiny_state()
    state["intro.weight"] = torch.zeros(512, 3, 3, 3)  # the widest plausible NAFNet: caps alone let it pass
    state["intro.bias"] = torch.zeros(512)
    path = tmp_path / "wide.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsError, match=r"weights do not fit nafnet .* of another shape"):
        load_generator(weights=path)
    state["intro.weight"] = torch.zeros(4096, 3, 3, 3)
    save_file(state, str(path))
    with pytest.raises(WeightsError, match=r"not a plausible nafnet \(width 4096"):
        load_generator(weights=path)


def test_config_nested_50000_deep_is_one_line(tmp_path: Path, photo: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "deep.safetensors"
    save_file(_tiny_state(), str(path), metadata={"format": "deblurcli", "arch": "nafnet", "config": "[" * 50_000 + "]" * 50_000})
    line = _one_error_line(deblur(photo, "--weights", path, "-o", tmp_path / "out.png"), path)
    assert "the config in its metadata is not a JSON object" in line
