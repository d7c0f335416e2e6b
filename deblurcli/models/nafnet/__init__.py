"""NAFNet: the network (``model.py``) and its registry entry (``spec.py``).

The network's names are imported on first use, so that reading ``SPEC`` (the CLI's choices, ``deblur
--help``) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deblurcli.models.nafnet.spec import SPEC, TLC_LOCAL_POOL

if TYPE_CHECKING:
    from deblurcli.models.nafnet.model import LayerNorm2d, NAFNet, box_mean

__all__ = ["SPEC", "TLC_LOCAL_POOL", "LayerNorm2d", "NAFNet", "box_mean"]
_FROM_MODEL = ("LayerNorm2d", "NAFNet", "box_mean")


def __getattr__(name: str) -> Any:
    if name in _FROM_MODEL:
        from deblurcli.models.nafnet import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
