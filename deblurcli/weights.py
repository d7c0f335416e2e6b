"""The model catalogue and where weights come from: bundled files, or Hugging Face Hub files pinned by commit.

The catalogue is ``models.json`` in the bundled weights folder (JSON rather than TOML because
``tomllib`` only exists from Python 3.11 and deblurcli supports 3.10 without extra dependencies). Each entry
names an architecture and configuration and one weights file:

* ``bundled``: a safetensors file shipped in the package (``deblurcli/_weights`` in a wheel, the repository's
  ``weights/`` folder in a source or editable install). A bundled file may be missing (not trained yet, or a
  stripped install): that model is then "not available" and loading it says so in one line.
* ``hub``: a file in a Hugging Face Hub repository, fetched with ``hf_hub_download`` at a pinned **commit**
  (a branch could move) into the standard HF cache, so ``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE`` and
  ``HF_ENDPOINT`` work as for any Hub client. Its sha256 is checked every time it is resolved, before the
  bytes reach ``torch.load``: hashing costs well under a second even for the 272 MB NAFNet-w64 and it also
  catches a cache file altered after download. A file that does not match is refused and removed from the
  cache -- never through a link: a snapshot entry that points outside the cache's own blobs loses only the
  link, whatever it points to is left alone (a shared or tampered cache must not make us delete a user's file).

Loading is never a full unpickle: our own weights are safetensors (with the architecture and configuration
in the metadata); ``.pth``/``.pt`` files go through ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from deblurcli.errors import WeightsError

if TYPE_CHECKING:  # torch is imported where weights are read, so `deblur models` starts without it
    import torch
    from torch import nn

    from deblurcli.models.spandrel import SpandrelGenerator

#: the name ``deblur`` uses when no model is given and no bundled file is present.
DEFAULT_MODEL = "nafnet-s"

#: keys that wrap the real state dict in training checkpoints, in order of preference (BasicSR evaluates
#: with the EMA weights when a checkpoint has them).
_WRAPPER_KEYS = ("params_ema", "params", "state_dict")


@dataclass(frozen=True)
class ModelEntry:
    """One named model: its architecture and configuration, and where its weights file comes from."""

    name: str
    arch: str
    config: dict[str, Any]
    source: Literal["bundled", "hub"]
    file: str
    repo_id: str | None = None
    revision: str | None = None
    sha256: str | None = None
    size: int | None = None
    license: str = ""
    description: str = ""
    published_quality: str = ""
    measured_quality: str = ""
    #: the quality in a few words, for the one-line rows of ``deblur models``
    quality_summary: str = ""
    #: False for a bundled entry whose weights have not been trained yet: its missing file is then expected,
    #: and the user is told to train one rather than to reinstall.
    shipped: bool = True
    #: what the weights learned from and that data's terms: users deciding on commercial use need it.
    training_data: str = ""
    #: config overrides applied when running the model (e.g. NAFNet's ``local_pool``).
    for_inference: dict[str, Any] = field(default_factory=dict)
    #: ``deblur``: maps a blurry photo to a sharp one (offered as ``--model``); ``refine``: maps the kernel
    #: method's deconvolution (its ringing, noise and small kernel errors) to a sharp photo, run after it.
    role: Literal["deblur", "refine"] = "deblur"
    #: parameters of ``arch`` at ``config`` (a test builds each model to check), so that listing the
    #: catalogue does not have to import torch to count them
    params: int | None = None

    def __post_init__(self) -> None:
        if self.source not in ("bundled", "hub") or (self.source == "hub" and not (self.repo_id and self.revision)):
            raise WeightsError(f"model {self.name!r}: a source must be 'bundled', or 'hub' with a repo_id and revision")
        if self.role not in ("deblur", "refine"):
            raise WeightsError(f"model {self.name!r}: role must be 'deblur' or 'refine', got {self.role!r}")


def bundled_dir() -> Path:
    """Where bundled weights and ``models.json`` live: in the package for wheels, the repo's ``weights/`` otherwise."""
    packaged = Path(__file__).resolve().parent / "_weights"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "weights"


def _catalogue() -> tuple[ModelEntry, ...]:
    return _read_catalogue(bundled_dir() / "models.json")


def _read_catalogue(path: Path) -> tuple[ModelEntry, ...]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        entries = tuple(ModelEntry(**item) for item in raw["models"])
    except (OSError, ValueError, KeyError, TypeError, WeightsError) as exc:
        raise WeightsError(f"model catalogue {path} is missing or broken ({exc}); reinstall deblurcli") from None
    return entries


