"""NAFNet in the registry: presets, how its state dicts (ours and the official ``.pth`` files) are recognised.

The official implementation's parameter names are kept by ``model.py``, so published GoPro checkpoints
(BasicSR's ``params``/``params_ema`` wrappers are removed by ``weights.read_state_dict``) are recognised by
the same signature as our own files: ``intro`` and ``ending``, with block counts read off the
``encoders.i.j`` / ``decoders.i.j`` / ``middle_blks.j`` indices.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from deblurcli.models.spec import ArchSpec, StateDict

if TYPE_CHECKING:
    from torch import nn

#: NAFNet's TLC window: checkpoints trained with global pooling on 256-px crops run with a 384-px local pool.
TLC_LOCAL_POOL = 384

_GOPRO = {"img_channel": 3, "middle_blk_num": 1, "enc_blk_nums": [1, 1, 1, 28], "dec_blk_nums": [1, 1, 1, 1]}

PRESETS: dict[str, dict[str, Any]] = {
    "nafnet-s": {
        "img_channel": 3,
        "width": 16,
        "middle_blk_num": 1,
        "enc_blk_nums": [1, 1, 1, 8],
        "dec_blk_nums": [1, 1, 1, 1],
        "local_pool": 64,
    },
    # The candidate default of issue 21: nafnet-s without its full-resolution level (a 2x pixel unshuffle
    # instead), one more block at the half-resolution level on each side for about the same MACs.
    "nafnet-s-unshuffle": {
        "img_channel": 3,
        "width": 32,
        "middle_blk_num": 1,
        "enc_blk_nums": [2, 1, 8],
        "dec_blk_nums": [1, 1, 2],
        "local_pool": 64,
        "stem": 2,
    },
    "nafnet-w32": {**_GOPRO, "width": 32, "local_pool": TLC_LOCAL_POOL},
    "nafnet-w64": {**_GOPRO, "width": 64, "local_pool": TLC_LOCAL_POOL},
}


def _module() -> type[nn.Module]:
    from deblurcli.models.nafnet.model import NAFNet

    return NAFNet


def _indices(keys: list[str], prefix: str) -> dict[int, set[int]]:
    """For keys like ``encoders.2.5.conv1.weight`` and prefix ``encoders``: {2: {5, ...}, ...}."""
    found: dict[int, set[int]] = {}
    rx = re.compile(rf"^{prefix}\.(\d+)(?:\.(\d+))?\.")
    for key in keys:
        m = rx.match(key)
        if m:
            inner = found.setdefault(int(m.group(1)), set())
            if m.group(2) is not None:
                inner.add(int(m.group(2)))
    return found


def _stem(intro_channels: int) -> tuple[int, int]:
    """(img_channel, stem) for an ``intro`` that reads ``intro_channels``: the smallest unshuffle factor that
    leaves a plausible number of image channels (12 -> 3 channels in 2x2 blocks)."""
    for stem in range(1, MAX_STEM + 1):
        if intro_channels % (stem * stem) == 0 and intro_channels // (stem * stem) <= MAX_CHANNELS:
            return intro_channels // (stem * stem), stem
    return intro_channels, 1  # implausible() names it


def config_from_state(sd: StateDict) -> dict[str, Any]:
    """Width, block counts and stem from the keys and shapes; ``local_pool`` is not in the weights (None)."""
    keys = list(sd)
    intro = sd["intro.weight"]
    encoders = _indices(keys, "encoders")
    decoders = _indices(keys, "decoders")
    img_channel, stem = _stem(int(intro.shape[1]))
    config = {
        "img_channel": img_channel,
        "width": int(intro.shape[0]),
        "middle_blk_num": len({int(k.split(".")[1]) for k in keys if k.startswith("middle_blks.")}),
        "enc_blk_nums": [len(encoders.get(i, ())) for i in sorted(_indices(keys, "downs"))],
        "dec_blk_nums": [len(decoders.get(i, ())) for i in sorted(_indices(keys, "ups"))],
        "local_pool": None,
    }
    return {**config, "stem": stem} if stem > 1 else config


#: Far beyond the published models (width 64, 36 blocks, 4 levels), and still cheap to build empty.
MAX_WIDTH, MAX_BLOCKS, MAX_LEVELS, MAX_CHANNELS, MAX_STEM = 512, 256, 8, 4, 4


def implausible(config: Mapping[str, Any]) -> str | None:
    """Why ``config`` is no real NAFNet: sizes a forged file can claim with a few small tensors."""
    enc, dec = list(config["enc_blk_nums"]), list(config["dec_blk_nums"])
    blocks = int(config["middle_blk_num"]) + sum(enc) + sum(dec)
    if not 1 <= int(config["img_channel"]) <= MAX_CHANNELS:
        return f"{config['img_channel']} image channels"
    if not 1 <= int(config["width"]) <= MAX_WIDTH:
        return f"width {config['width']} (at most {MAX_WIDTH})"
    if len(enc) > MAX_LEVELS or len(enc) != len(dec):
        return f"{len(enc)} encoder and {len(dec)} decoder levels (at most {MAX_LEVELS}, as many of each)"
    if blocks > MAX_BLOCKS:
        return f"{blocks} blocks (at most {MAX_BLOCKS})"
    if not 1 <= int(config.get("stem", 1)) <= MAX_STEM:
        return f"stem {config['stem']} (at most {MAX_STEM})"
    return None


SPEC = ArchSpec(
    name="nafnet",
    module=_module,
    signature=("intro.weight", "ending.weight"),
    config_from_state=config_from_state,
    presets=PRESETS,
    default_preset="nafnet-s",
    not_in_weights=("local_pool",),
    # Published checkpoints were trained with global pooling, which tiles would see differently; our own
    # files record the pool they were trained with and keep it.
    inference_defaults={"local_pool": TLC_LOCAL_POOL},
    implausible=implausible,
)
