"""Architectures by name: build one from a config, recognise one from a state dict, list their presets.

The registry is ``SPECS``, one ``ArchSpec`` per architecture folder under ``deblurcli/models/``, and
functions over it; nothing here knows a particular architecture. ``detect`` is what lets ``--weights PATH``
take any file of a registered architecture without the user naming it: each spec recognises its parameter
names and reads its configuration off the keys and tensor shapes. What shapes cannot tell (a spec's
``not_in_weights``) comes from the metadata our own safetensors carry, or from the published defaults.

Importing this module does not import torch (specs import their ``nn.Module`` only to build one), so the
CLI can build its choices from these tables at import time and ``deblur --help`` stays fast.
"""

from __future__ import annotations

import copy
import importlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from deblurcli.errors import WeightsError
from deblurcli.models.spec import ArchSpec, StateDict

if TYPE_CHECKING:
    from torch import nn

#: the architecture folders under ``deblurcli/models/``, in detection order; each defines ``SPEC``.
ARCHITECTURES = ("nafnet", "dgf", "patchgan")

SPECS: tuple[ArchSpec, ...] = tuple(importlib.import_module(f"deblurcli.models.{a}").SPEC for a in ARCHITECTURES)

#: the architectures that map a blurry photo to a sharp one (not the critic).
GENERATORS: tuple[str, ...] = tuple(spec.name for spec in SPECS if spec.generator)

#: every preset: name -> (architecture, config), for training, benchmarks and checking the catalogue.
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    name: (spec.name, copy.deepcopy(dict(config))) for spec in SPECS for name, config in spec.presets.items()
}


def names() -> list[str]:
    """The registered architecture names, in detection order."""
    return [spec.name for spec in SPECS]


def spec_for(arch: str) -> ArchSpec:
    """The spec of architecture ``arch``; a one-line ``WeightsError`` listing the names otherwise."""
    for spec in SPECS:
        if spec.name == arch:
            return spec
    raise WeightsError(f"unknown architecture {arch!r}; expected one of {', '.join(names())}")


def build(arch: str, config: Mapping[str, Any]) -> nn.Module:
    """A fresh (randomly initialised) module of architecture ``arch`` built from ``config``."""
    spec = spec_for(arch)
    try:
        return spec.build(config)
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"cannot build {arch} from config {json.dumps(dict(config))}: {exc}") from None


def arch_of(model: nn.Module) -> str:
    """The registry name of ``model``'s architecture (for metadata when saving)."""
    for spec in SPECS:
        if isinstance(model, spec.module()):
            return spec.name
    raise ValueError(f"{type(model).__name__} is not a registered architecture ({', '.join(names())})")


def detect(state_dict: StateDict) -> tuple[str, dict[str, Any]]:
    """Recognise the architecture of ``state_dict`` and infer its configuration.

    Raises ``WeightsError`` naming the architectures it expected and a sample of the keys it found, rather
    than letting ``load_state_dict`` print hundreds of missing keys.
    """
    for spec in SPECS:
        try:
            config = spec.detect(state_dict)
        except (KeyError, IndexError, ValueError) as exc:
            raise WeightsError(f"weights look like {spec.name} but are incomplete ({exc})") from None
        if config is not None:
            return spec.name, config
    sample = ", ".join(repr(k) for k in list(state_dict)[:3]) or "none"
    raise WeightsError(
        f"unrecognised architecture: expected {', '.join(names())} weights, "
        f"found {len(state_dict)} tensors with keys such as {sample}"
    )


def preset(name: str) -> tuple[str, dict[str, Any]]:
    """(architecture, a fresh copy of the config) of preset ``name``; a bare architecture name means its
    default preset (``nafnet`` -> ``nafnet-s``)."""
    for spec in SPECS:
        key = spec.default_preset if name == spec.name else name
        if key in spec.presets:
            return spec.name, copy.deepcopy(dict(spec.presets[key]))
    raise WeightsError(f"unknown preset {name!r}; choose one of {', '.join(sorted({*names(), *PRESETS}))}")


def generator_choices() -> list[str]:
    """Every name ``deblur train --arch`` accepts: generator presets and bare generator names, sorted."""
    generators = [spec for spec in SPECS if spec.generator]
    return sorted({spec.name for spec in generators} | {p for spec in generators for p in spec.presets})
