"""Tiled inference: any photo size through a fixed-size network, with no visible seams.

The whole photo stays in host memory as ``H x W x 3`` float32; only batches of tiles visit the device.
The plan, in the photo's coordinates:

* The photo is treated as if reflect-padded by the model's ``tile_margin`` on all four sides, and further at
  the bottom/right to the model's ``size_multiple`` (the same padding a whole-image run gets), but the
  padding is never materialised: tile pixels are gathered with reflected index arithmetic, so a
  24-megapixel photo is not copied just to pad it. The border padding is there because a network's zero
  padding makes the photo's edge look like a dark frame: on a sharp photo whose bottom rows are a thin grey
  strip, the bundled model darkened the strip (39.2 dB from its input, 40.9 dB with the reflection), while
  on blurry photos the reflection changed PSNR by -0.05 to +0.15 dB (15 LIVE1 photos, measured).
* Tiles are ``tile`` pixels square (clipped to the photo), start on multiples of ``size_multiple`` (so a
  U-Net's down-sampling grid lines up with the whole-image run) and overlap by at least
  ``2 * tile_margin + overlap``.
* Each tile's outer ``tile_margin`` pixels on an *inner* edge get zero weight (the receptive field reaches
  outside the tile there), the next ``overlap`` pixels rise with a raised-cosine window, and edges on the
  photo border keep full weight (the whole-image run sees the same border). The merge is a weighted sum
  with a weight-sum accumulator (``index_add_``), so any overlap pattern, including the last tile that is
  shifted back to end on the border, normalises exactly. A network whose receptive field fits in the
  margin therefore reproduces the whole-image output, and anything else is cross-faded smoothly.

Failures are handled where they happen: a device out-of-memory error halves the batch, then the tile,
down to a floor, then raises :class:`~deblurcli.errors.DeblurError`; NaN/inf from fp16/bf16 reruns in fp32,
and so does a reduced precision whose output on a probe crop is not within ``MIN_REDUCED_PSNR`` dB of fp32.

Speed (figures in docs/performance.md): on CPU and CUDA the model and the tiles run channels_last (NHWC),
which is how the tiles are gathered anyway (no transposing copy) and what oneDNN/cuDNN's fastest kernels
use; on CUDA, tiles are copied from pinned host memory without blocking. ``compile=True`` runs the model
through ``torch.compile`` (compiled once per model and input shape, then reused).
"""

from __future__ import annotations

import copy
import logging
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from deblurcli.devices import is_oom
from deblurcli.errors import DeblurError, OptionError
from deblurcli.tiling import TilePlan, min_tile, model_geometry, round_up

log = logging.getLogger(__name__)

#: A reduced precision must reproduce fp32 on a probe crop at least this well (PSNR, dB, range 1), or the
#: run falls back to fp32: well above what anyone can see, well below what bf16 gives a healthy NAFNet (~58 dB).
MIN_REDUCED_PSNR = 45.0
#: Side of the probe crop for that check (a sixteenth of a 1024 px CPU tile: about 1% of a 12 MP run).
PROBE_SIDE = 256

ProgressFn = Callable[[int, int], None]
#: Another runtime for the network (:mod:`deblurcli.backends`): given a batch of NCHW tiles (NHWC in memory),
#: the network's output, or None when it cannot run faithfully; the engine then runs torch from there on.
Backend = Callable[[torch.Tensor], "torch.Tensor | None"]

#: The last ``torch.compile`` wrapper and the model it wraps: a folder run reuses one model for every photo,
#: and keeping only one bounds what the cache holds on to.
_COMPILED: list[tuple[nn.Module, nn.Module]] = []
#: bf16 copies of models (see ``_Runner.cast_fails``), made once per model and weights: a copy costs 46 ms for
#: nafnet-s and 0.25 s for a 68 M-parameter model, per photo if it were made per call. Keyed weakly by the
#: model, with its parameters' in-place versions, so training's validation (the same module, new weights) is
#: never run with stale ones.
_BF16_COPIES: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], nn.Module]] = weakref.WeakKeyDictionary()