def list_models() -> list[ModelEntry]:
    """Every catalogued model, bundled ones first (best first), then Hub ones."""
    return list(_catalogue())


def get_entry(name: str) -> ModelEntry:
    """The catalogue entry called ``name``; a one-line error listing the valid names otherwise (the
    deblurring models: a name is almost always looked up as ``--model``, where a refiner cannot serve)."""
    for entry in _catalogue():
        if entry.name == name:
            return entry
    names = ", ".join(e.name for e in _catalogue() if is_trained(e) and e.role == "deblur")
    raise WeightsError(f"unknown model {name!r}; choose one of: {names} (or pass --weights FILE)")


def is_trained(entry: ModelEntry) -> bool:
    """Whether ``entry`` has weights to run (a bundled model may be catalogued before it is trained);
    untrained entries are not offered as choices."""
    return entry.shipped or is_cached(entry)


def default_model_name() -> str:
    """The model used when none is named: ``$DEBLUR_MODEL`` when set, else the one ``deblur models default
    NAME`` saved in the settings file, else the best model usable offline.

    Both let a user pick a model once for every command and the Python API (for example ``nafnet-s-free``,
    whose training data are all freely licensed); the variable wins, so one shell or job can differ. Without
    either: the first bundled entry whose file is present, else ``DEFAULT_MODEL``.
    """
    from deblurcli.config import config_path, default_model

    chosen = os.environ.get("DEBLUR_MODEL", "").strip()
    if chosen:
        try:
            return get_entry(chosen).name
        except WeightsError as exc:
            raise WeightsError(f"DEBLUR_MODEL: {exc}") from None
    saved = default_model()
    if saved:
        try:
            return get_entry(saved).name
        except WeightsError as exc:
            raise WeightsError(f"{config_path()}: {exc}; change it with 'deblur models default NAME'") from None
    for entry in _catalogue():
        if entry.role == "deblur" and entry.source == "bundled" and (bundled_dir() / entry.file).is_file():
            return entry.name
    return DEFAULT_MODEL


def default_refiner_name() -> str | None:
    """The refiner the kernel method runs after deconvolution by default: the first bundled, shipped
    ``refine`` entry whose file is present; None when there is none (deconvolution output is returned)."""
    for entry in _catalogue():
        if entry.role == "refine" and entry.source == "bundled" and entry.shipped and (bundled_dir() / entry.file).is_file():
            return entry.name
    return None


def is_cached(entry: ModelEntry) -> bool:
    """Whether ``entry``'s weights are on this machine already (no network needed to load it)."""
    if entry.source == "bundled":
        return (bundled_dir() / entry.file).is_file()
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(entry.repo_id or "", entry.file, revision=entry.revision), str)


