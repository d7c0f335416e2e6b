"""Training data held in memory: photos decoded once, random crops gathered in one vectorised index.

Why in memory: decoding a JPEG costs far more than a training step's crop, and a Python data-loader
worker pool is a poor fit for a 2-core laptop as much as for a GPU box. Photos (or blurry/sharp pairs,
stacked as 6 channels so that one gather crops both identically) are decoded once, optionally shrunk
to a maximum side, and packed into one flat ``uint8`` buffer. A batch of random crops, with random
flips and 90-degree rotations, is then a single ``torch.take`` over precomputed indices: no per-crop
Python loop, no per-step decoding, and a fixed ``torch.Generator`` makes it reproducible and resumable.
Under torchrun each process decodes and holds only its round-robin share (:func:`shard_owner`) and draws
crops from it with its own generator: the in-memory equivalent of a distributed sampler.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from deblurcli.errors import DeblurError, PairsError, PhotoError

if TYPE_CHECKING:
    from deblurcli.pairs import Pair

T = TypeVar("T")

#: Extensions taken as photos in a ``--synthetic`` folder; anything else (licence files, sidecars) is
#: skipped silently because such folders routinely carry them.
PHOTO_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"})


def list_photos(root: Path) -> list[Path]:
    """Photo files under ``root`` (recursive), sorted so that seeded splits are stable across runs."""
    root = Path(root)
    if not root.is_dir():
        raise PairsError(f"{root}: not a folder of photos")
    files = sorted(
        p for p in root.rglob("*") if p.suffix.lower() in PHOTO_EXTENSIONS and p.is_file()
    )
    if not files:
        raise PairsError(f"{root}: no photos found (looked for {', '.join(sorted(PHOTO_EXTENSIONS))})")
    return files


def to_uint8(rgb: np.ndarray) -> torch.Tensor:
    """float [0,1] H x W x C numpy -> uint8 H x W x C tensor (4x less memory than float32)."""
    return torch.from_numpy(np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8))


def fit_size(img: torch.Tensor, max_side: int | None, min_side: int) -> torch.Tensor:
    """Shrink ``img`` (H x W x C uint8) so its longer side is at most ``max_side`` and grow it so its
    shorter side is at least ``min_side`` (a crop must fit). Antialiased, so shrinking does not alias
    fine texture the model should learn to restore; a no-op for photos already in range."""
    h, w = img.shape[:2]
    scale = 1.0
    if max_side and max(h, w) > max_side:
        scale = max_side / max(h, w)
    if min(h, w) * scale < min_side:
        scale = min_side / min(h, w)
    if scale == 1.0:
        return img
    nh, nw = max(min_side, round(h * scale)), max(min_side, round(w * scale))
    x = img.permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=scale < 1, align_corners=False)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).contiguous()


def decode_all(
    items: Sequence[T], decode: Callable[[T], torch.Tensor], problems: list[str] | None = None
) -> list[torch.Tensor]:
    """Decode ``items`` in a thread pool (image decoders release the GIL), keeping input order.

    An unreadable photo (:class:`PhotoError`) is left out and reported in ``problems`` as
    ``"<item>: <reason>"``; with ``problems=None`` it is an error. Other errors (a pair whose halves
    differ in size) always propagate: they mean the dataset is wrong, not one file.
    """
    return [img for _, img in decode_indexed(items, decode, problems)]


def decode_indexed(
    items: Sequence[T], decode: Callable[[T], torch.Tensor], problems: list[str] | None = None
) -> list[tuple[int, torch.Tensor]]:
    """:func:`decode_all` that also says which ``items`` each image came from (index into ``items``),
    which a rank decoding its share of a dataset needs to tell the others what was readable."""

    def attempt(item: T) -> torch.Tensor | None:
        try:
            return decode(item)
        except PhotoError as exc:
            if problems is None:
                raise
            problems.append(f"{item}: {exc}")
            return None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return [(i, img) for i, img in enumerate(pool.map(attempt, items)) if img is not None]


def shard_owner(index: int, world_size: int) -> int:
    """The rank that decodes (and, when every rank gets some, trains on) item ``index`` of a dataset:
    round-robin, so each rank's share is a spread of the sorted file list, not one folder's worth."""
    return index % world_size


def load_photo(path: Path, max_side: int | None, min_side: int) -> torch.Tensor:
    """One sharp photo as H x W x 3 uint8, resized into range (see :func:`fit_size`)."""
    from deblurcli.photo import read_photo

    return fit_size(to_uint8(read_photo(path).rgb), max_side, min_side)


def load_pair_stack(pair: Pair, max_side: int | None, min_side: int) -> torch.Tensor:
    """One blurry/sharp pair stacked as H x W x 6 uint8 (blur first), so one crop cuts both alike."""
    from deblurcli.pairs import load_pair

    blur, sharp = load_pair(pair)  # raises PairsError naming the file when the sizes differ
    return fit_size(to_uint8(np.concatenate([blur, sharp], axis=2)), max_side, min_side)


def dihedral_grid(size: int, flips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row/column source offsets (n x size x size) for crops under the symmetries ``flips`` (3 x n bool:
    transpose, vertical flip, horizontal flip per crop).

    The 8 symmetries of a square (flips and 90-degree rotations) are a transpose followed by optional
    vertical and horizontal flips; expressing them as index arithmetic lets the crop gather apply them
    for free, per sample, without a Python loop.
    """
    n = flips.shape[1]
    ar = torch.arange(size, device=flips.device)
    rows = ar.view(1, size, 1).expand(n, size, size)
    cols = ar.view(1, 1, size).expand(n, size, size)
    t, fv, fh = flips.view(3, n, 1, 1)
    r = torch.where(t, cols, rows)
    c = torch.where(t, rows, cols)
    r = torch.where(fv, size - 1 - r, r)
    c = torch.where(fh, size - 1 - c, c)
    return r, c


