"""NAFNet: the efficient default generator family (Chen et al., ECCV 2022, MIT licence).

Parameter names follow the official implementation (``intro``, ``encoders.i.j``, ``downs.i``,
``middle_blks.j``, ``ups.i.0``, ``decoders.i.j``, ``ending``; blocks with ``conv1..conv5``, ``sca.1``,
``norm1``, ``norm2``, ``beta``, ``gamma``) so that the published GoPro checkpoints load without conversion.

One deliberate addition, which changes no parameter: ``local_pool``. The official simplified channel
attention (SCA) averages each channel over the *whole* input, so a tile of a photo and the whole photo see
different statistics and tiled inference would show seams. With ``local_pool=K`` the average is taken over a
``K x K`` window (in full-resolution pixels, scaled down with each U-Net level) centred on each pixel, with
windows clipped at the image border (mean over the valid pixels only). That makes the network a purely
local operator, so tiles with enough overlap reproduce the whole-image result. It is the same idea as
NAFNet's Test-time Local Converter (TLC), which uses ``K = 1.5 x`` the training crop for checkpoints trained
with global pooling; our own models are trained with the local pool they are run with.

The attention needs one value per channel per window, not a window per pixel: the local mean is taken on a
grid of ``step``-pixel cells (``step`` up to ``K / 8``, so a window spans at least 8 cells), SCA's 1x1 conv
runs on that small map, and a bilinear resize spreads it back to full resolution (a 1x1 conv commutes with
it). Against a box mean at every pixel this moved the shipped nafnet-s's outputs by 49-60 dB PSNR and its
gains on three validation families by under 0.005 dB, and made a 1024² tile 1.30x faster in fp32 and 1.81x
in bf16 (torch, one thread; ``bench/pool_cells.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _window_sums(t: torch.Tensor, dim: int, k: int) -> torch.Tensor:
    """Sums over a length-``k`` window centred on each index along ``dim``, zero outside the map.

    Binary doubling instead of a prefix sum: ``s`` holds sums of ``width`` consecutive (zero-padded)
    values, each doubling is one vectorised add of two shifted views, and the set bits of ``k`` pick the
    pieces of the window, so a window costs about ``2 log2(k)`` adds per element. ``cumsum`` along a
    strided dimension (H, or anything in channels_last) runs element by element and was 6x slower than
    along the last dimension; this runs at memory speed in any layout (box mean 45% -> 15% of a
    nafnet-s forward, measured). Summing in a tree order is also more accurate than a long prefix sum.
    """
    size = t.shape[dim]
    s = F.pad(t, (0, 0, (k - 1) // 2, k // 2) if dim == 2 else ((k - 1) // 2, k // 2))
    out: torch.Tensor | None = None
    offset, width = 0, 1
    while True:
        if k & 1:
            piece = s.narrow(dim, offset, size)
            out = piece if out is None else out + piece
            offset += width
        k >>= 1
        if not k:
            assert out is not None  # k >= 1 has a set bit
            return out
        n = s.shape[dim] - width
        s = s.narrow(dim, 0, n) + s.narrow(dim, width, n)
        width *= 2


def _window_counts(size: int, k: int, device: torch.device) -> torch.Tensor:
    """How many valid positions the clipped length-``k`` window centred on each index covers."""
    idx = torch.arange(size, device=device)
    return (idx + k // 2 + 1).clamp(max=size) - (idx - (k - 1) // 2).clamp(min=0)


def box_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over a ``k x k`` window centred on each pixel, clipped at the borders.

    Separable window sums (rows, then columns) make the cost per pixel grow only with ``log k``: an
    ``avg_pool2d`` with stride 1 costs ``k^2`` per pixel (120x slower at k = 63 on 256², measured), and a
    2-D summed-area table with four gathers was 3x slower than prefix sums, which in turn were 1.6x slower
    than the doubling sums of ``_window_sums`` (channels_last, 1 thread). Sums are accumulated in fp32
    even for half-precision inputs, where long sums would lose the small differences that make the mean.
    The layout of ``x`` (NCHW or channels_last) is kept.
    """
    h, w = x.shape[2:]
    if k >= 2 * max(h, w):  # every clipped window covers the whole map
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    t = _window_sums(_window_sums(x.float(), 2, k), 3, k)
    count = _window_counts(h, k, x.device)[:, None] * _window_counts(w, k, x.device)[None, :]
    return (t / count).to(x.dtype)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of an NCHW tensor (NAFNet's ``norm1``/``norm2``)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # NHWC in memory: the permuted view is contiguous and one fused layer_norm kernel normalises each
            # pixel's channels (one pass instead of eight element-wise ones; 1.3x faster nafnet-s forward
            # with channels_last, same result within fp32 rounding).
            y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
            return y.permute(0, 3, 1, 2)
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / torch.sqrt(var + self.eps)
        return self.weight.view(1, -1, 1, 1) * y + self.bias.view(1, -1, 1, 1)


class SimpleGate(nn.Module):
    """Split the channels in two halves and multiply them: NAFNet's replacement for activations."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class ChannelPool(nn.Module):
    """The pooling inside SCA: global average (official), or clipped local box means on a grid of cells.

    With a ``window``, the output is the mean of the ``window x window`` area around each ``step x step``
    cell (``step`` times smaller than the input; ``spread`` resizes SCA's result back). Cells tile the map
    from its origin, so the result is translation-equivariant by multiples of ``step``: the tiling engine
    starts tiles on multiples of the network's size multiple, which ``NAFNet.set_local_pool`` keeps ``step``
    a divisor of, and tiled stays equal to whole. A map whose sides ``step`` does not divide (a block run on
    its own) gets the per-pixel box mean instead.
    """

    def __init__(self) -> None:
        super().__init__()
        self.window: int | None = None
        self.step = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.window is None:
            return x.mean(dim=(2, 3), keepdim=True)
        s = self.step
        if s == 1 or x.shape[2] % s or x.shape[3] % s:
            return box_mean(x, self.window)
        return box_mean(F.avg_pool2d(x, s), self.window // s)

    @staticmethod
    def spread(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``a`` (a pooled map after SCA's conv) at the resolution of ``like``; a global mean broadcasts."""
        if a.shape[2:] == like.shape[2:] or a.shape[2:] == (1, 1):
            return a
        return F.interpolate(a, size=like.shape[2:], mode="bilinear", align_corners=False)


def pool_step(window: int, level_multiple: int) -> int:
    """The cell size for a ``window``-pixel local pool on a level whose sides are multiples of
    ``level_multiple``: the largest power of two that divides both, with at least 8 cells per window."""
    step = 1
    while step * 2 <= window // 8 and window % (step * 2) == 0 and level_multiple % (step * 2) == 0:
        step *= 2
    return step


class NAFBlock(nn.Module):
    """Nonlinear-activation-free block: a gated depthwise-conv branch and a gated FFN, both residual."""

    def __init__(self, c: int, dw_expand: int = 2, ffn_expand: int = 2) -> None:
        super().__init__()
        dw = c * dw_expand
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        # Index 1 must be the conv so that the official key ``sca.1.weight`` matches.
        self.sca = nn.Sequential(ChannelPool(), nn.Conv2d(dw // 2, dw // 2, 1))
        self.sg = SimpleGate()
        ffn = c * ffn_expand
        self.conv4 = nn.Conv2d(c, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, c, 1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.sg(self.conv2(self.conv1(self.norm1(inp))))
        x = self.conv3(x * ChannelPool.spread(self.sca(x), x))
        y = inp + x * self.beta
        x = self.conv5(self.sg(self.conv4(self.norm2(y))))
        return y + x * self.gamma


class NAFNet(nn.Module):
    """NAFNet U-Net generator; input and output are NCHW RGB in [0, 1] (global input residual).

    ``size_multiple`` is the factor inputs are reflect-padded to (2^levels); the forward pass pads and
    crops by itself, so any size works, but the tiling engine pads tiles up front to avoid doing it twice.
    ``tile_margin`` is the width of a tile's border that the tiling engine discards: the theoretical
    receptive field of a 4-level U-Net is hundreds of pixels, but the influence of far pixels decays fast,
    and 32 px keeps tiled and whole-image outputs well above 45 dB PSNR of each other (tested); a ``stem``
    scales it, as every layer then sees ``stem`` times as far.
    ``stem`` > 1 replaces the full-resolution first level by a pixel unshuffle: ``intro`` reads the
    ``stem x stem`` blocks of the photo as ``img_channel * stem²`` channels and ``ending`` writes them back
    through a pixel shuffle, so no layer runs at full resolution (the layers there are bound by memory
    traffic, not arithmetic; docs/performance.md).
    ``weights_dtype_safe``: with its weights cast to bf16 it still takes an fp32 input and adds the global
    residual in fp32 (only the body runs in bf16), so the tiling engine may run such a copy instead of
    autocast and a 16-bit photo keeps its precision where the network changes little.
    """

    weights_dtype_safe = True

    def __init__(
        self,
        img_channel: int = 3,
        width: int = 16,
        middle_blk_num: int = 1,
        enc_blk_nums: tuple[int, ...] | list[int] = (1, 1, 1, 8),
        dec_blk_nums: tuple[int, ...] | list[int] = (1, 1, 1, 1),
        local_pool: int | None = None,
        stem: int = 1,
    ) -> None:
        super().__init__()
        self.config = {
            "img_channel": img_channel,
            "width": width,
            "middle_blk_num": middle_blk_num,
            "enc_blk_nums": list(enc_blk_nums),
            "dec_blk_nums": list(dec_blk_nums),
            "local_pool": local_pool,
        }
        if stem != 1:  # only then, so that files and caches of the plain network keep their config
            self.config["stem"] = stem
        self.stem = stem
        self.tile_margin = 32 * stem
        self.intro = nn.Conv2d(img_channel * stem * stem, width, 3, padding=1)
        self.ending = nn.Conv2d(width, img_channel * stem * stem, 3, padding=1)
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        chan = width
        for num in enc_blk_nums:
            self.encoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(num)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan *= 2
        self.middle_blks = nn.Sequential(*[NAFBlock(chan) for _ in range(middle_blk_num)])
        for num in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(num)]))
        self.size_multiple = 2 ** len(self.encoders) * stem
        self.set_local_pool(local_pool)

    def set_local_pool(self, window: int | None) -> None:
        """Switch SCA between global pooling (``None``) and a ``window``-pixel local box mean.

        The window is given at full resolution and divided by 2 at each level down, so every level
        averages over the same area of the photo; its cells (``ChannelPool``) divide the level's size
        multiple, so that a tile starting on the network's size multiple sees the same cells as the photo.
        """
        self.config["local_pool"] = window
        levels = [(enc, i) for i, enc in enumerate(self.encoders)]
        levels += [(self.middle_blks, len(self.encoders))]
        levels += [(dec, len(self.decoders) - 1 - i) for i, dec in enumerate(self.decoders)]
        for module, level in levels:
            scale = self.stem * 2**level  # full-resolution pixels per pixel of this level
            for m in module.modules():
                if isinstance(m, ChannelPool):
                    m.window = None if window is None else max(1, window // scale)
                    m.step = 1 if m.window is None else pool_step(m.window, max(1, self.size_multiple // scale))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        _, _, h, w = inp.shape
        m = self.size_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            # Reflect needs the pad to be smaller than the side; tiny inputs fall back to replicate.
            mode = "reflect" if ph < h and pw < w else "replicate"
            x_in = F.pad(inp, (0, pw, 0, ph), mode=mode)
        else:
            x_in = inp
        x = x_in.to(self.intro.weight.dtype)
        x = self.intro(F.pixel_unshuffle(x, self.stem) if self.stem > 1 else x)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, skip in zip(self.decoders, self.ups, reversed(skips)):
            x = decoder(up(x) + skip)
        x = self.ending(x)
        x = (F.pixel_shuffle(x, self.stem) if self.stem > 1 else x).to(x_in.dtype) + x_in
        return x[:, :, :h, :w]
