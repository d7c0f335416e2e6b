"""Validation during training: fixed pairs, PSNR/SSIM of a model (or of the blurry input), and the
rule for what counts as the best model so far.

Scores follow ``deblur eval``'s conventions (8-bit quantised output, per-image PSNR averaged in dB,
SSIM with an 11x11 Gaussian window and no downsampling) but are computed on the device with only these
two metrics, since validation runs often.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from deblurcli.extras import require
from deblurcli.train import data as data_mod

Pairs = list[tuple[torch.Tensor, torch.Tensor]]


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[Any]:
    """Autocast to ``dtype`` on ``device`` (nothing for fp32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def quantize8(x: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1] and round to 8 bits, as the output would be saved (see metrics.quantize8)."""
    return (x.clamp(0, 1) * 255).round() / 255


def synthetic_pairs(photos: list[torch.Tensor], blur_cfg: Any, margin: int, val_crop: int | None, seed: int) -> Pairs:
    """Fixed validation pairs: centre crops of held-out photos, blurred once on the CPU with a seed of
    their own (one image at a time, in order), so they are the same on every device and after every
    resume. Each crop keeps the synthesis margin around it, cut off after blurring."""
    from deblurcli.blur import synthesize_pair

    # No "leave it sharp" samples: one identical pair would make the mean PSNR infinite.
    cfg = dataclasses.replace(blur_cfg, sharp_prob=0.0)
    gen = torch.Generator().manual_seed(seed + 10_007)
    m = margin
    val = []
    for img in photos:
        room = min(img.shape[0], img.shape[1]) - 2 * m
        side = min(val_crop, room) + 2 * m if val_crop else room + 2 * m
        sharp, blurry = synthesize_pair(data_mod.u8_to_float(data_mod.center_crop(img, side)), cfg, gen)
        val.append((blurry[..., m:-m, m:-m], sharp[..., m:-m, m:-m]) if m else (blurry, sharp))
    return val


@torch.no_grad()
def score(
    pairs: Pairs, model: nn.Module | None, device: torch.device, dtype: torch.dtype, channels_last: bool = False
) -> dict[str, float]:
    """Mean PSNR/SSIM of ``model`` (or of the blurry input, for None) over ``pairs``; {} without pairs."""
    piq = require("piq", "train")
    psnrs, ssims = [], []
    for blurry, sharp in pairs:
        x = blurry.to(device)
        if model is None:
            out = x
        else:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, dtype):
                out = model(x)
        out = quantize8(out.float())
        ref = quantize8(sharp.to(device).float())
        mse = float((out.double() - ref.double()).pow(2).mean())
        psnrs.append(math.inf if mse == 0 else 10 * math.log10(1 / mse))
        ssims.append(float(piq.ssim(out, ref, kernel_size=11, kernel_sigma=1.5, data_range=1.0, downsample=False)))
    if not psnrs:
        return {}
    return {"psnr": sum(psnrs) / len(psnrs), "ssim": sum(ssims) / len(ssims)}


def is_best(scores: Mapping[str, float], best_psnr: float | None, val_input: Mapping[str, float] | None) -> bool:
    """Whether ``scores`` make a new best model: above the best so far *and* above the blurry input, since
    a "best" model that makes photos worse than leaving them alone is no model to ship."""
    if val_input and scores["psnr"] <= val_input["psnr"]:
        return False
    return best_psnr is None or scores["psnr"] > best_psnr


def print_table(
    console: Any, step: int, count: int, scores: Mapping[str, float], val_input: Mapping[str, float] | None,
    best: tuple[float, int] | None, improved: bool,
) -> None:
    """The validation table: blurry input, this model, the best so far (``best`` = (PSNR, step))."""
    from rich.table import Table

    table = Table(title=f"validation at step {step} ({count} images)", title_justify="left")
    table.add_column("")
    table.add_column("PSNR (dB)", justify="right")
    table.add_column("SSIM", justify="right")
    if val_input:
        table.add_row("blurry input", f"{val_input['psnr']:.2f}", f"{val_input['ssim']:.4f}")
    table.add_row("model (EMA)", f"{scores['psnr']:.2f}", f"{scores['ssim']:.4f}")
    if best is not None:
        table.add_row(f"best (step {best[1]})" + (" *new*" if improved else ""), f"{best[0]:.2f}", "")
    console.print(table)
    if val_input and scores["psnr"] <= val_input["psnr"]:
        console.print(
            f"[yellow]not saved as best: the model ({scores['psnr']:.2f} dB) scores below the blurry input "
            f"({val_input['psnr']:.2f} dB)[/]"
        )