class CropBank:
    """Images of any sizes packed in one flat uint8 buffer, sampled as random square crops.

    ``images`` are H x W x C uint8 tensors with the same C (3 for sharp photos, 6 for stacked pairs).
    Crops are drawn with probability proportional to the number of crop positions a photo offers, so
    every pixel of the collection is about equally likely to be seen, whatever the photo sizes.
    """

    def __init__(self, images: Sequence[torch.Tensor]) -> None:
        if not images:
            raise PairsError("no readable images to train or validate on")
        channels = {int(im.shape[2]) for im in images}
        if len(channels) != 1:
            raise DeblurError(f"training images mix channel counts {sorted(channels)}")
        self.channels = channels.pop()
        self.heights = torch.tensor([im.shape[0] for im in images], dtype=torch.int64)
        self.widths = torch.tensor([im.shape[1] for im in images], dtype=torch.int64)
        sizes = self.heights * self.widths * self.channels
        self.offsets = torch.cumsum(sizes, 0) - sizes
        self.flat = torch.cat([im.reshape(-1) for im in images])

    def __len__(self) -> int:
        return len(self.heights)

    @property
    def nbytes(self) -> int:
        return self.flat.numel()

    @property
    def min_side(self) -> int:
        return int(torch.minimum(self.heights, self.widths).min())

    def to(self, device: torch.device) -> CropBank:
        """Move the pixels (e.g. to a GPU with room to spare, where gathering needs no host copy)."""
        self.flat = self.flat.to(device)
        return self

    def sample(self, n: int, size: int, generator: torch.Generator, augment: bool = True) -> torch.Tensor:
        """``n`` random ``size`` x ``size`` crops as uint8 N x C x size x size, on the bank's device.

        The random draws (a few numbers per crop) come from the CPU ``generator`` whatever the device, so
        a seed gives the same crops on any machine.
        """
        if size > self.min_side:
            raise DeblurError(f"crop {size} is larger than the smallest training image ({self.min_side} px)")
        room_h = self.heights - size + 1
        room_w = self.widths - size + 1
        idx = torch.multinomial((room_h * room_w).double(), n, replacement=True, generator=generator)
        u = torch.rand(2, n, generator=generator, dtype=torch.float64)
        y0 = (u[0] * room_h[idx]).long()
        x0 = (u[1] * room_w[idx]).long()
        flips = torch.rand(3, n, generator=generator) < 0.5 if augment else torch.zeros(3, n, dtype=torch.bool)
        dev = self.flat.device
        base = self.offsets[idx] + (y0 * self.widths[idx] + x0) * self.channels
        r, c = dihedral_grid(size, flips.to(dev))
        w = self.widths[idx].to(dev).view(n, 1, 1)
        pix = base.to(dev).view(n, 1, 1) + (r * w + c) * self.channels
        chan = torch.arange(self.channels, device=dev).view(1, self.channels, 1, 1)
        return torch.take(self.flat, pix.unsqueeze(1) + chan)


def split_holdout(count: int, fraction: float, limit: int, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, validation) index split: ``fraction`` of ``count`` items, 1 to ``limit`` of them.

    The permutation depends only on ``seed`` and ``count``, so a resumed run validates on the very same
    held-out photos; with a single item it is both trained on and validated on (nothing else possible).
    """
    if count < 2:
        return list(range(count)), list(range(count))
    n_val = max(1, min(limit, round(count * fraction), count - 1))
    perm = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[n_val:]), sorted(perm[:n_val])


def u8_to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 crops -> float32 in [0, 1] (on the same device)."""
    return x.float().div_(255.0)


