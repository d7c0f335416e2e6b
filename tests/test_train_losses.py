"""Losses and DiffAugment of the training recipe: values on known inputs, gradients, shared transforms."""

from __future__ import annotations

import math
import urllib.error

import pytest
import torch
from torch import nn

from deblurcli.errors import WeightsError
from deblurcli.train import diffaug, losses


class LinearCritic(nn.Module):
    """D(blurry, x) = sum(w * x): its gradient with respect to x is w everywhere, so the penalty is known."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        return (pair[:, 3:] * self.w).sum(dim=(1, 2, 3))


def test_charbonnier_is_smooth_l1() -> None:
    x = torch.zeros(1, 3, 4, 4)
    y = torch.full((1, 3, 4, 4), 0.5)
    assert losses.charbonnier(x, y).item() == pytest.approx(0.5, abs=1e-5)
    assert losses.charbonnier(x, x).item() == pytest.approx(1e-3)  # eps: a smooth minimum, not a kink
    assert losses.pixel_loss("l1", x, y).item() == pytest.approx(0.5)
    with pytest.raises(ValueError):
        losses.pixel_loss("l2", x, y)


def test_gradient_penalty_on_known_critic() -> None:
    w = torch.full((3, 4, 4), 0.5)  # ||w||_2 = 0.5 * sqrt(48)
    critic = LinearCritic(w)
    real, fake, cond = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    expected = 10 * (0.5 * math.sqrt(48) - 1) ** 2
    gp = losses.gradient_penalty(critic, cond, real, fake)
    assert gp.item() == pytest.approx(expected, rel=1e-6)
    # Under bf16 autocast the penalty is still computed in fp32, so it does not move.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gp16 = losses.gradient_penalty(critic, cond, real, fake)
    assert gp16.dtype == torch.float32
    assert gp16.item() == pytest.approx(expected, rel=1e-6)
    # The penalty is differentiable in the critic's weights (create_graph), or it could not train D.
    gp.backward()
    assert critic.w.grad is not None and critic.w.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("kind", "d_expected", "g_expected"),
    [("wgan-gp", -1.0 - 1.0, 1.0), ("lsgan", 0.5 * (0.0 + 1.0), 0.5 * 4.0), ("hinge", 0.0 + 0.0, 1.0)],
)
def test_gan_losses_on_known_scores(kind: str, d_expected: float, g_expected: float) -> None:
    real = torch.full((2, 1, 3, 3), 1.0)
    fake = torch.full((2, 1, 3, 3), -1.0)
    assert losses.d_loss(kind, real, fake).item() == pytest.approx(d_expected)
    assert losses.g_loss(kind, fake).item() == pytest.approx(g_expected)


def test_lpips_loss_scales_inputs_and_passes_gradients() -> None:
    torch.manual_seed(0)
    loss = losses.LPIPSLoss("alex", pretrained_backbone=False)
    loss.train()  # must stay in eval mode (dropout in the heads would make it random)
    assert not loss.net.training
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    y = torch.rand(1, 3, 32, 32)
    value = loss(x, y)
    # [0, 1] inputs are mapped to [-1, 1] exactly once (the poster code skipped this).
    assert value.item() == pytest.approx(loss.net(x * 2 - 1, y * 2 - 1).mean().item(), rel=1e-5)
    assert loss(y, y).item() == pytest.approx(0.0, abs=1e-6)
    value.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())


def test_lpips_without_backbone_says_how_to_fix(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*_args: object, **_kwargs: object) -> None:
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError) as info:
        losses.LPIPSLoss("vgg")
    message = str(info.value)
    assert "vgg16-397923af.pth" in message and str(tmp_path) in message and "--no-lpips" in message
    assert "\n" not in message


def test_diffaug_same_transform_for_real_and_fake() -> None:
    g = torch.Generator().manual_seed(0)
    ops = diffaug.parse_policy("color,translation,cutout")
    real = torch.rand(4, 6, 16, 16)
    fake = torch.rand(4, 6, 16, 16)
    params = diffaug.sample(ops, 4, 16, 16, g)
    # Identical inputs under one draw give identical outputs; a second draw gives something else.
    assert torch.equal(diffaug.apply(real, params), diffaug.apply(real.clone(), params))
    assert not torch.equal(diffaug.apply(real, params), diffaug.apply(real, diffaug.sample(ops, 4, 16, 16, g)))
    # The transform is a function of the draw only: applying it to the real and the fake pair together
    # (one batch) equals applying it to each, so both see the same geometry and colour change.
    both = diffaug.apply(torch.cat([real, fake], dim=1), params)
    assert torch.allclose(both[:, :6], diffaug.apply(real, params), atol=1e-6)
    assert torch.allclose(both[:, 6:], diffaug.apply(fake, params), atol=1e-6)


def test_diffaug_geometry_moves_the_conditional_pair_together() -> None:
    ops = ("translation", "cutout")
    img = torch.rand(2, 3, 16, 16)
    pair = torch.cat([img, img], dim=1)  # blurry and candidate identical: they must stay identical
    out = diffaug.apply(pair, diffaug.sample(ops, 2, 16, 16, torch.Generator().manual_seed(3)))
    assert torch.equal(out[:, :3], out[:, 3:])


def test_diffaug_translation_and_cutout_are_exact() -> None:
    x = torch.arange(1, 17, dtype=torch.float32).view(1, 1, 4, 4).expand(1, 3, 4, 4).contiguous()
    shifted = diffaug.apply(x, diffaug.AugParams(("translation",), shift=torch.tensor([[1, -1]])))
    assert torch.equal(shifted[0, 0, 1:, :3], x[0, 0, :3, 1:])  # down one row, left one column
    assert shifted[0, 0, 0].abs().sum() == 0 and shifted[0, 0, :, 3].abs().sum() == 0  # zero padding
    cut = diffaug.apply(x, diffaug.AugParams(("cutout",), cutout=torch.tensor([[2, 2]])))
    assert (cut[0, 0] == 0).sum() == 4  # a 2x2 hole: half the side
    assert torch.equal(cut[0, 0, 1:3, 1:3], torch.zeros(2, 2))


def test_diffaug_passes_gradients() -> None:
    fake = torch.rand(2, 6, 16, 16, requires_grad=True)
    params = diffaug.sample(diffaug.parse_policy("color,translation,cutout"), 2, 16, 16, torch.Generator().manual_seed(1))
    diffaug.apply(fake, params).sum().backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_diffaug_policy_parsing() -> None:
    assert diffaug.parse_policy("none") == ()
    assert diffaug.parse_policy("") == ()
    assert diffaug.parse_policy("Color, cutout") == ("color", "cutout")
    with pytest.raises(ValueError, match="zoom"):
        diffaug.parse_policy("color,zoom")


def test_the_offered_loss_names_are_the_loss_tables() -> None:
    """`deblur train --help` lists names from the torch-free `loss_names`; each must be a loss, and each loss offered."""
    from deblurcli.train import loss_names

    assert tuple(losses.PIXEL_LOSSES) == loss_names.PIXEL_LOSS_NAMES
    assert tuple(losses.GAN_LOSSES) == loss_names.GAN_LOSS_NAMES
    assert losses.LPIPS_NETS == loss_names.LPIPS_NETS
