"""The network on CPU through OpenVINO: the optional ``openvino`` extra (``pip install 'deblurcli[openvino]'``).

Torch stays the reference: this backend runs the same weights, checks itself against torch fp32 and hands
the run back to torch when it cannot keep up with it. Why it exists: on an AVX512-BF16 CPU, one 1024² tile
of nafnet-s ran 1.64x faster in OpenVINO bf16 than in torch's bf16 autocast (1.71x with 2 streams of one
thread), and a 12 MP photo through the tiling engine 1.57x (docs/performance.md).

What happens, and when:

* Export, once per weights and OpenVINO version: the model's export form (:mod:`deblurcli.backends.export`)
  is traced at a small size and converted with free height and width, then saved as OpenVINO IR in the user
  cache folder (``~/.cache/deblurcli/openvino`` on Linux), named by the sha256 of the weights. The export
  costs seconds; later runs read the file.
* Compile, once per tile shape in a run: the IR is fixed to ``1 x 3 x H x W``, NHWC at both ends (the engine
  gathers tiles NHWC, so nothing is transposed in Python), and compiled in bf16 where the CPU has it
  (else f32). OpenVINO's own model cache (``CACHE_DIR``, beside the IR) keeps each compiled blob, keyed by
  the model, shape, precision and OpenVINO version, so a second run loads it instead of compiling.
* Check, at the first batch of each shape: the first tile also runs in torch fp32, and below
  ``MIN_REDUCED_PSNR`` dB of it (or on NaN/inf, or any OpenVINO error) the backend logs why and gives up
  for the rest of the session; the engine then runs torch as it would have. A pass is remembered in the
  cache (per export, precision, shape and CPU model), so later runs skip the torch tile; NaN/inf and
  OpenVINO errors are still caught on every batch.
* Run: each tile of a batch is one infer request, two in flight (two CPU streams), so the tiles of a batch
  overlap; the Session gives this backend batches of at least two tiles.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from deblurcli.backends.export import export_form, structure

log = logging.getLogger(__name__)

#: Infer requests in flight: two CPU streams of half the threads each beat one stream of all of them
#: (1.71x vs 1.64x torch bf16 on a 1024² tile, 2 threads) because a stream's serial parts overlap the other's.
STREAMS = 2
#: Side of the input the export is traced at (rounded up to the model's size multiple): the traced graph
#: has free height and width, so the size only has to be small (a trace runs one eager forward pass).
TRACE_SIDE = 64


def import_openvino() -> ModuleType:
    """The ``openvino`` module, or a one-line :class:`~deblurcli.errors.MissingExtraError` naming the extra."""
    from deblurcli.extras import require

    return require("openvino", "openvino")


def installed() -> bool:
    """Whether OpenVINO imports (``--backend auto`` uses it only then)."""
    from deblurcli.errors import MissingExtraError

    try:
        import_openvino()
    except MissingExtraError:
        return False
    return True


def cache_dir() -> Path:
    """Where exported models and compiled blobs are kept: the platform's user cache folder (``XDG_CACHE_HOME``
    on Linux), as they can be rebuilt at any time."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("deblurcli", appauthor=False)) / "openvino"


def weights_digest(model: nn.Module) -> str:
    """sha256 of ``model``'s configuration, pooling structure and parameter values: names the exported file,
    so new weights (a catalogue update, a user's file, an API module) or a changed pool never run an old
    export, whatever file they came from."""
    digest = hashlib.sha256(type(model).__name__.encode())
    digest.update(json.dumps(getattr(model, "config", {}), sort_keys=True, default=str).encode())
    digest.update(json.dumps(structure(model)).encode())
    for name, tensor in model.state_dict().items():
        data = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(data.shape)}".encode())
        digest.update(data.numpy().tobytes())
    return digest.hexdigest()


