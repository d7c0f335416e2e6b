"""Is a photo the kernel estimate calls sharp blurred in part? The network's changes, block by block.

The estimator looks at two windows chosen for their edges, so a sharp background wins them and a moving
subject elsewhere (a cyclist, a dancer's arm) goes unseen: the do-no-harm gate then returns the photo
unchanged, blur and all. Statistics of the photo alone did not tell such a photo from a sharp one with a
defocused background (docs/how_deblurcli_decides.md: edge widths, re-blur ratios and a directional
fine/coarse gradient ratio all overlapped). The network does: it leaves sharp and defocused areas nearly as
they are and redraws a motion-blurred subject. So auto runs it on such a photo and measures, per 32 px block
(half-overlapping), how far its output moved from the input.

Measured on the network output of the default weights (2026-12-02, block PSNR output against input): on the
15 sharp LIVE1 photos and 40 sharp training photos (BSDS500 and free photos), no block below 22 dB except
0.2 % of one macro shot's blocks (its out-of-focus flower outlines); on the dynamic family's photos with a
moving subject over a still background, 2.3 % and 3.9 % (bikes, carnivaldolls, the two where the network
gains over 1 dB), and on the real GoPro frames the gate called sharp, 2.3 % and 4.0 % (1.4 % on a DMPHN photo
it called sharp in an earlier run). Subjects that move little (lighthouse3's, dancers') change no block
that much: they stay unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["BLOCK", "CHANGED_DB", "changed_share"]

#: Side of the blocks (px), compared with a stride of half a block: a subject a few blocks wide counts.
BLOCK = 32
#: A block counts as changed when the output is under this PSNR from the input in it (RMS change over 8 %).
CHANGED_DB = 22.0


def changed_share(photo: np.ndarray, output: np.ndarray, *, block: int = BLOCK, db: float = CHANGED_DB) -> float:
    """Share of ``block`` px blocks (stride ``block // 2``) where ``output`` is under ``db`` dB PSNR from
    ``photo`` (both ``H x W x 3`` in [0, 1]). A photo smaller than a block is one block."""
    a = torch.from_numpy(np.ascontiguousarray(photo, dtype=np.float32))
    b = torch.from_numpy(np.ascontiguousarray(output, dtype=np.float32))
    if a.shape != b.shape:
        raise ValueError(f"photo {tuple(a.shape)} and output {tuple(b.shape)} differ in shape")
    squared = (b - a).square_().mean(dim=-1)[None, None]
    size = min(block, squared.shape[-2], squared.shape[-1])
    mse = F.avg_pool2d(squared, size, stride=max(1, size // 2))
    return float((mse > 10.0 ** (-db / 10.0)).float().mean())