def _open_regular(path: Path) -> int:
    """A read descriptor on ``path`` if it is a regular file, else ``WeightsError``.

    Opened non-blocking and checked on the open descriptor, so that a FIFO (which would block ``open`` and
    ``read`` forever), a device such as ``/dev/zero`` (endless bytes to hash) or a folder planted where a
    weights file should be is refused, even when it is swapped in after an earlier check.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except IsADirectoryError:
        raise WeightsError(f"{path}: a folder, not a weights file") from None
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or other special file"
        raise WeightsError(f"{path}: {kind}, not a weights file")
    return fd


def sha256_file(path: Path) -> str:
    """Hex sha256 of a regular file, read in 1 MiB chunks (``WeightsError`` for anything else)."""
    digest = hashlib.sha256()
    with os.fdopen(_open_regular(path), "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _checksum_problem(path: Path, entry: ModelEntry) -> str | None:
    """Why ``path`` is not the file ``entry`` pins (size first, which is free), or None when it is."""
    os.close(_open_regular(path))
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        return f"expected {entry.size:,} bytes, got {size:,}"
    if entry.sha256 is not None:
        actual = sha256_file(path)
        if actual != entry.sha256.lower():
            return f"expected sha256 {entry.sha256[:16]}…, got {actual[:16]}…"
    return None


def _hub_download(entry: ModelEntry, progress: bool) -> Path:
    from huggingface_hub import constants, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    from deblurcli.hub import not_cached_message, unreachable

    url = hf_hub_url(entry.repo_id or "", entry.file, revision=entry.revision)
    if not constants.HF_HUB_OFFLINE and not is_cached(entry) and (why := unreachable(constants.ENDPOINT)):
        # before the client's retries with back-off, which would make an offline run wait 26 s for this line
        raise WeightsError(not_cached_message(entry.name, entry.file, url, f"{constants.ENDPOINT} cannot be reached ({why})"))
    where = f"{entry.file} from {entry.repo_id}@{(entry.revision or '')[:12]}"
    reenable = not progress and not are_progress_bars_disabled()
    if reenable:
        disable_progress_bars()
    # The client logs a warning per retry while the network is down; the user gets our one line instead.
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        return Path(hf_hub_download(entry.repo_id or "", entry.file, revision=entry.revision))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        reason = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"{constants.ENDPOINT} cannot be reached"
        raise WeightsError(not_cached_message(entry.name, entry.file, url, reason)) from None
    except HfHubHTTPError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot download {where}: {first}") from None
    except OSError as exc:
        raise WeightsError(f"cannot download {where}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 -- the HTTP stack's own errors (a dropped connection mid-file, ...)
        text = str(exc).strip()
        raise WeightsError(f"cannot download {where}: {text.splitlines()[0] if text else type(exc).__name__}") from None
    finally:
        hub_logger.setLevel(level)
        if reenable:
            enable_progress_bars()


def resolve_weights(entry: ModelEntry, *, progress: bool = True) -> Path:
    """A verified local path to ``entry``'s weights, downloading a Hub file into the HF cache if needed.

    Raises ``WeightsError`` (one line) when a bundled file is missing, when the Hub cannot be reached and
    the file is not cached, when the cache holds something other than a regular file there, or when the
    file does not match its pinned size/sha256 -- in which case a Hub file is also removed from the cache
    (see :func:`_discard`), so the next attempt downloads it afresh.
    """
    if entry.source == "bundled":
        path = bundled_dir() / entry.file
        if not path.is_file():
            if not entry.shipped:
                raise WeightsError(
                    f"model {entry.name!r} has no trained weights yet (docs/MODEL_CARD.md); train one with "
                    f"'deblur train --arch {entry.name}' and pass --weights"
                )
            raise WeightsError(
                f"bundled weights missing for model {entry.name!r} ({entry.file}); reinstall deblurcli or pass --weights"
            )
        problem = _checksum_problem(path, entry)
        if problem:
            raise WeightsError(f"bundled weights {entry.file} are damaged ({problem}); reinstall deblurcli")
        return path
    path = _hub_download(entry, progress)
    try:
        problem = _checksum_problem(path, entry)
    except WeightsError as exc:  # not a regular file: a folder, FIFO or device planted in the cache
        raise WeightsError(
            f"model {entry.name!r}: the Hugging Face cache entry is unusable ({exc}); {_discard(path, entry)}"
        ) from None
    if problem:
        raise WeightsError(
            f"checksum mismatch for {entry.file} of model {entry.name!r} ({problem}); {_discard(path, entry)}"
        )
    return path


def _discard(path: Path, entry: ModelEntry) -> str:
    """Remove the bad cache entry ``path`` without deleting anything through a link; what was done, as the
    end of the error message.

    A snapshot entry is normally a link to ``../../blobs/<hash>`` (a plain copy where links are
    unavailable). Only the entry itself and a blob directly inside this repository's ``blobs`` folder are
    removed, and ``unlink`` removes a link, never its target: an entry (or a folder above it) that points
    elsewhere -- a tampered or shared cache linking to a user's file -- keeps that file intact.
    """
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    repo_dir = os.path.realpath(Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=entry.repo_id or "", repo_type="model"))
    blobs = os.path.join(repo_dir, "blobs")
    where = os.path.realpath(path.parent)
    if not (where + os.sep).startswith(repo_dir + os.sep):
        return f"{path} is outside the Hugging Face cache ({repo_dir}), so it was left alone: remove it and try again"
    item = Path(where) / path.name  # the entry itself, its folders' links already resolved
    try:
        if item.is_symlink():
            target = Path(os.path.normpath(os.path.join(where, os.readlink(item))))
            item.unlink()
            if os.path.realpath(target.parent) != blobs:
                return f"the cache entry was a link to {target}, outside the cache: the link was removed, {target} left alone; try again"
            target.unlink(missing_ok=True)  # the blob (or, if it is a link itself, only that link)
        elif item.is_dir():
            return f"remove the folder {item} and try again"
        else:
            item.unlink(missing_ok=True)
    except OSError as exc:
        return f"it could not be removed ({exc.strerror or exc}): remove {item} and try again"
    return "the file was deleted from the cache and not used, try again"


def _is_safetensors(path: Path) -> bool:
    """safetensors files start with a little-endian u64 header length followed by a JSON object."""
    with os.fdopen(_open_regular(path), "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= path.stat().st_size


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    import torch

    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        keys = ", ".join(repr(k) for k in list(obj)[:5]) if isinstance(obj, Mapping) else type(obj).__name__
        raise WeightsError(f"{path.name}: no state dict of tensors found (top level: {keys})")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a weights file, without ever running pickled code.

    safetensors files (recognised by content, not name) give their metadata; anything else is read with
    ``torch.load(weights_only=True)``, which refuses pickled objects other than tensors and containers, and
    unwrapped from BasicSR's ``params_ema``/``params`` or Lightning's ``state_dict``.
    """
    import pickle

    import torch

    path = Path(path)
    if not os.path.lexists(path):
        raise WeightsError(f"{path}: no such weights file")
    if _is_safetensors(path):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                metadata = dict(fh.metadata() or {})
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path.name}: not a valid safetensors file ({exc})") from None
        return tensors, metadata
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc)
        why = (
            "it holds Python objects that only a full unpickle could create, which can run code"
            if "Unsupported global" in detail or "weights_only" in detail.lower()
            else "not a PyTorch checkpoint"
        )
        raise WeightsError(f"{path.name}: refused to load ({why}); use safetensors or a plain state dict") from None
    except Exception as exc:  # noqa: BLE001 -- a hostile or broken file can make the parser fail in any way
        # torch's own messages (RuntimeError) say what is wrong in their first sentence; other parser
        # failures on garbage (KeyError: 101, EOFError) say nothing a user could act on beyond their type.
        text = str(exc).strip()
        detail = text.splitlines()[0].split(". ")[0] if isinstance(exc, RuntimeError) and text else type(exc).__name__
        raise WeightsError(
            f"{path.name}: not a readable weights file (neither safetensors nor a PyTorch checkpoint: {detail})"
        ) from None
    return _unwrap(obj, path), {}


