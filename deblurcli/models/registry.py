"""Architectures by name: build one from a config, or recognise one from a state dict.

``detect`` is what lets ``--weights PATH`` take any file of a registered architecture without the user
naming it: the architecture is told apart by its parameter names, and its configuration (NAFNet width and
block counts, DGF growth rate, width, layer count and norm, PatchGAN width, depth and norm) is read off the
keys and tensor shapes. What shapes cannot tell (DGF dilations, NAFNet's ``local_pool``) comes from the
metadata our own safetensors carry, or from the published defaults.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from deblurcli.errors import WeightsError
from deblurcli.models.dgf import DGF, DGF_FULL, DGF_LIGHT, default_dilations
from deblurcli.models.nafnet import NAFNet
from deblurcli.models.patchgan import PatchGAN

#: architecture name -> module class; ``build(name, config)`` is ``ARCHS[name](**config)``.
ARCHS: dict[str, type[nn.Module]] = {"nafnet": NAFNet, "dgf": DGF, "patchgan": PatchGAN}

#: the architectures that map a blurry photo to a sharp one (PatchGAN is a discriminator).
GENERATORS = ("nafnet", "dgf")

_NAFNET_GOPRO = {"img_channel": 3, "middle_blk_num": 1, "enc_blk_nums": [1, 1, 1, 28], "dec_blk_nums": [1, 1, 1, 1]}

#: named architecture configurations (for training, benchmarks and ``deblur models``), independent of weights.
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "nafnet-s": (
        "nafnet",
        {
            "img_channel": 3,
            "width": 16,
            "middle_blk_num": 1,
            "enc_blk_nums": [1, 1, 1, 8],
            "dec_blk_nums": [1, 1, 1, 1],
            "local_pool": 64,
        },
    ),
    "nafnet-w32": ("nafnet", {**_NAFNET_GOPRO, "width": 32, "local_pool": 384}),
    "nafnet-w64": ("nafnet", {**_NAFNET_GOPRO, "width": 64, "local_pool": 384}),
    "dgf": ("dgf", dict(DGF_FULL)),
    "dgf-light": ("dgf", dict(DGF_LIGHT)),
    "patchgan": ("patchgan", {"in_channels": 6, "ndf": 64, "n_layers": 3, "norm": "spectral"}),
}


def build(arch: str, config: Mapping[str, Any]) -> nn.Module:
    """A fresh (randomly initialised) module of architecture ``arch`` built from ``config``."""
    cls = ARCHS.get(arch)
    if cls is None:
        raise WeightsError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    try:
        return cls(**config)
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"cannot build {arch} from config {json.dumps(dict(config))}: {exc}") from None


def arch_of(model: nn.Module) -> str:
    """The registry name of ``model``'s architecture (for metadata when saving)."""
    for name, cls in ARCHS.items():
        if isinstance(model, cls):
            return name
    raise ValueError(f"{type(model).__name__} is not a registered architecture ({', '.join(ARCHS)})")


def _indices(keys: list[str], pattern: str) -> dict[int, set[int]]:
    """For keys like ``encoders.2.5.conv1.weight`` and pattern ``encoders``: {2: {5, ...}, ...}."""
    found: dict[int, set[int]] = {}
    rx = re.compile(rf"^{pattern}\.(\d+)(?:\.(\d+))?\.")
    for key in keys:
        m = rx.match(key)
        if m:
            inner = found.setdefault(int(m.group(1)), set())
            if m.group(2) is not None:
                inner.add(int(m.group(2)))
    return found


def _detect_nafnet(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    keys = list(sd)
    intro = sd["intro.weight"]
    down_levels = sorted(_indices(keys, "downs"))
    up_levels = sorted(_indices(keys, "ups"))
    encoders = _indices(keys, "encoders")
    decoders = _indices(keys, "decoders")
    middle = {int(k.split(".")[1]) for k in keys if k.startswith("middle_blks.")}
    return {
        "img_channel": int(intro.shape[1]),
        "width": int(intro.shape[0]),
        "middle_blk_num": len(middle),
        "enc_blk_nums": [len(encoders.get(i, ())) for i in down_levels],
        "dec_blk_nums": [len(decoders.get(i, ())) for i in up_levels],
        "local_pool": None,
    }


def _detect_dgf(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    n_layers = len({k.split(".")[1] for k in sd if k.startswith("dense.")})
    growth = int(sd["dense.0.conv2.weight"].shape[0])
    norm = "batch" if "dense.0.norm1.running_mean" in sd else "instance"
    config: dict[str, Any] = {
        "growth_rate": growth,
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


def _detect_patchgan(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    convs: dict[int, torch.Tensor] = {}
    for key, value in sd.items():
        m = re.match(r"^body\.(\d+)\.(?:weight|parametrizations\.weight\.original)$", key)
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


#: config keys that leave no trace in the tensors, per architecture: only these are taken from the
#: metadata of our own files; everything else comes from the shapes, so lying metadata cannot make
#: ``build`` allocate a model that the tensors do not describe.
NOT_IN_WEIGHTS: dict[str, tuple[str, ...]] = {
    "nafnet": ("local_pool",),
    "dgf": ("dilations", "norm_window", "dropout"),
    "patchgan": (),
}

#: architecture -> (keys that identify it, config reader).
_SIGNATURES = {
    "nafnet": (("intro.weight", "ending.weight"), _detect_nafnet),
    "dgf": (("head.weight", "tail_conv.weight", "dense.0.conv2.weight"), _detect_dgf),
    "patchgan": (("body.0.weight|body.0.parametrizations.weight.original",), _detect_patchgan),
}


def _has(sd: Mapping[str, Any], key: str) -> bool:
    return any(alt in sd for alt in key.split("|"))


def detect(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, Any]]:
    """Recognise the architecture of ``state_dict`` and infer its configuration.

    Raises ``WeightsError`` naming the architectures it expected and a sample of the keys it found, rather
    than letting ``load_state_dict`` print hundreds of missing keys.
    """
    for arch, (required, reader) in _SIGNATURES.items():
        if all(_has(state_dict, key) for key in required):
            try:
                return arch, reader(state_dict)
            except (KeyError, IndexError, ValueError) as exc:
                raise WeightsError(f"weights look like {arch} but are incomplete ({exc})") from None
    sample = ", ".join(repr(k) for k in list(state_dict)[:3]) or "none"
    raise WeightsError(
        f"unrecognised architecture: expected {', '.join(ARCHS)} weights, "
        f"found {len(state_dict)} tensors with keys such as {sample}"
    )
