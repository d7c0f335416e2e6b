"""Models the optional ``spandrel`` package recognises (Restormer, FFTformer, Uformer, ...), behind the
deblurcli generator contract; :func:`deblurcli.weights.load_generator` hands it what it does not know."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: a spandrel model's receptive field is unknown to us; this many pixels at a tile edge are discarded.
SPANDREL_TILE_MARGIN = 32


class SpandrelGenerator(nn.Module):
    """A model loaded by the optional ``spandrel`` package, behind the deblurcli generator contract.

    spandrel pads inputs to the model's size requirements and clamps to [0, 1] itself; its receptive field
    is unknown to us, so ``tile_margin`` is a generous ``SPANDREL_TILE_MARGIN``. ``config`` records the
    spandrel architecture for reports; it cannot be rebuilt with ``registry.build``.
    """

    tile_margin = SPANDREL_TILE_MARGIN

    def __init__(self, descriptor: Any) -> None:
        super().__init__()
        self.descriptor = descriptor
        self.net = descriptor.model  # registered, so .to()/.eval() reach the real parameters
        self.size_multiple = int(descriptor.size_requirements.multiple_of)
        self.config = {"spandrel_arch": str(descriptor.architecture.id)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.descriptor(x)
