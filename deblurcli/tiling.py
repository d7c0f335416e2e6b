"""The tile plan: how big the tiles are and how many go to the device at once, decided once per run.

The engine (:mod:`deblurcli.engine`) only executes a :class:`TilePlan`; everything that *chooses* one lives
here, so a run plans once (the auto plan costs a probe forward pass) and every photo of the run reuses it.
A plan is checked against the model's geometry when it is made, so a tile too small for the model's
discarded margins is a one-line error before any photo is read, not a failure on the first photo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from deblurcli.devices import free_memory_bytes, is_oom
from deblurcli.errors import OptionError

#: Largest auto tile per device type. On CPU, 1024 px balanced tiles run a 12 MP photo 1.22x its pixels
#: against 1.48x at 512 px, and with the host allocator kept warm (``devices.keep_host_memory``) their
#: per-pixel speed holds (3 MP, 2 threads, bf16: 1.79 MP/s at 1024 px, 1.41 at 512; docs/performance.md).
#: Without that, big tiles page-fault every layer output anew and 512 px was faster. GPUs like big batched tiles.
MAX_AUTO_TILE = {"cpu": 1024, "mps": 1024, "cuda": 2048}
#: Fraction of free memory an auto plan may spend on activations; the rest is for the photo itself,
#: the allocator's fragmentation and other processes. Host RAM is shared with the photo buffers.
MEMORY_FRACTION = {"cpu": 0.25, "mps": 0.3, "cuda": 0.6}
#: Never plan more than this for activations on the host (keeps a 24 MP photo well under 3 GiB peak).
HOST_ACTIVATION_CAP = 1 << 30
#: Peak inference memory / largest single layer output, measured for nafnet-s on CPU (5.1x at 512², 4.9x
#: at 1024², as ru_maxrss growth over one forward), with a margin; turns a cheap probe into a per-pixel
#: memory estimate.
PEAK_FACTOR = 6
#: Most tiles per device batch in an auto plan.
MAX_AUTO_BATCH = 16


@dataclass(frozen=True)
class TilePlan:
    """Tiles of ``tile`` px (0: the whole image at once), ``batch_size`` per device batch, and ``overlap``
    px of cross-fade beyond the model's own discarded margin. ``auto`` says the size came from free memory."""

    tile: int = 0
    batch_size: int = 1
    overlap: int = 32
    auto: bool = False

    def describe(self) -> str:
        """For ``-v``: what the run will do."""
        if self.tile == 0:
            return "whole image (no tiles)"
        return f"tiles of {self.tile} px{' (auto)' if self.auto else ''}, {self.batch_size} per batch, overlap {self.overlap} px"


def model_geometry(model: nn.Module) -> tuple[int, int]:
    """(size_multiple, tile_margin) with lenient defaults for foreign modules that lack them."""
    return max(1, int(getattr(model, "size_multiple", 1))), max(0, int(getattr(model, "tile_margin", 0)))


def round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def min_tile(model: nn.Module, overlap: int) -> int:
    """Smallest useful tile: the discarded margins and the cross-fade plus 32 px of progress per step."""
    multiple, margin = model_geometry(model)
    return round_up(2 * margin + overlap + max(32, multiple), multiple)


def check_tile(model: nn.Module, tile: int | None, overlap: int) -> None:
    """Raise OptionError if a user-given ``tile``/``overlap`` cannot work with ``model``."""
    if overlap < 0:
        raise OptionError(f"overlap must be 0 or more, got {overlap}", "--overlap")
    if tile is None or tile == 0:
        return
    floor = min_tile(model, overlap)
    if tile < floor:
        _, margin = model_geometry(model)
        raise OptionError(
            f"tile {tile} is too small: this model discards {margin} px at each tile edge and the cross-fade "
            f"is {overlap} px; use a tile of at least {floor}, a smaller overlap, or tile 0 (whole image)",
            "--tile",
        )


def estimate_bytes_per_pixel(model: nn.Module, device: torch.device) -> float:
    """Estimated peak device bytes per input pixel, from one small probe forward pass.

    Forward hooks record the largest output of any leaf layer on a 64 px probe; that scales linearly with
    the pixel count, and inference peaks at a small multiple of it (``PEAK_FACTOR``). Cheap (a 64 px
    forward) and model-agnostic, so DGF's full-resolution 896-channel stack gets smaller tiles than NAFNet.
    """
    multiple, _ = model_geometry(model)
    side = round_up(64, multiple)
    largest = 0

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * output.element_size())

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.inference_mode():
            model(torch.rand(1, 3, side, side, device=device))
    except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
        if not is_oom(exc):
            raise
        return math.inf  # not even a probe fits: plan the smallest tiles
    finally:
        for handle in handles:
            handle.remove()
    if largest == 0:  # no leaf modules (a bare function-like module): assume a small network
        largest = 64 * 4 * side * side
    return PEAK_FACTOR * largest / (side * side)


def auto_plan(
    model: nn.Module, device: torch.device, overlap: int, *, free_bytes: int | None = None
) -> tuple[int, int]:
    """(tile, batch_size) for ``model`` on ``device`` from free memory, within per-device bounds."""
    multiple, _ = model_geometry(model)
    kind = device.type if device.type in MAX_AUTO_TILE else "cpu"
    free = free_memory_bytes(device) if free_bytes is None else free_bytes
    budget = free * MEMORY_FRACTION[kind]
    if kind != "cuda":
        budget = min(budget, HOST_ACTIVATION_CAP)
    per_pixel = estimate_bytes_per_pixel(model, device)
    floor = min_tile(model, overlap)
    side = int(math.sqrt(max(budget, 0.0) / per_pixel)) // multiple * multiple
    tile = max(floor, min(side, round_up(MAX_AUTO_TILE[kind], multiple)))
    batch = 1
    if kind == "cuda":
        batch = int(max(1, min(MAX_AUTO_BATCH, budget // (per_pixel * tile * tile))))
    return tile, batch


def plan_tiles(
    model: nn.Module, device: torch.device, *, tile: int | None, overlap: int = 32, batch_size: int | None = None
) -> TilePlan:
    """The run's plan: ``tile`` None sizes tiles (and on CUDA the batch) from free memory with one probe;
    0 is the whole image; N is checked against the model and rounded down to its size multiple.

    A given tile on CUDA still gets its batch size from free memory, here, once -- not per photo.
    """
    check_tile(model, tile, overlap)
    if batch_size is not None and batch_size < 1:
        raise OptionError(f"batch size must be at least 1, got {batch_size}", "--batch-size")
    if tile == 0:
        return TilePlan(0, 1, overlap)
    multiple, _ = model_geometry(model)
    if tile is None or (batch_size is None and device.type == "cuda"):
        auto_tile, auto_batch = auto_plan(model, device, overlap)
        if tile is None:
            return TilePlan(auto_tile, batch_size or auto_batch, overlap, auto=True)
        batch_size = auto_batch
    return TilePlan(max(min_tile(model, overlap), tile // multiple * multiple), batch_size or 1, overlap)
