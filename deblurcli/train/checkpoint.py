"""Resumable training state: written atomically, read back with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (model and optimiser state
dicts, RNG states as uint8 tensors), never pickled objects, so loading one cannot run code and a
checkpoint from an untrusted source is as safe to open as a safetensors file. It is written to a temporary
file in the same folder, fsynced and renamed over the previous one: a kill at any moment leaves either
the old or the new checkpoint, never a torn one.

The layout is versioned (``format``/``version``). Fields are only ever added, with defaults on load, so
a run started with an older deblurcli resumes with a newer one.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from deblurcli.errors import WeightsError

FORMAT = "deblurcli-train"
VERSION = 1
#: where a run folder keeps its resumable state, and the name of the rolling checkpoint in it.
CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / LAST


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """Atomically write ``state`` (plus format/version tags) to ``path``."""
    from deblurcli.atomic import atomic_write_bytes

    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **state}, buf)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no training checkpoint here (nothing to resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own text here runs to a dozen lines and suggests weights_only=False, which could run code.
        raise WeightsError(
            f"{path}: refused to resume from it (it holds Python objects that only a full unpickle could create)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        text = " ".join(str(exc).split(". ")[0].split()) or "unreadable"
        raise WeightsError(f"{path}: not a readable training checkpoint ({text})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise WeightsError(f"{path}: not a deblurcli training checkpoint")
    if int(state.get("version", 0)) > VERSION:
        raise WeightsError(
            f"{path}: checkpoint version {state['version']} was written by a newer deblurcli; upgrade to resume it"
        )
    return state


def remove_stale_temps(run_dir: Path, export_names: tuple[str, ...]) -> list[Path]:
    """Delete temporary files a killed run left behind in ``run_dir`` and its checkpoint folder.

    Only our own patterns are touched: atomic.py's ``.<name>.deblurcli-tmp-XXXX`` (checkpoints) and the
    ``.<export>.XXXX.tmp`` files weights.save_generator writes before renaming an export.
    """
    from deblurcli.atomic import is_temp_file

    removed = []
    for folder in (Path(run_dir), Path(run_dir) / CHECKPOINT_DIR):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            name = entry.name
            ours = is_temp_file(name) or (name.endswith(".tmp") and name.startswith(tuple(f".{e}." for e in export_names)))
            if ours and entry.is_file():
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


def rng_states(generators: Mapping[str, torch.Generator]) -> dict[str, torch.Tensor]:
    """Every random stream the run draws from: torch's global CPU/CUDA generators and the named ones."""
    states = {f"gen.{name}": g.get_state() for name, g in generators.items()}
    states["torch.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            states[f"torch.cuda.{i}"] = s
    return states


def restore_rng_states(states: Mapping[str, torch.Tensor], generators: Mapping[str, torch.Generator]) -> None:
    """Inverse of :func:`rng_states`. Streams absent from ``states``, or saved on another kind of device,
    are left as seeded: the run continues correctly, only not bit-identically."""
    for name, g in generators.items():
        if f"gen.{name}" in states:
            try:
                g.set_state(states[f"gen.{name}"])
            except RuntimeError:  # a CPU stream resumed on a GPU (or back): the formats differ; keep the seed
                pass
    torch.set_rng_state(states["torch.cpu"])
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            if f"torch.cuda.{i}" in states:
                torch.cuda.set_rng_state(states[f"torch.cuda.{i}"], i)


def clone_tree(obj: Any) -> Any:
    """Deep copy of nested dicts/lists of tensors (state dicts), tensors cloned on their device.

    Used for the in-memory "last good state" that NaN recovery rolls back to: ``state_dict()`` returns
    live references, which the next optimiser step would overwrite.
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: clone_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(clone_tree(v) for v in obj)
    return obj
