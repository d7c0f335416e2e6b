"""One spelling and one meaning per option across the commands, and help that shows what runs by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from deblurcli import devices
from deblurcli.cli import group
from deblurcli.models.nafnet import NAFNet
from deblurcli.weights import save_generator

TILE = "--tile [auto|0|N]"
DEVICE = "--device [auto|cpu|cuda[:N]|mps]"
PRECISION = "--precision [auto|fp32|bf16|fp16]"
BACKEND = "--backend [auto|torch|openvino]"


def helptext(*args: str) -> str:
    result = CliRunner().invoke(group, [*args, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_group_help_shows_the_default_commands_options_and_marks_it() -> None:
    text = helptext()
    assert "Options of the default command (deblur*)" in text
    for option in ("-o, --output", "--recursive", "--method", "--model NAME", TILE, DEVICE, "--json", "--version"):
        assert option in text
    commands = text[text.index("Commands:"):]
    assert "deblur*" in commands and "train " in commands and "train*" not in commands
    assert text.count("-h, --help") == 1  # the group's own, not the default command's as well


@pytest.mark.parametrize("command", [(), ("eval",), ("cluster",)])
def test_inference_commands_share_metavars_and_precision_help(command: tuple[str, ...]) -> None:
    text = " ".join(helptext(*command).split())  # unwrapped
    for option in (TILE, DEVICE, PRECISION, BACKEND):
        assert option in text
    assert "auto: bf16 on CPUs with native bf16 (AVX512-BF16, AMX or Arm BF16), else fp32" in text


def test_train_help_says_what_its_auto_precision_does() -> None:
    text = " ".join(helptext("train").split())
    assert DEVICE in text and PRECISION in text and "fp32 on CPUs" in text


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_generator(NAFNet(width=8, enc_blk_nums=[1], middle_blk_num=1, dec_blk_nums=[1], local_pool=16), path, {})
    return path


@pytest.mark.parametrize(("flags", "expected"), [({"avx512_bf16", "avx512f"}, "bfloat16"), ({"avx2"}, "float32")])
def test_auto_precision_on_a_cpu_is_what_the_help_says(
    tmp_path: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch, flags: set[str], expected: str
) -> None:
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(devices, "_macos_sysctl", lambda _name: None)
    Image.new("RGB", (40, 32), (90, 120, 150)).save(tmp_path / "p.png")
    args = [str(tmp_path / "p.png"), "-o", str(tmp_path / "o.png"), "--weights", str(tiny_weights), "--device", "cpu", "-v"]
    result = CliRunner().invoke(group, [*args, "--method", "network"])
    assert result.exit_code == 0, result.output
    assert f"precision {expected}" in result.stderr


def test_json_is_stdout_json_in_every_command(tmp_path: Path, tiny_weights: Path) -> None:
    Image.new("RGB", (40, 32), (90, 120, 150)).save(tmp_path / "p.png")
    deblurred = CliRunner().invoke(group, [str(tmp_path / "p.png"), "--weights", str(tiny_weights), "--json", "--method", "network"])
    assert deblurred.exit_code == 0 and json.loads(deblurred.stdout)["status"] == "done"
    listed = CliRunner().invoke(group, ["models", "--json"])
    assert listed.exit_code == 0 and "models" in json.loads(listed.stdout)
    for folder in ("blur", "sharp"):
        (tmp_path / "pairs" / folder).mkdir(parents=True)
        Image.new("RGB", (48, 44), (90, 120, 150)).save(tmp_path / "pairs" / folder / "a.png")
    scored = CliRunner().invoke(group, ["eval", "--pairs", str(tmp_path / "pairs"), "--outputs", str(tmp_path / "pairs" / "sharp"), "--no-lpips", "--json"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["count"] == 1
    for command in ((), ("eval",), ("models",), ("cluster",)):
        assert "--json FILE" not in helptext(*command) and "--json PATH" not in helptext(*command)


def test_the_same_switch_disables_lpips_in_train_and_eval() -> None:
    for command in ("train", "eval"):
        assert "--no-lpips" in helptext(command)
    assert "none" not in helptext("eval").split("--lpips-net", 1)[1].split("\n", 1)[0]  # one way, not two


COMMANDS_TAKING_A_MODEL = (
    ["photo.jpg", "--model"],
    ["eval", "--pairs", ".", "--model"],
    ["train", "--synthetic", ".", "-o", "run", "--model"],
    ["cluster", "in", "out", "--model"],
    ["models", "download"],
    ["models", "default"],
)


@pytest.mark.parametrize(
    ("args", "name"),
    [(args, name) for args in COMMANDS_TAKING_A_MODEL for name in ("nope", "dgf-light")] + [(["models", "show"], "nope")],
)
def test_a_model_that_cannot_run_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], name: str) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(group, [*args, name])
    assert result.exit_code == 2, result.output
    why = "has no trained weights yet" if name == "dgf-light" else "is not in the catalogue"
    # download and show take any model; the others only deblurring ones (never the refiner)
    refiner = ", nafnet-s-refiner" if args[0] == "models" and args[1] in ("download", "show") else ""
    assert f"model {name!r} {why}; choose one of: nafnet-s, nafnet-s-free{refiner}, nafnet-gopro-w32" in result.output
    assert "dgf-light," not in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []  # nothing created