def load_pairs(
    pairs: Sequence[Pair], max_side: int | None, min_side: int, problems: list[str] | None = None
) -> list[torch.Tensor]:
    """Blurry/sharp pairs as H x W x 6 uint8 stacks, decoded in parallel; unreadable ones go to
    ``problems``, pairs whose sizes differ are an error."""
    return decode_all(pairs, lambda p: load_pair_stack(p, max_side, min_side), problems)


def center_crop(img: torch.Tensor, size: int | None) -> torch.Tensor:
    """The central ``size`` square of an H x W x C image (clipped to the image; whole for ``None``) as
    1 x C x h x w."""
    h, w = img.shape[:2]
    if size:
        s = min(size, h, w)
        y, x = (h - s) // 2, (w - s) // 2
        img = img[y : y + s, x : x + s]
    return img.permute(2, 0, 1).unsqueeze(0).contiguous()


def find_training_pairs(
    root: Path | None, side_by_side: bool, csv: Path | None, console: Any | None = None
) -> list[Pair]:
    """Pairs via pairs.py; files left out (unpaired, unreadable) are reported, never dropped silently."""
    from deblurcli.pairs import find_pairs

    scan = find_pairs(Path(root) if root is not None else Path("."), side_by_side=side_by_side, csv=csv)
    if scan.problems and console is not None:
        console.print(f"[yellow]warning: {len(scan.problems)} file(s) left out of {root or csv}:[/]")
        for line in scan.problems[:10]:
            console.print(f"  {line}", markup=False, highlight=False)
        if len(scan.problems) > 10:
            console.print(f"  ... and {len(scan.problems) - 10} more")
    return list(scan.pairs)


def val_from_pairs(
    root: Path, side_by_side: bool, crop: int | None, limit: int, console: Any | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A validation set from a pairs folder: the first ``limit`` pairs (by key), centre-cropped."""
    pairs = find_training_pairs(root, side_by_side, None, console)[:limit]
    stacks = load_pairs(pairs, None, 1)  # a broken validation file is an error: figures must stay comparable
    return [split_stack(u8_to_float(center_crop(img, crop))) for img in stacks]


def split_stack(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A 6-channel (blur, sharp) stack -> (blur, sharp)."""
    return x[:, :3], x[:, 3:]


def load_share(
    items: list[Any], decode: Callable[[Any], torch.Tensor], problems: list[str], dist: Any, seed: int,
    val_count: int, hold_out: bool,
) -> tuple[list[torch.Tensor], list[torch.Tensor], int, int]:
    """Under torchrun: (this rank's training images, held-out images on rank 0, training and held-out
    counts); ``hold_out`` False keeps every image for training (validation comes from elsewhere).

    Each rank decodes every ``world_size``-th item, so loading is N times faster and each process holds
    about 1/N of the dataset; the ranks then agree on which items were readable and split those exactly
    as a single process would (same held-out set, whatever the number of processes). When there are
    fewer training images than ranks, every rank trains on all of them.
    """
    from deblurcli.train import distributed

    rank, world = dist.rank, dist.world_size
    local: dict[int, torch.Tensor] = {}

    def decode_mine() -> tuple[list[int], list[str]]:
        found: list[str] = []
        for i, img in decode_indexed(items[rank::world], decode, found):
            local[rank + world * i] = img
        return sorted(local), found

    shares = distributed.gather(dist, decode_mine)
    readable = sorted(i for ids, _ in shares for i in ids)
    problems.extend(p for _, found in shares for p in found)
    if hold_out:
        train_pos, val_pos = split_holdout(len(readable), 0.05, val_count, seed)
    else:
        train_pos, val_pos = list(range(len(readable))), []
    train_ids, val_ids = [readable[p] for p in train_pos], [readable[p] for p in val_pos]
    owners = {shard_owner(i, world) for i in train_ids}
    mine = train_ids if len(owners) < world else [i for i in train_ids if shard_owner(i, world) == rank]
    needed = mine + (val_ids if dist.is_main else [])
    missing = [i for i in dict.fromkeys(needed) if i not in local]

    def decode_missing() -> None:  # readable on another rank, so an error here is an error
        for k, img in decode_indexed([items[i] for i in missing], decode, None):
            local[missing[k]] = img

    distributed.gather(dist, decode_missing)
    held_out = [local[i] for i in val_ids] if dist.is_main else []
    return [local[i] for i in mine], held_out, len(train_ids), len(val_ids)
