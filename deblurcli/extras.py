"""Optional dependencies, imported only where they are used.

The base install is what inference needs; ``deblur train`` and ``deblur eval`` need lpips (which pulls
torchvision, and through it an exact torch version) and piq, so those live in the ``train`` and ``eval``
extras. Importing one through :func:`require` turns "not installed" into one line naming the extra.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from deblurcli.errors import MissingExtraError


def require(module: str, extra: str) -> ModuleType:
    """``module`` imported, or a :class:`MissingExtraError` saying which extra of deblurcli installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        # lpips installed without a working torchvision names the module that is really missing
        missing = exc.name or module
        what = f"{module} is not installed" if missing == module else f"{module} cannot be imported ({missing} is missing)"
        raise MissingExtraError(f"{what}; install the {extra!r} extra: pip install 'deblurcli[{extra}]'") from None
