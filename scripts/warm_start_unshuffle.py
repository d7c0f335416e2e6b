"""A warm start for ``nafnet-s-unshuffle`` from a trained ``nafnet-s``: every level below the first is copied.

    python scripts/warm_start_unshuffle.py -o runs/unshuffle-init.safetensors
    deblur train --synthetic ../shared/data/train --weights runs/unshuffle-init.safetensors -o runs/unshuffle ...

The unshuffle variant drops nafnet-s's full-resolution level: its half-resolution level *is* nafnet-s's
level 1 (32 channels), and so on down. So ``encoders``/``downs`` 1-3 of nafnet-s become the variant's 0-2,
``middle_blks`` stay, ``ups`` 0-2 and ``decoders`` 0-2 stay where they are. What is new: ``intro`` (reads
2x2 blocks, 12 channels) and ``ending`` (writes them), left at PyTorch's initialisation and zero
respectively (so the start is the identity, as NAFNet's blocks start), and the one extra block on each side
of the half-resolution level, whose ``beta``/``gamma`` start at zero (an identity block, as in NAFNet).
Training then only has to learn the way in and out of a network that already deblurs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from deblurcli.models.registry import build, preset
from deblurcli.weights import load_generator, save_generator


def warm_start(source: torch.nn.Module) -> torch.nn.Module:
    arch, config = preset("nafnet-s-unshuffle")
    target = build(arch, config)
    src = source.state_dict()
    moved: dict[str, torch.Tensor] = {}
    for key, value in src.items():
        head, _, rest = key.partition(".")
        if head in ("encoders", "downs"):
            level, _, tail = rest.partition(".")
            if int(level) == 0:
                continue  # the full-resolution level has no counterpart
            moved[f"{head}.{int(level) - 1}.{tail}"] = value
        elif head in ("ups", "decoders"):
            level, _, tail = rest.partition(".")
            if int(level) == len(source.decoders) - 1:
                continue
            moved[f"{head}.{level}.{tail}"] = value
        elif head == "middle_blks":
            moved[key] = value
    state = target.state_dict()
    missing = [k for k in moved if k not in state or state[k].shape != moved[k].shape]
    if missing:
        raise SystemExit(f"the source does not fit nafnet-s-unshuffle: {missing[:3]}")
    state.update(moved)
    torch.nn.init.zeros_(state["ending.weight"])
    torch.nn.init.zeros_(state["ending.bias"])
    target.load_state_dict(state)
    print(f"copied {len(moved)} of {len(state)} tensors from the source")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=None, help="the nafnet-s file (default: the shipped nafnet-s)")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    source = load_generator("nafnet-s" if args.weights is None else None, args.weights)
    target = warm_start(source)
    save_generator(target, args.output, {"name": "nafnet-s-unshuffle", "warm_start": str(args.weights or "nafnet-s")})
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
