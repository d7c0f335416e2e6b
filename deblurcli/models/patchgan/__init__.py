"""PatchGAN: the critic network (``model.py``) and its registry entry (``spec.py``).

The network is imported on first use, so that reading ``SPEC`` (the CLI's choices, ``deblur --help``)
does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deblurcli.models.patchgan.spec import SPEC

if TYPE_CHECKING:
    from deblurcli.models.patchgan.model import PatchGAN

__all__ = ["SPEC", "PatchGAN"]


def __getattr__(name: str) -> Any:
    if name == "PatchGAN":
        from deblurcli.models.patchgan import model

        return model.PatchGAN
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
