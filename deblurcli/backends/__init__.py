"""Which runtime runs the network: torch (the reference, every device and architecture) or OpenVINO.

``--backend`` / ``Session(backend=...)`` (default: ``$DEBLUR_BACKEND``, else ``auto``) is resolved here once per network (the generator and the refiner
each get their own): ``torch`` is torch; ``openvino`` is OpenVINO, and where it cannot work (not installed,
not the CPU, not a NAFNet, fp16, ``--compile``) a one-line error says why; ``auto`` is OpenVINO exactly where
that explicit choice would work and the precision is bf16 (where it was measured faster, docs/performance.md),
torch everywhere else, with no error. The engine treats a backend as a callable per batch that may give
the run back to torch (:data:`deblurcli.engine.Backend`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from deblurcli.errors import OptionError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from deblurcli.backends.openvino import OpenVINONetwork

BACKENDS = ("auto", "torch", "openvino")
#: Sets the default backend, as ``DEBLUR_MODEL`` the default model: for a shell or container that always
#: wants one (and for the tests, whose expected pixels are torch's).
BACKEND_ENV = "DEBLUR_BACKEND"


def default_backend() -> str:
    """``$DEBLUR_BACKEND`` when set, else ``auto``."""
    return os.environ.get(BACKEND_ENV, "").strip().lower() or "auto"


def resolve_backend(
    name: str | None, model: nn.Module, device: torch.device, precision: torch.dtype, *, compile: bool = False, threads: int | None = None
) -> OpenVINONetwork | None:
    """The backend for ``model`` under ``--backend name`` (None: :func:`default_backend`): an
    :class:`OpenVINONetwork`, or None for torch.

    Raises :class:`~deblurcli.errors.MissingExtraError` for ``openvino`` without OpenVINO installed and
    :class:`~deblurcli.errors.OptionError` (``--backend``) where it cannot run this model here.
    """
    import torch

    from deblurcli.backends import openvino

    choice = (name or default_backend()).strip().lower()
    if choice not in BACKENDS:
        raise OptionError(f"unknown backend {name!r}: use {', '.join(BACKENDS)}", "--backend")
    if choice == "torch":
        return None
    why = openvino.unsupported(model, device, precision, compile)
    if choice == "openvino":
        openvino.import_openvino()
        if why is not None:
            raise OptionError(f"OpenVINO {why}; use --backend torch (or auto)", "--backend")
    elif why is not None or precision != torch.bfloat16 or not openvino.installed():
        return None
    return openvino.OpenVINONetwork(model, precision, threads or torch.get_num_threads())