def save_generator(model: nn.Module, path: Path, metadata: Mapping[str, Any]) -> None:
    """Write ``model``'s weights as safetensors with ``arch``, JSON ``config`` and ``metadata``, atomically.

    Non-string metadata values are stored as JSON. The file is written through ``atomic.atomic_write_bytes``
    (temporary file in the same folder, fsync, rename), so a crash never leaves a truncated file at ``path``.
    """
    from safetensors.torch import save

    from deblurcli.models.registry import arch_of
    from deblurcli.atomic import atomic_write_bytes

    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    meta.update({"format": "deblurcli", "arch": arch_of(model), "config": json.dumps(model.config)})
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(tensors, metadata=meta))


def _load_spandrel(state: dict[str, torch.Tensor], path: Path, sample: str) -> SpandrelGenerator:
    """Let spandrel recognise an architecture deblurcli does not know (Restormer, FFTformer, Uformer, ...)."""
    from deblurcli.models.registry import GENERATORS
    from deblurcli.models.spandrel import SpandrelGenerator

    ours = ", ".join(GENERATORS)
    try:
        import spandrel
    except ImportError:
        raise WeightsError(
            f"{path.name}: unrecognised architecture (found keys such as {sample}); deblurcli knows {ours}, "
            "and 'pip install deblurcli[spandrel]' adds Restormer, FFTformer, Uformer and more"
        ) from None
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(spandrel.canonicalize_state_dict(state))
    except spandrel.UnsupportedModelError:
        raise WeightsError(
            f"{path.name}: unrecognised architecture: neither deblurcli ({ours}) nor spandrel know it "
            f"(found keys such as {sample})"
        ) from None
    except (RuntimeError, KeyError, ValueError, AssertionError) as exc:
        raise WeightsError(f"{path.name}: spandrel could not load it ({exc})") from None
    if (
        not isinstance(descriptor, spandrel.ImageModelDescriptor)
        or descriptor.scale != 1
        or (
            descriptor.input_channels,
            descriptor.output_channels,
        )
        != (3, 3)
    ):
        raise WeightsError(
            f"{path.name}: a {descriptor.architecture.name} {descriptor.purpose} model at scale "
            f"{descriptor.scale}; deblur needs an RGB restoration model at scale 1"
        )
    return SpandrelGenerator(descriptor).eval()


