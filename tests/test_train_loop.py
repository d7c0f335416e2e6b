"""The training loop on CPU with a tiny NAFNet: learning, adversarial gradients, resume, NaN recovery, exports."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from deblurcli.errors import DeblurError
from deblurcli.models.nafnet import NAFNet
from deblurcli.train import checkpoint as ckpt
from deblurcli.train import losses
from deblurcli.train.loop import Trainer, train
from deblurcli.train.options import TrainOptions
from deblurcli.weights import load_generator, read_state_dict, save_generator


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    """Tiny models gain nothing from threads, and on a busy machine OpenMP threads mostly wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random photo-like texture (low-frequency noise upsampled), uint8 H x W x 3."""
    small = rng.random((h // 8, w // 8, 3)) * 255
    return np.asarray(Image.fromarray(small.astype(np.uint8)).resize((w, h), Image.BICUBIC))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(texture(rng, 80, 96)).save(root / f"p{i}.png")
    return root


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = NAFNet(width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1], local_pool=32)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_generator(model, path, {})
    return path


def options(run: Path, photos: Path | None, weights: Path | None, **kw: Any) -> TrainOptions:
    base: dict[str, Any] = {
        "output": run, "synthetic": photos, "weights": weights, "batch_size": 2, "crop": 32, "val_crop": 32,
        "lpips": 0.0, "adv": 0.0, "max_steps": 4, "val_every": 1000, "log_every": 1000, "warmup_steps": 0,
        "device": "cpu", "lpips_pretrained": False,
    }
    base.update(kw)
    return TrainOptions(**base)


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def test_one_step_lowers_the_loss(tmp_path: Path, photos: Path, tiny_weights: Path) -> None:
    trainer = Trainer(options(tmp_path / "run", photos, tiny_weights, lr=1e-4), quiet())
    blurry, sharp = trainer.batch()
    trainer.batch = lambda: (blurry, sharp)  # type: ignore[method-assign]
    with torch.no_grad():
        before = losses.charbonnier(trainer.generator(blurry), sharp).item()
    assert trainer.train_step() is not None
    with torch.no_grad():
        after = losses.charbonnier(trainer.generator(blurry), sharp).item()
    assert after < before


def test_sharp_prob_sets_the_share_of_unblurred_samples(tmp_path: Path, photos: Path, tiny_weights: Path) -> None:
    for prob, unblurred in ((0.0, False), (0.999, True)):
        trainer = Trainer(options(tmp_path / f"run{prob}", photos, tiny_weights, sharp_prob=prob), quiet())
        assert trainer.blur_cfg.sharp_prob == prob
        blurry, sharp = trainer.batch()
        assert torch.equal(blurry, sharp) is unblurred
    with pytest.raises(DeblurError, match="--sharp-prob must be in"):
        options(tmp_path / "bad", photos, tiny_weights, sharp_prob=1.0).validate()


def test_adversarial_term_reaches_the_generator(tmp_path: Path, photos: Path, tiny_weights: Path) -> None:
    trainer = Trainer(options(tmp_path / "run", photos, tiny_weights, adv=0.01), quiet())
    blurry, sharp = trainer.batch()
    fake = trainer.generator(blurry)
    terms = trainer.generator_losses(blurry, sharp, fake)
    trainer.generator.zero_grad(set_to_none=True)
    terms["adv"].backward()
    grads = [p.grad for p in trainer.generator.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_critic_is_wgan_gp_ready(tmp_path: Path, photos: Path, tiny_weights: Path) -> None:
    trainer = Trainer(options(tmp_path / "run", photos, tiny_weights, adv=0.01, gan="wgan-gp"), quiet())
    assert trainer.critic is not None
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in trainer.critic.modules())
    blurry, sharp = trainer.batch()
    pair = torch.cat([blurry, sharp], 1)
    changed = pair.clone()
    changed[:, 3:, -4:, -4:] = 1 - changed[:, 3:, -4:, -4:]  # only the bottom-right corner of the candidate
    with torch.no_grad():
        scores, moved = trainer.critic(pair), trainer.critic(changed)
    # The critic sees the whole image (the seed code scored only top-left patches) and ends in raw logits.
    assert not torch.equal(scores[..., -1, -1], moved[..., -1, -1])
    assert not any(isinstance(m, torch.nn.Sigmoid) for m in trainer.critic.modules())  # no double sigmoid


def _weights(path: Path) -> dict[str, torch.Tensor]:
    state = ckpt.load_checkpoint(path)
    return {**{f"g.{k}": v for k, v in state["generator"].items()}, **{f"e.{k}": v for k, v in state["ema"].items()},
            **{f"d.{k}": v for k, v in state.get("critic", {}).items()}}


def test_resume_after_a_crash_matches_an_uninterrupted_run(
    tmp_path: Path, photos: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kw: dict[str, Any] = {"max_steps": 4, "adv": 0.01, "checkpoint_every": 2, "diffaug": "color,translation,cutout"}
    straight = train(options(tmp_path / "a", photos, tiny_weights, **kw), quiet())
    assert straight.steps == 4

    real_step = Trainer.train_step
    calls = {"n": 0}

    def crash_on_third(self: Trainer) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed")
        return real_step(self)

    monkeypatch.setattr(Trainer, "train_step", crash_on_third)
    with pytest.raises(RuntimeError, match="killed"):
        train(options(tmp_path / "b", photos, tiny_weights, **kw), quiet())
    assert ckpt.load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["step"] == 2
    monkeypatch.setattr(Trainer, "train_step", real_step)
    resumed = train(options(tmp_path / "b", photos, tiny_weights, resume=True, **kw), quiet())
    assert resumed.steps == 4

    a = _weights(tmp_path / "a" / "checkpoints" / "last.pt")
    b = _weights(tmp_path / "b" / "checkpoints" / "last.pt")
    assert a.keys() == b.keys() and any(k.startswith("d.") for k in a)
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst <= 1e-6
    steps = [int(line.split(",")[0]) for line in (tmp_path / "b" / "log.csv").read_text().splitlines()[1:]]
    assert steps == sorted(steps)


def test_existing_run_needs_resume(tmp_path: Path, photos: Path, tiny_weights: Path) -> None:
    train(options(tmp_path / "run", photos, tiny_weights, max_steps=1), quiet())
    with pytest.raises(DeblurError, match="--resume"):
        Trainer(options(tmp_path / "run", photos, tiny_weights), quiet())
    with pytest.raises(DeblurError, match="nothing to resume"):
        Trainer(options(tmp_path / "other", photos, tiny_weights, resume=True), quiet())


def test_nan_loss_rolls_back_and_lowers_lr(
    tmp_path: Path, photos: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = losses.pixel_loss
    calls = {"n": 0}

    def nan_on_third(kind: str, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        value = real(kind, out, target)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setattr(losses, "pixel_loss", nan_on_third)
    console = quiet()
    trainer = Trainer(options(tmp_path / "run", photos, tiny_weights, max_steps=5), console)
    result = trainer.run()
    assert result.steps == 5 and result.stopped == "budget"
    assert trainer.lr_scale == 0.5
    assert "non-finite loss" in console.file.getvalue()  # type: ignore[attr-defined]
    assert all(torch.isfinite(p).all() for p in trainer.generator.parameters())


def test_repeated_nan_stops_with_a_clear_message(
    tmp_path: Path, photos: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(losses, "pixel_loss", lambda kind, out, target: out.float().mean() * float("inf"))
    with pytest.raises(DeblurError, match="diverged") as info:
        train(options(tmp_path / "run", photos, tiny_weights, max_nan_retries=2), quiet())
    assert "\n" not in str(info.value)


def test_ctrl_c_writes_a_checkpoint(
    tmp_path: Path, photos: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_step = Trainer.train_step

    def interrupt_after_two(self: Trainer) -> Any:
        values = real_step(self)
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return values

    monkeypatch.setattr(Trainer, "train_step", interrupt_after_two)
    result = train(options(tmp_path / "run", photos, tiny_weights, max_steps=50), quiet())
    assert result.stopped == "interrupted" and result.steps == 2
    assert ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2
    assert (tmp_path / "run" / "last.safetensors").is_file()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_exports_load_and_carry_metadata(tmp_path: Path, photos: Path, tiny_weights: Path) -> None:
    run = tmp_path / "run"
    trainer = Trainer(options(run, photos, tiny_weights, max_steps=4, val_every=2), quiet())
    trainer.val_input = {"psnr": 0.0, "ssim": 0.0}  # the random tiny model scores below the real input
    result = trainer.run()
    assert result.best is not None and result.best_psnr is not None
    assert sorted(p.name for p in run.glob("*.safetensors")) == ["best.safetensors", "last.safetensors"]
    _, meta = read_state_dict(run / "last.safetensors")
    assert meta["arch"] == "nafnet" and json.loads(meta["config"])["width"] == 8
    assert json.loads(meta["steps"]) == 4 and "val_psnr" in meta and json.loads(meta["data"])["kind"] == "synthetic"
    model = load_generator(weights=run / "best.safetensors")
    out = model(torch.rand(1, 3, 40, 40))
    assert out.shape == (1, 3, 40, 40) and torch.isfinite(out).all()


def test_moving_objects_reach_the_training_targets(tmp_path: Path, photos: Path, tiny_weights: Path) -> None:
    """Same seed, same crops: only --dynamic-prob pastes objects into the targets (and blurs them)."""
    plain = Trainer(options(tmp_path / "plain", photos, tiny_weights, max_steps=1, sharp_prob=0.0), quiet())
    moving = Trainer(options(tmp_path / "run", photos, tiny_weights, max_steps=1, sharp_prob=0.0, dynamic_prob=1.0), quiet())
    assert moving.blur_cfg.dynamic_prob == 1.0 and plain.blur_cfg.dynamic_prob == 0.0
    (_, sharp_plain), (_, sharp_moving) = plain.batch(), moving.batch()
    changed = (sharp_plain - sharp_moving).abs().amax(1) > 0
    assert bool(changed.flatten(1).any(1).all())  # every target has an object
    assert bool((~changed).any())  # and keeps its own photo around it


@pytest.mark.skipif(importlib.util.find_spec("deblurcli.cli.deblur") is None, reason="deblur command not written yet")
def test_exported_weights_run_in_deblur(tmp_path: Path, photos: Path, tiny_weights: Path) -> None:
    from click.testing import CliRunner

    from deblurcli.cli import group

    run = tmp_path / "run"
    train(options(run, photos, tiny_weights, max_steps=2, val_every=2), quiet())
    out = tmp_path / "out.png"
    res = CliRunner().invoke(group, [str(photos / "p0.png"), "-o", str(out), "--weights", str(run / "last.safetensors"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert Image.open(out).size == (96, 80)


@pytest.mark.parametrize("gan", ["lsgan", "hinge"])
def test_trains_on_pairs_with_pair_validation(tmp_path: Path, tiny_weights: Path, gan: str) -> None:
    rng = np.random.default_rng(2)
    root = tmp_path / "pairs"
    for sub in ("blur", "sharp"):
        (root / sub / "seq").mkdir(parents=True)
    for i in range(3):
        sharp = texture(rng, 48, 64)
        blurry = np.asarray(Image.fromarray(sharp).resize((16, 12)).resize((64, 48), Image.BILINEAR))
        Image.fromarray(sharp).save(root / "sharp" / "seq" / f"{i}.png")
        Image.fromarray(blurry).save(root / "blur" / "seq" / f"{i}.png")
    opts = options(tmp_path / "run", None, tiny_weights, synthetic=None, pairs=root, val_pairs=root, max_steps=2,
                   val_every=2, adv=0.01, gan=gan, diffaug="color,cutout")
    trainer = Trainer(opts, quiet())
    assert trainer.bank.channels == 6 and len(trainer.val) == 3
    assert trainer.val[0][0].shape == (1, 3, 32, 32)  # centre crop of --val-crop
    trainer.val_input = {"psnr": 0.0, "ssim": 0.0}  # the random tiny model scores below the real input
    result = trainer.run()
    assert result.steps == 2 and result.best_psnr is not None
    assert json.loads(read_state_dict(tmp_path / "run" / "best.safetensors")[1]["data"])["kind"] == "pairs"


def test_fresh_dgf_light_trains(tmp_path: Path, photos: Path) -> None:
    opts = options(tmp_path / "run", photos, None, arch="dgf-light", max_steps=1, crop=24)
    result = train(opts, quiet())
    assert result.steps == 1
    assert read_state_dict(tmp_path / "run" / "last.safetensors")[1]["arch"] == "dgf"


def test_unreadable_photo_is_reported_and_left_out(tmp_path: Path, photos: Path, tiny_weights: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in photos.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.jpg").write_text("not a JPEG")
    console = quiet()
    trainer = Trainer(options(tmp_path / "run", folder, tiny_weights), console)
    assert len(trainer.bank) + len(trainer.val) == 6
    assert "broken.jpg" in console.file.getvalue()  # type: ignore[attr-defined]


def test_first_progress_line_comes_after_the_first_step(tmp_path: Path, photos: Path, tiny_weights: Path) -> None:
    console = quiet()
    result = train(options(tmp_path / "run", photos, tiny_weights, max_steps=3, log_every=1000), console)
    rows = [r for r in result.history if "samples_per_s" in r]
    assert rows and rows[0]["step"] == 1 and rows[0]["samples_per_s"] > 0
    assert "step 1/3" in console.file.getvalue()  # type: ignore[attr-defined]
    assert (tmp_path / "run" / "log.csv").read_text().splitlines()[1].startswith("1,")


def test_a_short_run_trains_at_its_learning_rate(tmp_path: Path, photos: Path, tiny_weights: Path) -> None:
    result = train(options(tmp_path / "run", photos, tiny_weights, max_steps=5, log_every=1, warmup_steps=200,
                           lr=1e-3), quiet())
    lrs = [r["lr"] for r in result.history if "lr" in r]
    assert lrs[0] == pytest.approx(1e-3)  # the default 200-step warm-up shrinks to 5 % of a 5-step run


def test_a_model_below_the_blurry_input_is_never_best(tmp_path: Path, photos: Path, tiny_weights: Path) -> None:
    console = quiet()
    trainer = Trainer(options(tmp_path / "run", photos, tiny_weights, max_steps=2, val_every=1), console)
    trainer.val_input = {"psnr": 99.0, "ssim": 1.0}  # an input no model beats
    result = trainer.run()
    assert result.best is None and result.best_psnr is None
    assert (tmp_path / "run" / "last.safetensors").is_file() and not (tmp_path / "run" / "best.safetensors").exists()
    assert "not saved as best" in console.file.getvalue()  # type: ignore[attr-defined]


def test_is_best_needs_the_best_so_far_and_the_input_beaten() -> None:
    from deblurcli.train.validation import is_best

    assert is_best({"psnr": 30.0}, None, {"psnr": 29.0})
    assert not is_best({"psnr": 28.0}, None, {"psnr": 29.0})
    assert not is_best({"psnr": 30.0}, 31.0, {"psnr": 29.0})
    assert is_best({"psnr": 30.0}, None, None)


def test_bf16_training_on_the_cpu_keeps_fp32_weights(tmp_path: Path, photos: Path, tiny_weights: Path) -> None:
    trainer = Trainer(options(tmp_path / "run", photos, tiny_weights, precision="bf16", max_steps=2), quiet())
    assert trainer.dtype == torch.bfloat16
    values = [trainer.train_step() for _ in range(2)]
    assert all(v is not None and math.isfinite(v["loss"]) for v in values)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in trainer.generator.parameters())
    assert all(p.dtype == torch.float32 for p in trainer.ema.parameters())
