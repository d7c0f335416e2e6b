"""What the registry knows about one architecture: ``ArchSpec``.

Each architecture folder (``deblurcli/models/<arch>/``) defines one ``SPEC`` in its ``spec.py``; the
registry is the list of them. Everything that depends on *which* architecture a file or a name is (how to
build it, how to recognise its state dict, which settings its weights cannot carry, its named
configurations) lives in the spec, so the weights loader and the CLI never test an architecture's name.

A spec is plain data and functions over tensors' keys and shapes: it imports its ``nn.Module`` only when
asked to build one, so that the CLI can list architectures and presets without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

#: A state dict as the registry sees it: parameter name -> tensor.
StateDict = Mapping[str, "torch.Tensor"]


@dataclass(frozen=True)
class ArchSpec:
    """One architecture: its name, module, signature in a state dict, presets and loading rules."""

    #: registry name, written as ``arch`` in the metadata of our safetensors files.
    name: str
    #: the ``nn.Module`` class, imported on call (keeps torch out of ``deblur --help``).
    module: Callable[[], type[nn.Module]]
    #: keys every state dict of this architecture has; ``"a|b"`` accepts either spelling (e.g. a weight
    #: with or without the spectral-norm parametrization).
    signature: tuple[str, ...]
    #: reads the configuration off the keys and tensor shapes of a state dict that has the signature.
    config_from_state: Callable[[StateDict], dict[str, Any]]
    #: named configurations (for ``deblur train --arch``, benchmarks and the catalogue), independent of weights.
    presets: Mapping[str, Mapping[str, Any]]
    #: the preset the bare architecture name stands for in ``--arch`` (``nafnet`` -> ``nafnet-s``).
    default_preset: str
    #: config keys that leave no trace in the tensors: only these are taken from the metadata of our own
    #: files, so lying metadata cannot make ``build`` allocate a model the tensors do not describe.
    not_in_weights: tuple[str, ...] = ()
    #: values for config keys still ``None`` when weights are loaded for inference (NAFNet's TLC pool for
    #: published checkpoints, which record no pool).
    inference_defaults: Mapping[str, Any] = field(default_factory=dict)
    #: False for a critic: it is built and recognised, but never loaded to deblur a photo.
    generator: bool = True
    #: why a configuration read off a file is beyond any real model of this architecture (None if it is not):
    #: checked before anything is built, since a forged file can name 20,000 blocks in a few kilobytes.
    implausible: Callable[[Mapping[str, Any]], str | None] = lambda _config: None

    def build(self, config: Mapping[str, Any]) -> nn.Module:
        """A fresh, randomly initialised module from ``config`` (raises the module's TypeError/ValueError)."""
        return self.module()(**config)

    def matches(self, state_dict: StateDict) -> bool:
        """Whether ``state_dict`` has every key of the signature."""
        return all(any(alt in state_dict for alt in key.split("|")) for key in self.signature)

    def detect(self, state_dict: StateDict) -> dict[str, Any] | None:
        """The configuration of ``state_dict`` if it is of this architecture, else None.

        Raises KeyError/IndexError/ValueError when the signature is there but the rest is not (a truncated
        or edited file); the registry turns those into one-line errors.
        """
        return self.config_from_state(state_dict) if self.matches(state_dict) else None