def _release_cached(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def _axis_plan(length: int, tile: int, stride: int, margin: int, overlap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tile starts along one axis and each tile's 1-D blending window (``n x tile``).

    ``length`` and ``tile`` are multiples of the size multiple and ``stride`` too, so every start is.
    """
    n = 1 if tile >= length else -(-(length - tile) // stride) + 1
    starts = torch.arange(n, dtype=torch.int64) * stride
    starts[-1] = length - tile
    pos = torch.arange(tile, dtype=torch.float64)
    if overlap > 0:
        ramp = 0.5 - 0.5 * torch.cos(math.pi * ((pos - margin + 0.5) / overlap).clamp(0.0, 1.0))
    else:
        ramp = (pos >= margin).to(torch.float64)
    index = torch.arange(n)[:, None]
    rise = torch.where(index > 0, ramp[None, :], torch.ones(1, dtype=torch.float64))
    fall = torch.where(index < n - 1, ramp.flip(0)[None, :], torch.ones(1, dtype=torch.float64))
    return starts, (rise * fall).to(torch.float32)


def _balanced_side(length: int, tile: int, seam: int, multiple: int, floor: int) -> int:
    """The tile side along one axis: as many tiles as ``tile`` needs, but each only as long as covering needs.

    With a fixed side the last tile is shifted back to end on the border and mostly repeats its neighbour:
    a 4000 x 3008 photo in 1024 px tiles ran 1.75x its pixels through the model. Shrinking the tiles to share
    the length evenly (``n`` tiles overlapping by ``seam``) cuts that to 1.22x (and 1.53x -> 1.48x at 512 px).
    """
    if tile >= length:
        return length
    stride = (tile - seam) // multiple * multiple
    n = -(-(length - tile) // stride) + 1
    return min(tile, max(floor, round_up(-(-(length + (n - 1) * seam) // n), multiple)))


def _reflected_window(image: torch.Tensor, y0: int, height: int, x0: int, width: int) -> torch.Tensor:
    """The ``height x width`` window at ``(y0, x0)`` of the ``H x W x C`` photo reflect-padded without limit:
    a slice where it lies inside, else two 1-D gathers from the part of the photo it reflects.

    Tiles are read this way, not by 2-D advanced indexing of the padded coordinates, and written back by
    slices: on a 12 MP photo the engine's own work (gathering, weighting, accumulating 1024 px tiles) took
    1.6-1.8 s on two cores with 2-D int64 gathers, boolean masks and ``index_add_``, 0.6-0.7 s this way.
    """
    h, w = image.shape[:2]
    rows, cols = _reflect(torch.arange(y0, y0 + height), h), _reflect(torch.arange(x0, x0 + width), w)
    r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    window = image[r0:r1, c0:c1]
    if not 0 <= y0 <= h - height:  # reaches out of the photo: reflected rows
        window = window.index_select(0, rows - r0)
    if not 0 <= x0 <= w - width:
        window = window.index_select(1, cols - c0)
    return window.contiguous()


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Map coordinates outside ``[0, size)`` back into the photo by reflection (-1 -> 1, size -> size - 2),
    as ``F.pad(mode="reflect")`` does; clamped (replicated) where the photo is too small to reflect."""
    index = index.abs()
    return torch.where(index < size, index, 2 * (size - 1) - index).clamp(0, size - 1)


def uses_channels_last(model: nn.Module, device: torch.device) -> bool:
    """Whether ``model`` should run NHWC on ``device``: convolutional models on CPU (oneDNN) and CUDA (cuDNN).

    MPS gains nothing from it on the networks measured, and a model without 4-D weights has no layout.
    """
    return device.type in ("cpu", "cuda") and any(p.dim() == 4 for p in model.parameters())


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` ready for many :func:`deblur_array` calls: on ``device``, in eval mode, and NHWC where that
    is faster. Done once per run (by the Session), not per photo: converting the weights' layout is a copy."""
    model.to(device).eval()
    if uses_channels_last(model, device):
        model.to(memory_format=torch.channels_last)
    return model


def input_format(model: nn.Module) -> torch.memory_format:
    """Feed tiles in the layout of the model's convolution weights, so no layer has to transpose them."""
    weight = next((p for p in model.parameters() if p.dim() == 4), None)
    if weight is not None and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tiles to ``device``; to CUDA through pinned memory, so the copy does not stall the host thread."""
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB, range 1) of ``a`` against ``b``, both clamped to [0, 1]: how reduced precision is judged."""
    mse = float((a.clamp(0, 1) - b.clamp(0, 1)).double().square().mean())
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def bf16_copy(model: nn.Module) -> nn.Module:
    """``model`` with its weights in bf16, built once and reused while the model's weights stay the same."""
    version = tuple(p._version for p in model.parameters())
    cached = _BF16_COPIES.get(model)
    if cached is None or cached[0] != version:
        cached = (version, copy.deepcopy(model).to(torch.bfloat16))
        _BF16_COPIES[model] = cached
    return cached[1]


def compiled(model: nn.Module) -> nn.Module:
    """``torch.compile(model)``, built once per model and reused (compiling costs seconds to minutes)."""
    if not _COMPILED or _COMPILED[0][0] is not model:
        _COMPILED[:] = [(model, torch.compile(model, dynamic=False))]
    return _COMPILED[0][1]


@dataclass
class _Runner:
    """Runs batches on the device, with the reduced-precision checks remembered across batches.

    Before the first reduced-precision batch, a probe crop of it runs in both precisions; if they differ by
    more than ``MIN_REDUCED_PSNR`` allows (weights with large activations, a CPU whose bf16 path rounds
    badly), the whole run continues in fp32. NaN/inf later in the run also falls back to fp32. A ``backend``
    runs the batches instead, checking its own precision, until it says it cannot (returns None).
    """

    model: nn.Module
    device: torch.device
    precision: torch.dtype
    memory_format: torch.memory_format = torch.contiguous_format
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None
    backend: Backend | None = None
    checked: bool = field(default=False)
    #: bf16 on the CPU runs a bf16 copy of a model that declares ``weights_dtype_safe`` (it takes fp32 in and
    #: keeps its global residual in fp32, as NAFNet does; :func:`bf16_copy`) instead of autocast, which casts
    #: weights and activations at every op: a 1000² nafnet-s tile ran 1.17-1.30x faster. If the copy raises,
    #: autocast runs the rest of the call.
    cast_fails: bool = field(default=False)

    def __post_init__(self) -> None:
        if self.forward is None:
            self.forward = self.model

    def _reduced(self, x: torch.Tensor) -> torch.Tensor:
        assert self.forward is not None
        if self._casts():
            try:
                return bf16_copy(self.model)(x).float()
            except RuntimeError as exc:  # e.g. a layer the architecture added without casting its input
                if is_oom(exc):
                    raise
                log.debug("the model does not run in %s alone (%s); using autocast", self.precision, exc)
                self.cast_fails = True
        with torch.autocast(device_type=self.device.type, dtype=self.precision):
            return self.forward(x).float()

    def _casts(self) -> bool:
        """Whether reduced precision runs as a model cast to bf16: on the CPU, an architecture that allows it,
        not compiled, not failed."""
        return (self.device.type == "cpu" and self.precision == torch.bfloat16 and self.forward is self.model
                and getattr(self.model, "weights_dtype_safe", False) and not self.cast_fails)

    def _precision_holds(self, x: torch.Tensor) -> bool:
        probe = x[:1, :, :PROBE_SIDE, :PROBE_SIDE]
        assert self.forward is not None
        low = self._reduced(probe)
        name = str(self.precision).replace("torch.", "")
        if not bool(torch.isfinite(low).all()):
            log.warning("%s produced NaN/inf values; rerunning in fp32", name)
            return False
        db = psnr(low, self.forward(probe).float())
        if db >= MIN_REDUCED_PSNR:
            log.debug("%s matches fp32 at %.1f dB on a probe crop", self.precision, db)
            return True
        log.warning("%s output is only %.1f dB from fp32 (need %.0f); running in fp32", name, db, MIN_REDUCED_PSNR)
        return False

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if self.backend is not None:
            out = self.backend(batch)
            if out is not None:
                return out
            self.backend = None
        x = _to_device(batch, self.device).contiguous(memory_format=self.memory_format)
        assert self.forward is not None
        if self.precision != torch.float32 and not self.checked:
            self.checked = True
            if not self._precision_holds(x):
                self.precision = torch.float32
        if self.precision != torch.float32:
            out = self._reduced(x)
            if bool(torch.isfinite(out).all()):
                return out.cpu()
            log.warning("%s produced NaN/inf values; rerunning in fp32", str(self.precision).replace("torch.", ""))
            self.precision = torch.float32
        out = self.forward(x).float()
        if not bool(torch.isfinite(out).all()):
            raise DeblurError("the model produced NaN/inf values even in fp32: the weights are probably broken")
        return out.cpu()


def _run_whole(run: _Runner, image: torch.Tensor, multiple: int, pad: int, progress: ProgressFn | None) -> np.ndarray:
    h, w, _ = image.shape
    if progress:
        progress(0, 1)
    window = _reflected_window(image, -pad, round_up(h + 2 * pad, multiple), -pad, round_up(w + 2 * pad, multiple))
    batch = window.permute(2, 0, 1).unsqueeze(0)  # NHWC in memory
    out = run(batch)[0, :, pad : pad + h, pad : pad + w].permute(1, 2, 0).contiguous()
    if progress:
        progress(1, 1)
    return out.clamp_(0.0, 1.0).numpy()


def _run_tiled(
    run: _Runner,
    image: torch.Tensor,
    *,
    tile: int,
    batch_size: int,
    multiple: int,
    margin: int,
    overlap: int,
    floor: int,
    progress: ProgressFn | None,
) -> np.ndarray:
    h, w, _ = image.shape
    pad = margin  # reflected border, as in _run_whole; tile coordinates below are in the padded frame
    hp, wp = round_up(h + 2 * pad, multiple), round_up(w + 2 * pad, multiple)
    seam = 2 * margin + overlap
    th, tw = (_balanced_side(length, tile, seam, multiple, floor) for length in (hp, wp))
    starts_y, win_y = _axis_plan(hp, th, (th - seam) // multiple * multiple, margin, overlap)
    starts_x, win_x = _axis_plan(wp, tw, (tw - seam) // multiple * multiple, margin, overlap)
    iy, ix = torch.meshgrid(torch.arange(len(starts_y)), torch.arange(len(starts_x)), indexing="ij")
    iy, ix = iy.reshape(-1), ix.reshape(-1)
    total = len(iy)
    acc = torch.zeros(h, w, 3)
    weight_sum = torch.zeros(h, w, 1)
    if progress:
        progress(0, total)
    for first in range(0, total, batch_size):
        corners = [(int(starts_y[i]) - pad, int(starts_x[j]) - pad, int(i), int(j))  # photo coordinates
                   for i, j in zip(iy[first : first + batch_size], ix[first : first + batch_size])]
        tiles = torch.stack([_reflected_window(image, y0, th, x0, tw) for y0, x0, _, _ in corners])
        out = run(tiles.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # B x th x tw x 3 (tiles are NHWC in memory)
        for tile, (y0, x0, i, j) in zip(out, corners):
            # Only the part inside the photo is accumulated (a tile may reach into the reflected border).
            r0, r1, c0, c1 = max(0, y0), min(h, y0 + th), max(0, x0), min(w, x0 + tw)
            wts = (win_y[i, r0 - y0 : r1 - y0, None] * win_x[j, None, c0 - x0 : c1 - x0])[..., None]
            acc[r0:r1, c0:c1].addcmul_(tile[r0 - y0 : r1 - y0, c0 - x0 : c1 - x0], wts)
            weight_sum[r0:r1, c0:c1].add_(wts)
        if progress:
            progress(min(first + batch_size, total), total)
    acc /= weight_sum
    return acc.clamp_(0.0, 1.0).view(h, w, 3).numpy()


def deblur_array(
    model: nn.Module,
    rgb: np.ndarray,
    *,
    device: torch.device | str,
    plan: TilePlan,
    precision: torch.dtype = torch.float32,
    progress: ProgressFn | None = None,
    compile: bool = False,
    backend: Backend | None = None,
) -> np.ndarray:
    """Run ``model`` over an ``H x W x 3`` float32 photo in [0, 1] and return the result, same shape.

    ``plan`` (from :func:`deblurcli.tiling.plan_tiles`) says the tile size (0: the whole image at once), the
    tiles per device batch and the cross-fade width beyond the model's ``tile_margin``; the engine follows it
    and only departs from it to recover from an out-of-memory error (halving the batch, then the tile).
    ``progress(done, total)`` is called after each batch (``total`` restarts if an OOM forces a smaller
    tile). The model must already be on ``device`` in eval mode (:func:`prepare_model`); tiles are fed in
    its weights' memory layout. ``compile`` runs it through ``torch.compile`` (pays only on long runs: the
    first call per tile shape compiles). ``backend`` (CPU only) runs the batches in another runtime, with
    torch (at ``precision``) taking over if it gives up; the tiling, and so tiled = whole, is the same.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DeblurError(f"expected an H x W x 3 RGB array, got shape {tuple(rgb.shape)}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise DeblurError("the image is empty (zero width or height)")
    device = torch.device(device)
    multiple, margin = model_geometry(model)
    array = np.ascontiguousarray(rgb, dtype=np.float32)
    # torch.from_numpy shares memory (no copy of a big photo) but warns on read-only arrays; only those are copied.
    image = torch.from_numpy(array if array.flags.writeable else array.copy())
    h, w, _ = image.shape
    whole_side = max(round_up(h + 2 * margin, multiple), round_up(w + 2 * margin, multiple))
    floor = min_tile(model, plan.overlap)
    tile = whole_side if plan.tile == 0 else max(floor, plan.tile // multiple * multiple)
    batch_size = max(1, plan.batch_size)
    run = _Runner(model, device, precision, memory_format=input_format(model), forward=compiled(model) if compile else model, backend=backend)
    while True:
        try:
            with torch.inference_mode():
                if tile >= whole_side:
                    return _run_whole(run, image, multiple, margin, progress)
                return _run_tiled(
                    run, image, tile=tile, batch_size=batch_size, multiple=multiple, margin=margin,
                    overlap=plan.overlap, floor=floor, progress=progress,
                )
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            if not is_oom(exc):
                raise
            # Leave the except block before retrying so the traceback's frames (and their tensors) die.
        _release_cached(device)
        if batch_size > 1:
            batch_size //= 2
            log.warning("out of memory on %s; retrying with %d tiles per batch", device, batch_size)
            continue
        if tile <= floor:
            raise DeblurError(
                f"out of memory on {device} even with {floor} px tiles: close other programs, "
                "or use another device (--device cpu)"
            )
        tile = max(floor, min(tile, whole_side) // 2 // multiple * multiple)
        log.warning("out of memory on %s; retrying with %d px tiles", device, tile)


def check_strength(strength: float) -> None:
    """Raise OptionError unless ``0 <= strength <= 1`` (checked before a long run, not after it)."""
    if not 0.0 <= strength <= 1.0:
        raise OptionError(f"strength must be between 0 and 1, got {strength}", "--strength")


def apply_strength(original: np.ndarray, restored: np.ndarray, strength: float) -> np.ndarray:
    """Blend ``original + strength * (restored - original)`` (``--strength``): 1 is the full result.

    Works in place on ``restored`` (and returns it) so a large photo is not copied a third time.
    """
    check_strength(strength)
    if strength == 1.0:
        return restored
    restored -= original
    restored *= np.float32(strength)
    restored += original
    return restored
