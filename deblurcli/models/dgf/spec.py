"""DGF in the registry: the official and light configurations, and how a DGF state dict is recognised.

Growth rate, width, layer count and norm are read off the tensors; dilations, the InstanceNorm window and
dropout leave no trace in them, so they come from our files' metadata, or from the default schedule (the
light model's own rates for a file shaped like it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from deblurcli.models.spec import ArchSpec, StateDict

if TYPE_CHECKING:
    from torch import nn

#: The official configuration (growth rate 64, BatchNorm, dropout 0.5 in the tail).
DGF_FULL: dict[str, Any] = {
    "growth_rate": 64,
    "width": 256,
    "dilations": [1, 1, 2, 2, 3, 3, 2, 2, 1, 1],
    "norm": "batch",
    "norm_window": None,
    "dropout": 0.5,
}

#: The seed poster's light configuration (growth rate 32, InstanceNorm, no dropout).
DGF_LIGHT: dict[str, Any] = {
    "growth_rate": 32,
    "width": 128,
    "dilations": [1, 1, 2, 1, 3, 1, 2, 1, 1, 1],
    "norm": "instance",
    "norm_window": None,
    "dropout": 0.0,
}


def default_dilations(n_layers: int) -> list[int]:
    """Rates rising toward the middle of the dense field and falling toward its tail (1,1,2,2,3,3,... for 10)."""
    return [1 + min(i, n_layers - 1 - i) // 2 for i in range(n_layers)]


def _module() -> type[nn.Module]:
    from deblurcli.models.dgf.model import DGF

    return DGF


def config_from_state(sd: StateDict) -> dict[str, Any]:
    """Growth rate, width, layers and norm from the tensors; the rest from the published configurations."""
    n_layers = len({k.split(".")[1] for k in sd if k.startswith("dense.")})
    norm = "batch" if "dense.0.norm1.running_mean" in sd else "instance"
    config: dict[str, Any] = {
        "growth_rate": int(sd["dense.0.conv2.weight"].shape[0]),
        "width": int(sd["head.weight"].shape[0]),
        "dilations": default_dilations(n_layers),
        "norm": norm,
        "norm_window": None,
        "dropout": DGF_FULL["dropout"] if norm == "batch" else DGF_LIGHT["dropout"],
    }
    # Dilations leave no trace in the weights: a file shaped like the poster's light model gets its rates.
    if all(config[k] == DGF_LIGHT[k] for k in ("growth_rate", "width", "norm")) and n_layers == len(
        DGF_LIGHT["dilations"]
    ):
        config["dilations"] = list(DGF_LIGHT["dilations"])
    return config


#: Far beyond the official model (growth rate 64, width 256, 10 dense layers), and still cheap to build empty.
MAX_GROWTH, MAX_WIDTH, MAX_LAYERS = 256, 1024, 64


def implausible(config: Mapping[str, Any]) -> str | None:
    """Why ``config`` is no real DGF: sizes a forged file (or its metadata's dilations) can claim."""
    layers = len(config["dilations"])
    if not 1 <= layers <= MAX_LAYERS:
        return f"{layers} dense layers (at most {MAX_LAYERS})"
    if not 1 <= int(config["growth_rate"]) <= MAX_GROWTH or not 1 <= int(config["width"]) <= MAX_WIDTH:
        return f"growth rate {config['growth_rate']}, width {config['width']} (at most {MAX_GROWTH}, {MAX_WIDTH})"
    return None


SPEC = ArchSpec(
    name="dgf",
    module=_module,
    signature=("head.weight", "tail_conv.weight", "dense.0.conv2.weight"),
    config_from_state=config_from_state,
    presets={"dgf": DGF_FULL, "dgf-light": DGF_LIGHT},
    default_preset="dgf",
    not_in_weights=("dilations", "norm_window", "dropout"),
    implausible=implausible,
)