def _with_metadata(arch: str, config: dict[str, Any], metadata: Mapping[str, str], path: Path) -> dict[str, Any]:
    """``config`` (read off the tensors) completed with what only our metadata knows (the spec's
    ``not_in_weights``: DGF dilations, NAFNet's local pool, ...)."""
    from deblurcli.models.registry import spec_for

    if "arch" not in metadata:
        return config
    if metadata["arch"] != arch:
        raise WeightsError(f"{path.name}: its metadata says {metadata['arch']} but its tensors are {arch}")
    try:
        recorded = json.loads(metadata.get("config", "{}"))
    except (ValueError, RecursionError):  # RecursionError: a forged config nested thousands deep
        recorded = None
    if not isinstance(recorded, dict):
        raise WeightsError(f"{path.name}: the config in its metadata is not a JSON object")
    return {**config, **{k: v for k, v in recorded.items() if k in spec_for(arch).not_in_weights}}


def load_generator(name: str | None = None, weights: Path | None = None) -> nn.Module:
    """A ready-to-run generator (eval mode, inference settings applied) from a catalogue name or a file.

    * ``name`` only (or nothing: the default model): the catalogue entry's weights, resolved and verified.
    * ``weights`` only: any file of a registered generator architecture, recognised from its keys and
      shapes (our own files add, from their metadata, the settings that shapes cannot tell, such as DGF
      dilations); other architectures through the optional ``spandrel`` extra.
    * both: the file must hold the named model's architecture (``expected X, found Y`` otherwise), and the
      entry's inference settings apply.

    Settings still unset after that take the architecture's ``inference_defaults``: NAFNet weights without
    a recorded ``local_pool`` (published checkpoints, trained with global pooling) run with TLC's 384-px
    local pool; our own run with the pool their metadata records.
    """
    from deblurcli.models.registry import GENERATORS, build, detect, spec_for

    entry = None if name is None and weights is not None else get_entry(name or default_model_name())
    path = Path(weights) if weights is not None else resolve_weights(entry)  # type: ignore[arg-type]
    state, metadata = read_state_dict(path)
    try:
        arch, config = detect(state)
    except WeightsError:
        sample = ", ".join(repr(k) for k in list(state)[:3])
        if entry is None:
            return _load_spandrel(state, path, sample)
        raise WeightsError(
            f"{path.name}: expected {entry.arch} weights for model {entry.name!r}, found an unrecognised "
            f"architecture (keys such as {sample})"
        ) from None
    if entry is not None and arch != entry.arch:
        raise WeightsError(f"{path.name}: expected {entry.arch} weights for model {entry.name!r}, found {arch}")
    spec = spec_for(arch)
    if not spec.generator:
        raise WeightsError(f"{path.name}: expected a generator ({', '.join(GENERATORS)}), found {arch}")
    config = _with_metadata(arch, config, metadata, path)
    config.update({k: v for k, v in spec.inference_defaults.items() if config.get(k) is None})
    if entry is not None:
        config.update(entry.for_inference)
    _check_fit(arch, config, state, path)
    model = build(arch, config)
    model.load_state_dict(state)
    return model.eval()


def _check_fit(arch: str, config: dict[str, Any], state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Refuse ``config`` unless it is plausible and the model it describes is exactly ``state``'s tensors.

    Both checks run before any real allocation: the architecture's caps first (a forged file can name
    20,000 blocks with a few kilobytes of keys), then a model built on the ``meta`` device (shapes, no
    memory), whose every tensor must be in the file with the same shape. A model that passes takes no more
    memory than the file's own tensors, which are already loaded (an ``intro.weight`` 4096 wide asked
    for tens of GB before).
    """
    import torch

    from deblurcli.models.registry import build, spec_for

    try:
        problem = spec_for(arch).implausible(config)
    except (KeyError, TypeError, ValueError) as exc:
        problem = f"unreadable configuration ({exc})"
    if problem is not None:
        raise WeightsError(f"{path.name}: not a plausible {arch} ({problem}); refused before building it")
    with torch.device("meta"):
        expected = build(arch, config).state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or reshaped:
        first = (reshaped or missing or unexpected)[0]
        raise WeightsError(
            f"{path.name}: weights do not fit {arch} {json.dumps(config)}: {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(reshaped)} of another shape (first: {first!r})"
        )
