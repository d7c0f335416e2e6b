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

Between none and :data:`deblurcli.decide.MIN_CHANGED` of the blocks, a subject moves a little (a dancer's
arm, a lighthouse's flag): the network's output is kept where it moved past :data:`PATCH_DB` around those
blocks, feathered into the untouched photo (:func:`patch`). Measured on three seeds of the dynamic family
(``scripts/make_valsets.py --seed 0/1/2 --family dynamic``; the photos the gate calls sharp), mean gain over
the input on those photos, whole-network-or-unchanged before -> with the patch: +0.350 -> +0.418,
+0.120 -> +0.325, +0.207 -> +0.221 dB, no photo made worse; none of the 15 sharp LIVE1 photos has a block
under 22 dB, so they still come back bit for bit. Patching at 22 dB instead of 26 gained less
(+0.404, +0.284, +0.215, one photo -0.03 dB). The cost: of 45 sharp training photos shrunk to 768 px
(25 BSDS500, 20 free photos; 2026-12-03), one is now patched where it came back unchanged before (a wine
still life: 0.6 % of its blocks, a defocused window sill the network crisps and a dark streak it draws
along the frame's left edge), 4.7 % of it taken from the network, 39.5 dB from its input.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["BLOCK", "CHANGED_DB", "PATCH_DB", "changed_share", "patch"]

#: Side of the blocks (px), compared with a stride of half a block: a subject a few blocks wide counts.
BLOCK = 32
#: A block counts as changed when the output is under this PSNR from the input in it (RMS change over 8 %).
CHANGED_DB = 22.0
#: Where a photo is patched, the network's output is kept in blocks it moved past this PSNR (RMS change over 5 %).
PATCH_DB = 26.0
#: Half-width (px) of the ramp from the network's output to the untouched photo around patched blocks.
FEATHER = 16


def _block_mse(photo: np.ndarray, output: np.ndarray, block: int) -> tuple[torch.Tensor, int, int]:
    """Mean squared change per ``block`` px block at a stride of half a block (``1 x 1 x gh x gw``), with the
    block side and stride used (a photo smaller than a block is one block)."""
    a = torch.from_numpy(np.ascontiguousarray(photo, dtype=np.float32))
    b = torch.from_numpy(np.ascontiguousarray(output, dtype=np.float32))
    if a.shape != b.shape:
        raise ValueError(f"photo {tuple(a.shape)} and output {tuple(b.shape)} differ in shape")
    squared = (b - a).square_().mean(dim=-1)[None, None]
    size = min(block, squared.shape[-2], squared.shape[-1])
    stride = max(1, size // 2)
    return F.avg_pool2d(squared, size, stride=stride), size, stride


def changed_share(photo: np.ndarray, output: np.ndarray, *, block: int = BLOCK, db: float = CHANGED_DB) -> float:
    """Share of ``block`` px blocks (stride ``block // 2``) where ``output`` is under ``db`` dB PSNR from
    ``photo`` (both ``H x W x 3`` in [0, 1]). A photo smaller than a block is one block."""
    mse, _, _ = _block_mse(photo, output, block)
    return float((mse > 10.0 ** (-db / 10.0)).float().mean())


def patch(
    photo: np.ndarray, output: np.ndarray, *, block: int = BLOCK, db: float = PATCH_DB, feather: int = FEATHER,
) -> tuple[np.ndarray, float]:
    """``photo`` with ``output`` kept where it moved past ``db`` dB in a block, and the share of the photo so taken.

    The changed blocks are grown by one block stride (a moving subject's blur reaches past the blocks that
    changed most) and the mask ramps over ``2 * feather + 1`` px (two 1-D box passes), so no seam shows; where
    the mask is 0 the photo's pixels are returned exactly.
    """
    mse, size, stride = _block_mse(photo, output, block)
    cells = F.max_pool2d((mse > 10.0 ** (-db / 10.0)).float(), 3, stride=1, padding=1)
    out = np.array(photo, dtype=np.float32)
    rows, cols = cells[0, 0].any(dim=1).nonzero(), cells[0, 0].any(dim=0).nonzero()
    if len(rows) == 0:
        return out, 0.0
    # Only the changed blocks' bounding box, grown by the ramp, is feathered and blended (a subject is a few
    # per cent of a 12 MP photo; blending all of it took 2 s). Blocks are cropped with it so that covered
    # pixels keep their grid offsets.
    h, w = photo.shape[:2]
    y0, y1 = max(0, int(rows[0]) * stride - feather), min(h, int(rows[-1]) * stride + size + feather)
    x0, x1 = max(0, int(cols[0]) * stride - feather), min(w, int(cols[-1]) * stride + size + feather)
    covered = F.conv_transpose2d(cells, torch.ones(1, 1, size, size), stride=stride).clamp_(max=1.0)
    covered = F.pad(covered, (0, max(0, w - covered.shape[-1]), 0, max(0, h - covered.shape[-2])), mode="replicate")
    mask = covered[..., y0:y1, x0:x1]
    if feather > 0:
        side = 2 * feather + 1
        mask = F.avg_pool2d(F.pad(mask, (feather, feather, 0, 0), mode="replicate"), (1, side), stride=1)
        mask = F.avg_pool2d(F.pad(mask, (0, 0, feather, feather), mode="replicate"), (side, 1), stride=1)
    weight = mask[0, 0].numpy()[..., None]
    box = (slice(y0, y1), slice(x0, x1))
    blended = photo[box] + weight * (output[box] - photo[box])
    out[box] = np.where(weight > 0, blended, photo[box])
    return out, float(weight.sum() / (h * w))
