"""The export form of NAFNet: the same function as the torch module, written the way OpenVINO runs it fastest.

Two rewrites, each equal to the original in fp32 (to ~4e-7 on nafnet-s) and each *slower* in torch eager
(0.64x together, measured), which is why they are applied only to a deep copy that is exported, never to the
model that torch runs:

* SCA's local box mean over cells (:class:`deblurcli.models.nafnet.model.ChannelPool`: doubling window sums
  that suit torch) becomes two 1-D ``avg_pool2d`` with ``count_include_pad=False`` over the cell means:
  OpenVINO has a native pooling kernel, and the mean over the valid part of a clipped window is exactly what
  excluding the padding gives.
* SimpleGate's ``conv -> chunk -> multiply`` becomes two convolutions, one per half, multiplied: the
  channel split of a wide output is a strided copy in OpenVINO's blocked layouts, two half-width
  convolutions are not. The 1x1 and depthwise convolutions of a half only read and write that half, so
  splitting their weights changes no sum.

On one 1024² tile of nafnet-s (OpenVINO bf16, 2 threads) the plain export ran 1.17x torch's bf16 and the
export form 1.64x (docs/performance.md).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from deblurcli.models.nafnet.model import ChannelPool, NAFBlock, NAFNet


def exportable(model: nn.Module) -> bool:
    """Whether :func:`export_form` can rewrite ``model`` (NAFNet; other architectures stay on torch)."""
    return isinstance(model, NAFNet)


class PoolForExport(nn.Module):
    """:class:`ChannelPool` as pooling ops: the global mean, or the clipped ``window`` box mean of the
    ``step``-pixel cell means as two 1-D average pools that leave the zero padding out of each count."""

    def __init__(self, window: int | None, step: int) -> None:
        super().__init__()
        self.window, self.step = window, step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.window, self.step
        if k is None:
            return x.mean(dim=(2, 3), keepdim=True)
        if s > 1 and x.shape[2] % s == 0 and x.shape[3] % s == 0:
            x, k = F.avg_pool2d(x, s), k // s
        # No shortcut for maps smaller than the window (box_mean's global mean): the clipped windows then all
        # cover the whole map, so the pools give that mean anyway, and one traced graph fits every shape.
        # A window centred on i covers [i - (k-1)//2, i + k//2]; a symmetric pad of k//2 gives the windows
        # [j - k//2, j - k//2 + k - 1], so for even k output j = i + 1 is the one centred on i.
        pad, skip = k // 2, 1 - k % 2
        x = F.avg_pool2d(x, (k, 1), stride=1, padding=(pad, 0), count_include_pad=False)[:, :, skip:]
        return F.avg_pool2d(x, (1, k), stride=1, padding=(0, pad), count_include_pad=False)[:, :, :, skip:]


def _half_conv(conv: nn.Conv2d, half: int) -> nn.Conv2d:
    """The convolution computing output channels ``[half * n/2, (half + 1) * n/2)`` of ``conv``: for a
    depthwise conv those read only the same input half, so its input is halved too."""
    n = conv.out_channels // 2
    depthwise = conv.groups == conv.in_channels == conv.out_channels
    cin = n if depthwise else conv.in_channels
    part = nn.Conv2d(cin, n, conv.kernel_size, conv.stride, conv.padding, groups=n if depthwise else 1, bias=conv.bias is not None)
    with torch.no_grad():
        part.weight.copy_(conv.weight[half * n : (half + 1) * n])
        if conv.bias is not None:
            part.bias.copy_(conv.bias[half * n : (half + 1) * n])
    return part


class BlockForExport(nn.Module):
    """:class:`NAFBlock` with each SimpleGate's convolutions split in halves (see the module docstring)."""

    def __init__(self, block: NAFBlock) -> None:
        super().__init__()
        self.norm1, self.norm2 = block.norm1, block.norm2
        self.conv1a, self.conv1b = _half_conv(block.conv1, 0), _half_conv(block.conv1, 1)
        self.conv2a, self.conv2b = _half_conv(block.conv2, 0), _half_conv(block.conv2, 1)
        self.conv4a, self.conv4b = _half_conv(block.conv4, 0), _half_conv(block.conv4, 1)
        pool = block.sca[0]
        assert isinstance(pool, ChannelPool)
        self.pool, self.sca_conv = PoolForExport(pool.window, pool.step), block.sca[1]
        self.conv3, self.conv5 = block.conv3, block.conv5
        self.beta, self.gamma = block.beta, block.gamma

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.norm1(inp)
        x = self.conv2a(self.conv1a(x)) * self.conv2b(self.conv1b(x))
        x = self.conv3(x * ChannelPool.spread(self.sca_conv(self.pool(x)), x))
        y = inp + x * self.beta
        x = self.norm2(y)
        x = self.conv5(self.conv4a(x) * self.conv4b(x))
        return y + x * self.gamma


def structure(model: nn.Module) -> list[tuple[int | None, int]]:
    """What the exported graph depends on besides the weights and ``model.config``: every SCA pool's window
    and cell size, in module order (cells are derived from the config by code that may change)."""
    return [(m.window, m.step) for m in model.modules() if isinstance(m, ChannelPool)]


def export_form(model: NAFNet) -> NAFNet:
    """A float32, NCHW, eval-mode deep copy of ``model`` with every block in its export form; ``model`` is
    left as it is (it stays the torch reference and fallback)."""
    twin = copy.deepcopy(model).float().to(device="cpu", memory_format=torch.contiguous_format).eval()
    for parent in list(twin.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, NAFBlock):
                setattr(parent, name, BlockForExport(child))
    return twin
