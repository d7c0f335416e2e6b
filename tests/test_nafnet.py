"""NAFNet: official parameter names, padding to any size, and the local-pool mode that makes tiling exact."""

import torch
import torch.nn.functional as F

from deblurcli.models.nafnet import LayerNorm2d, NAFNet, box_mean


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


def _box_mean_brute(x: torch.Tensor, k: int) -> torch.Tensor:
    """Reference: the clipped window of every pixel summed one by one (tiny inputs only)."""
    h, w = x.shape[2:]
    out = torch.empty_like(x)
    for i in range(h):
        for j in range(w):
            rows = slice(max(0, i - (k - 1) // 2), min(h, i + k // 2 + 1))
            cols = slice(max(0, j - (k - 1) // 2), min(w, j + k // 2 + 1))
            out[:, :, i, j] = x[:, :, rows, cols].mean(dim=(2, 3))
    return out


def test_box_mean_even_and_odd_windows_in_both_layouts() -> None:
    """Every bit pattern of k (1..13, and windows wider than the map) in NCHW and channels_last."""
    torch.manual_seed(1)
    x = torch.randn(2, 3, 9, 12)
    for k in (*range(1, 14), 20):
        ref = _box_mean_brute(x, k)
        assert torch.allclose(box_mean(x, k), ref, atol=1e-5), k
        cl = box_mean(x.contiguous(memory_format=torch.channels_last), k)
        assert torch.allclose(cl, ref, atol=1e-5), k


def test_box_mean_half_precision_sums_in_fp32() -> None:
    x = torch.rand(1, 2, 40, 40).to(torch.bfloat16)
    out = box_mean(x, 31)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), _box_mean_brute(x.float(), 31), atol=1e-2)


def test_layer_norm_channels_last_path_matches_nchw() -> None:
    torch.manual_seed(2)
    norm = LayerNorm2d(6)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(2, 6, 5, 7) * 3 + 1
    ref = norm(x)
    out = norm(x.contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, ref, atol=1e-5)


def test_channels_last_forward_and_backward_match_nchw() -> None:
    """The channels_last fast paths are numerically the NCHW network, gradients included (training uses both)."""
    net = _tiny(local_pool=16)
    x = torch.rand(1, 3, 40, 36)
    ref = net(x)
    ref.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    net_cl = net.to(memory_format=torch.channels_last)
    out = net_cl(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(out, ref, atol=1e-5)
    out.square().mean().backward()
    for name, p in net_cl.named_parameters():
        assert torch.allclose(p.grad, grads[name], atol=1e-5, rtol=1e-4), name


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


def test_pool_cells_divide_the_window_and_the_level_multiple() -> None:
    """nafnet-s (64 px window, 16 px multiple) pools 8/4/2 px cells; the TLC window 384 pools 16/8/4/2."""
    steps = lambda net: [b[0].sca[0].step for b in (*net.encoders, net.middle_blks)]  # noqa: E731
    net = NAFNet(width=8, enc_blk_nums=[1, 1, 1, 1], local_pool=64)
    assert steps(net) == [8, 4, 2, 1, 1]
    net.set_local_pool(384)
    assert steps(net) == [16, 8, 4, 2, 1]
    net.set_local_pool(None)
    assert steps(net) == [1] * 5


def test_cell_pool_is_shift_equivariant_by_the_size_multiple_only() -> None:
    """Away from the borders the output moves with the input by multiples of 4 (this net's size multiple),
    which the tiling engine's tile starts are; a 2 px shift lands between cells and changes it."""
    net = _tiny(local_pool=64)
    assert net.encoders[0][0].sca[0].step == 4
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        whole = net(x)[..., 112:144, 112:144]
        by4 = net(x[..., 4:, 4:])[..., 108:140, 108:140]
        by2 = net(x[..., 2:, 2:])[..., 110:142, 110:142]
    assert torch.allclose(whole, by4, atol=1e-5)
    assert not torch.allclose(whole, by2, atol=1e-4)


def test_cell_pool_stays_close_to_the_per_pixel_box_mean() -> None:
    """The shipped nafnet-s on a real photo: pooling on cells instead of at every pixel moves its output by
    less than -50 dB (52-60 dB measured on the validation photos)."""
    from deblurcli.photo import read_photo
    from deblurcli.weights import load_generator

    net = load_generator("nafnet-s").eval()
    photo = read_photo("samples/coffee_blurry.jpg")
    x = torch.from_numpy(photo.rgb[:256, :256].copy()).permute(2, 0, 1)[None]
    with torch.no_grad():
        cells = net(x)
        for m in net.modules():
            if hasattr(m, "step"):
                m.step = 1
        pixels = net(x)
    psnr = -10 * torch.log10(F.mse_loss(cells, pixels))
    assert psnr > 50, psnr


def test_unshuffle_stem_runs_nothing_at_full_resolution() -> None:
    """stem=2: intro reads 2x2 blocks (12 channels), the output has the input's size, a zero ending is the
    identity, and the pool windows and cells are scaled for the half-resolution first level."""
    net = NAFNet(width=16, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1], local_pool=64, stem=2).eval()
    assert net.intro.in_channels == 12 and net.ending.out_channels == 12 and net.size_multiple == 8
    assert net.config["stem"] == 2 and "stem" not in NAFNet(width=8).config
    assert (net.encoders[0][0].sca[0].window, net.encoders[0][0].sca[0].step) == (32, 4)
    seen: list[tuple[int, int]] = []
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d) and m is not net.intro:
            m.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape[2:])))
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        assert net(x).shape == x.shape
        assert max(h for h, _ in seen) <= 20  # 40 px of input: no layer beyond intro at more than half
        torch.nn.init.zeros_(net.ending.weight)
        torch.nn.init.zeros_(net.ending.bias)
        assert torch.equal(net(x), x)
