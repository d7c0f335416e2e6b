"""DGF: the network (``model.py``) and its registry entry with the published configurations (``spec.py``).

The network's names are imported on first use, so that reading ``SPEC`` (the CLI's choices, ``deblur
--help``) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deblurcli.models.dgf.spec import DGF_FULL, DGF_LIGHT, SPEC, default_dilations

if TYPE_CHECKING:
    from deblurcli.models.dgf.model import DGF, InstanceNorm

__all__ = ["DGF", "DGF_FULL", "DGF_LIGHT", "SPEC", "InstanceNorm", "default_dilations"]
_FROM_MODEL = ("DGF", "InstanceNorm")


def __getattr__(name: str) -> Any:
    if name in _FROM_MODEL:
        from deblurcli.models.dgf import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