class OpenVINONetwork:
    """One network (the generator or the refiner) run by OpenVINO, callable as the engine's backend.

    ``model`` is the torch module (kept as the fp32 reference of the check), ``precision`` the session's
    (bf16 compiles in bf16 where the CPU has it, anything else in f32), ``threads`` the CPU threads to use.
    """

    name = "openvino"

    def __init__(self, model: nn.Module, precision: torch.dtype, threads: int) -> None:
        self._ov = import_openvino()
        self.model = model
        self.core = self._ov.Core()
        bf16 = "BF16" in self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        self.precision = "bf16" if precision == torch.bfloat16 and bf16 else "f32"
        self.threads = max(1, threads)
        self.streams = min(STREAMS, self.threads)
        self.multiple = max(1, int(getattr(model, "size_multiple", 1)))
        self.digest = weights_digest(model)
        self.failed = False
        self._ir: Any = None  # the exported model with free H and W, read or made at the first batch
        self._queues: dict[tuple[int, int], Any] = {}

    def describe(self) -> str:
        """For ``-v``: the backend, its version and precision."""
        version = self._ov.get_version().split("-")[0]
        return f"openvino {version} ({self.precision}, {self.streams} stream{'s' * (self.streams > 1)})"

    # ----------------------------------------------------------------------------------------- set-up

    def _exported(self) -> Any:
        """The exported model (free H and W): from the cache, else traced, converted and saved there."""
        version = self._ov.get_version().split("-")[0]
        folder = cache_dir() / version
        path = folder / f"{self.digest[:32]}.xml"
        if path.is_file() and path.with_suffix(".bin").is_file():
            try:
                return self.core.read_model(path)
            except RuntimeError as exc:
                log.debug("cannot read %s (%s); exporting again", path, exc)
        side = -(-TRACE_SIDE // self.multiple) * self.multiple
        twin = export_form(self.model)  # type: ignore[arg-type]
        with torch.no_grad(), warnings.catch_warnings():
            # The trace warns about the shape tests in NAFNet.forward: the engine feeds multiples of the size
            # multiple only (checked in __call__), for which they are all false, as they were when traced.
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(twin, torch.zeros(1, 3, side, side), check_trace=False)
        exported = self._ov.convert_model(traced, input=[self._ov.PartialShape([1, 3, -1, -1])])
        try:
            folder.mkdir(parents=True, exist_ok=True)
            temp = folder / f".{path.stem}.{os.getpid()}.xml"
            self._ov.save_model(exported, temp, compress_to_fp16=False)
            # The .xml last: whoever finds it finds its weights too (a rival export writes the same bytes).
            os.replace(temp.with_suffix(".bin"), path.with_suffix(".bin"))
            os.replace(temp, path)
        except (OSError, RuntimeError) as exc:
            log.warning("cannot keep the OpenVINO export in %s (%s): the next run exports again", folder, exc)
        return exported

    def _compile(self, h: int, w: int) -> Any:
        """An infer queue for ``1 x 3 x h x w`` tiles, NHWC in and out, compiled (or loaded) once per shape."""
        ov = self._ov
        if self._ir is None:
            self._ir = self._exported()
        model = self._ir.clone()
        model.reshape({0: [1, 3, h, w]})
        ppp = ov.preprocess.PrePostProcessor(model)
        ppp.input().tensor().set_layout(ov.Layout("NHWC")).set_shape([1, h, w, 3])
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        ppp.output().model().set_layout(ov.Layout("NCHW"))
        ppp.output().tensor().set_layout(ov.Layout("NHWC"))
        config = {
            "INFERENCE_PRECISION_HINT": self.precision,
            "NUM_STREAMS": str(self.streams),
            "INFERENCE_NUM_THREADS": str(self.threads),
            "CACHE_DIR": str(cache_dir() / ov.get_version().split("-")[0] / "compiled"),
        }
        compiled = self.core.compile_model(ppp.build(), "CPU", config)
        queue = ov.AsyncInferQueue(compiled, self.streams)
        queue.set_callback(_store)
        return queue

    def _matches(self, tile: torch.Tensor, out: torch.Tensor) -> bool:
        """Whether OpenVINO's output for one tile (NHWC) is within ``MIN_REDUCED_PSNR`` of torch fp32."""
        from deblurcli.engine import MIN_REDUCED_PSNR, input_format, psnr

        reference = self.model(tile.contiguous(memory_format=input_format(self.model))).float().permute(0, 2, 3, 1)
        db = psnr(out, reference)
        if db >= MIN_REDUCED_PSNR:
            log.debug("openvino %s matches torch fp32 at %.1f dB on a %dx%d tile", self.precision, db, *tile.shape[2:])
            return True
        log.warning("openvino %s output is only %.1f dB from torch fp32 (need %.0f); running torch", self.precision, db, MIN_REDUCED_PSNR)
        return False

    # ------------------------------------------------------------------------------------------ per batch

    def __call__(self, batch: torch.Tensor) -> torch.Tensor | None:
        """The network's output for a batch of NCHW tiles (NHWC in memory, as the engine gathers them), or
        None when OpenVINO cannot run it faithfully: then this backend is done and the caller runs torch."""
        if self.failed:
            return None
        b, _, h, w = batch.shape
        if h % self.multiple or w % self.multiple:  # the export assumes the engine's padded tiles
            return self._give_up(f"a {h}x{w} input is not a multiple of {self.multiple}")
        tiles = batch.permute(0, 2, 3, 1).contiguous().numpy()  # a view: the engine's tiles are NHWC already
        out = np.empty((b, h, w, 3), np.float32)
        first = (h, w) not in self._queues
        try:
            if first:
                self._queues[(h, w)] = self._compile(h, w)
            queue = self._queues[(h, w)]
            for i in range(b):
                queue.start_async({0: tiles[i : i + 1]}, (out, i), share_inputs=True)
            queue.wait_all()
        except RuntimeError as exc:
            return self._give_up(f"OpenVINO failed ({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})")
        result = torch.from_numpy(out)
        if not bool(torch.isfinite(result).all()):
            return self._give_up(f"openvino {self.precision} produced NaN/inf values")
        if first and not self._passed(h, w):
            if not self._matches(batch[:1], result[:1]):
                self.failed = True
                return None
            self._record_pass(h, w)
        return result.permute(0, 3, 1, 2)

    def _pass_marker(self, h: int, w: int) -> Path:
        """The file that says this export passed the check at this shape and precision on this CPU model (the
        compiled code, and so the result, depends on all four)."""
        cpu = self.core.get_property("CPU", "FULL_DEVICE_NAME")
        key = hashlib.sha256(f"{self.digest}|{self.precision}|{h}x{w}|{cpu}".encode()).hexdigest()[:32]
        return cache_dir() / self._ov.get_version().split("-")[0] / "checked" / key

    def _passed(self, h: int, w: int) -> bool:
        return self._pass_marker(h, w).is_file()

    def _record_pass(self, h: int, w: int) -> None:
        """Remember a passed check, so later runs skip its torch fp32 tile (about a tenth of the first
        photo's OpenVINO time at 12 MP); a cache that cannot be written only means checking again."""
        marker = self._pass_marker(h, w)
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError as exc:
            log.debug("cannot record the passed check in %s (%s)", marker, exc)

    def _give_up(self, why: str) -> None:
        log.warning("%s; running torch for the rest of the session", why)
        self.failed = True
        return None


def _store(request: Any, userdata: tuple[np.ndarray, int]) -> None:
    """Infer-queue callback: copy a finished tile into its slot of the batch's output."""
    out, i = userdata
    out[i] = request.get_output_tensor(0).data[0]


def unsupported(model: nn.Module, device: torch.device, precision: torch.dtype, compile: bool) -> str | None:
    """Why OpenVINO cannot run ``model`` here (one phrase), or None when it can (whether installed or not)."""
    from deblurcli.backends.export import exportable

    if device.type != "cpu":
        return f"runs on the CPU only, not {device}"
    if not exportable(model):
        return f"exports NAFNet models only, not {type(model).__name__}"
    if precision not in (torch.float32, torch.bfloat16):
        from deblurcli.devices import PRECISIONS

        spelling = next((name for name, dtype in PRECISIONS.items() if dtype == precision), str(precision))
        return f"runs fp32 or bf16, not {spelling}"
    if compile:
        return "replaces torch.compile: leave out --compile"
    return None
