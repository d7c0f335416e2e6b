"""PatchGAN in the registry: the training recipe's critic, recognised so that its files are refused by name.

It is not a generator, but it is built by name from a config stored in training checkpoints, and a critic
file passed as ``--weights`` must be told apart ("expected a generator, found patchgan") rather than handed
to spandrel. Width, depth and norm are all read off the tensors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from deblurcli.models.spec import ArchSpec, StateDict

if TYPE_CHECKING:
    import torch
    from torch import nn

_CONV = re.compile(r"^body\.(\d+)\.(?:weight|parametrizations\.weight\.original)$")


def _module() -> type[nn.Module]:
    from deblurcli.models.patchgan.model import PatchGAN

    return PatchGAN


def config_from_state(sd: StateDict) -> dict[str, Any]:
    """Channels, width and depth from the conv weights; the norm from BatchNorm buffers or parametrizations."""
    convs: dict[int, torch.Tensor] = {}
    for key, value in sd.items():
        m = _CONV.match(key)
        if m and value.ndim == 4:
            convs[int(m.group(1))] = value
    first = convs[min(convs)]
    if any(k.endswith("running_mean") for k in sd):
        norm = "batch"
    elif any(".parametrizations." in k for k in sd):
        norm = "spectral"
    else:
        norm = "none"
    return {"in_channels": int(first.shape[1]), "ndf": int(first.shape[0]), "n_layers": len(convs) - 2, "norm": norm}


def implausible(config: Mapping[str, Any]) -> str | None:
    """Why ``config`` is no real PatchGAN critic (the recipe's has 3 layers of width 64 to 512)."""
    if not 0 <= int(config["n_layers"]) <= 8 or not 1 <= int(config["ndf"]) <= 512 or not 1 <= int(config["in_channels"]) <= 8:
        return f"{config['n_layers']} layers of width {config['ndf']} on {config['in_channels']} channels"
    return None


SPEC = ArchSpec(
    name="patchgan",
    module=_module,
    signature=("body.0.weight|body.0.parametrizations.weight.original",),
    config_from_state=config_from_state,
    presets={"patchgan": {"in_channels": 6, "ndf": 64, "n_layers": 3, "norm": "spectral"}},
    default_preset="patchgan",
    generator=False,
    implausible=implausible,
)
