"""deblurcli: remove motion blur from photos.

The public API is ``deblur_image`` and ``load_model``. They are imported lazily so that
``deblur --version`` and ``deblur --help`` answer without importing torch (a second or more).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "deblur_image", "load_model"]

if TYPE_CHECKING:
    from deblurcli.api import deblur_image, load_model


def __getattr__(name: str) -> Any:
    if name in ("deblur_image", "load_model"):
        from deblurcli import api

        return getattr(api, name)
    raise AttributeError(f"module 'deblurcli' has no attribute {name!r}")
