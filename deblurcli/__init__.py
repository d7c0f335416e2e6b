"""deblurcli: remove blur from photos.

The public API: ``Session`` (options resolved once, ``.deblur(rgb)`` per image), ``deblur_image`` and
``load_model`` for PIL images and arrays, and the kernel path's functions ``estimate_kernel`` and
``deconvolve``. They are imported lazily so that ``deblur --version`` and ``deblur --help`` answer without
importing torch (a second or more).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deblurcli._version import __version__

__all__ = ["Session", "__version__", "deblur_image", "deconvolve", "estimate_kernel", "load_model"]

if TYPE_CHECKING:
    from deblurcli.api import deblur_image, load_model
    from deblurcli.kernel.deconv import deconvolve
    from deblurcli.kernel.estimate import estimate_kernel
    from deblurcli.session import Session

#: public name -> the module that defines it
_LAZY = {
    "deblur_image": "deblurcli.api",
    "load_model": "deblurcli.api",
    "Session": "deblurcli.session",
    "estimate_kernel": "deblurcli.kernel.estimate",
    "deconvolve": "deblurcli.kernel.deconv",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deblurcli' has no attribute {name!r}")
