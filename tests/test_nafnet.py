"""NAFNet: official parameter names, padding to any size, and the local-pool mode that makes tiling exact."""

import torch
import torch.nn.functional as F

from deblurcli.models.nafnet import NAFNet, box_mean


def _tiny(local_pool: int | None = None) -> NAFNet:
    torch.manual_seed(0)
    net = NAFNet(width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1], local_pool=local_pool)
    for name, p in net.named_parameters():  # beta/gamma start at 0: make the blocks do something
        if name.endswith(("beta", "gamma")):
            torch.nn.init.normal_(p, std=0.5)
    return net.eval()


def test_box_mean_matches_avg_pool_without_padding_counts() -> None:
    x = torch.randn(2, 3, 13, 17)
    for k in (1, 3, 5, 9):
        ref = F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)
        assert torch.allclose(box_mean(x, k), ref, atol=1e-5)


def test_box_mean_huge_window_is_global_mean() -> None:
    x = torch.randn(1, 2, 6, 5)
    assert torch.allclose(box_mean(x, 64), x.mean(dim=(2, 3), keepdim=True).expand_as(x))


def test_official_key_names() -> None:
    keys = set(NAFNet(width=8, enc_blk_nums=[1, 2], middle_blk_num=1, dec_blk_nums=[1, 1]).state_dict())
    for key in (
        "intro.weight",
        "ending.bias",
        "encoders.1.1.conv2.weight",
        "downs.0.weight",
        "middle_blks.0.sca.1.weight",
        "ups.0.0.weight",
        "decoders.1.0.norm2.bias",
        "encoders.0.0.beta",
        "encoders.0.0.gamma",
    ):
        assert key in keys, key
    assert "ups.0.0.bias" not in keys  # the official up-conv has no bias


def test_any_size_in_same_size_out() -> None:
    net = _tiny()
    for h, w in ((5, 7), (33, 20), (64, 64)):
        assert net(torch.rand(1, 3, h, w)).shape == (1, 3, h, w)


def test_zero_init_is_identity() -> None:
    net = NAFNet(width=8, enc_blk_nums=[1], middle_blk_num=1, dec_blk_nums=[1]).eval()
    torch.nn.init.zeros_(net.ending.weight)
    torch.nn.init.zeros_(net.ending.bias)
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(net(x), x)


def test_local_pool_makes_far_pixels_irrelevant() -> None:
    """With a local pool, changing the far corner leaves the opposite corner untouched; globally pooled, not."""
    x = torch.rand(1, 3, 128, 128)
    y = x.clone()
    y[:, :, 96:, 96:] = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        local = _tiny(local_pool=8)
        assert torch.allclose(local(x)[..., :16, :16], local(y)[..., :16, :16], atol=1e-6)
        glob = _tiny(local_pool=None)
        assert not torch.allclose(glob(x)[..., :16, :16], glob(y)[..., :16, :16], atol=1e-6)


def test_set_local_pool_scales_window_per_level() -> None:
    net = _tiny(local_pool=64)
    assert net.encoders[0][0].sca[0].window == 64
    assert net.encoders[1][0].sca[0].window == 32
    assert net.middle_blks[0].sca[0].window == 16
    assert net.decoders[-1][0].sca[0].window == 64
    net.set_local_pool(None)
    assert net.middle_blks[0].sca[0].window is None
