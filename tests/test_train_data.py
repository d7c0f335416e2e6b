"""Training data: vectorised crops are real windows of the photos, augmentations, splits, side-by-side input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deblurcli.errors import DeblurError, PairsError
from deblurcli.train import data


def coded_image(h: int, w: int, ident: int) -> torch.Tensor:
    """uint8 H x W x 3 whose pixels say where they are: (row, column, image id)."""
    rows = torch.arange(h).view(h, 1).expand(h, w)
    cols = torch.arange(w).view(1, w).expand(h, w)
    return torch.stack([rows, cols, torch.full((h, w), ident)], dim=2).to(torch.uint8)


DIHEDRAL = [
    lambda a: a,
    lambda a: a.flip(0),
    lambda a: a.flip(1),
    lambda a: a.flip(0).flip(1),
    lambda a: a.T,
    lambda a: a.T.flip(0),
    lambda a: a.T.flip(1),
    lambda a: a.T.flip(0).flip(1),
]


def which_symmetry(crop: torch.Tensor, images: list[torch.Tensor]) -> int:
    """Index in DIHEDRAL of the transform that maps a window of its source image onto ``crop`` (C x s x s)."""
    ident = int(crop[2, 0, 0])
    assert (crop[2] == ident).all(), "a crop mixes pixels of two photos"
    src = images[ident]
    s = crop.shape[1]
    r0, c0 = int(crop[0].min()), int(crop[1].min())
    window = src[r0 : r0 + s, c0 : c0 + s].permute(2, 0, 1)
    assert window.shape[1:] == (s, s), "crop leaves its photo"
    for k, t in enumerate(DIHEDRAL):
        if all(torch.equal(t(window[ch]), crop[ch]) for ch in range(2)):
            return k
    raise AssertionError("crop is not a flipped/rotated window of its photo")


def test_crops_are_windows_under_the_eight_symmetries() -> None:
    images = [coded_image(40, 60, 0), coded_image(50, 33, 1), coded_image(24, 24, 2)]
    bank = data.CropBank(images)
    crops = bank.sample(400, 16, torch.Generator().manual_seed(0))
    assert crops.shape == (400, 3, 16, 16) and crops.dtype == torch.uint8
    seen = {which_symmetry(c, images) for c in crops}
    assert seen == set(range(8))
    plain = bank.sample(50, 16, torch.Generator().manual_seed(0), augment=False)
    assert {which_symmetry(c, images) for c in plain} == {0}


def test_crops_reproducible_and_weighted_by_area() -> None:
    images = [coded_image(200, 200, 0), coded_image(20, 20, 1)]
    bank = data.CropBank(images)
    a = bank.sample(64, 16, torch.Generator().manual_seed(5))
    b = bank.sample(64, 16, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    # 185^2 crop positions against 5^2: the small photo is almost never drawn.
    ids = bank.sample(2000, 16, torch.Generator().manual_seed(1))[:, 2, 0, 0]
    assert (ids == 1).float().mean() < 0.01


def test_pair_stacks_are_cropped_alike() -> None:
    img = coded_image(30, 30, 0)
    stack = torch.cat([img, img], dim=2)  # blur and sharp halves of one pair
    crops = data.CropBank([stack]).sample(32, 12, torch.Generator().manual_seed(2))
    blur, sharp = data.split_stack(crops)
    assert torch.equal(blur, sharp)


def test_crop_larger_than_photos_is_an_error() -> None:
    with pytest.raises(DeblurError, match="larger than the smallest"):
        data.CropBank([coded_image(20, 40, 0)]).sample(1, 24, torch.Generator())


def test_center_crop() -> None:
    img = coded_image(30, 50, 0)
    crop = data.center_crop(img, 20)
    assert crop.shape == (1, 3, 20, 20) and int(crop[0, 0, 0, 0]) == 5 and int(crop[0, 1, 0, 0]) == 15
    assert data.center_crop(img, 64).shape == (1, 3, 30, 30)
    assert data.center_crop(img, None).shape == (1, 3, 30, 50)


def test_fit_size_shrinks_and_grows() -> None:
    big = torch.zeros(300, 600, 3, dtype=torch.uint8)
    assert data.fit_size(big, 200, 16).shape == (100, 200, 3)
    small = torch.zeros(20, 40, 3, dtype=torch.uint8)
    assert data.fit_size(small, 1024, 64).shape == (64, 128, 3)
    assert data.fit_size(small, None, 8) is small


def test_holdout_split_is_seeded_and_disjoint() -> None:
    train, val = data.split_holdout(100, 0.05, 32, seed=3)
    assert len(val) == 5 and not set(train) & set(val) and len(train) + len(val) == 100
    assert data.split_holdout(100, 0.05, 32, seed=3) == (train, val)
    assert data.split_holdout(100, 0.05, 32, seed=4) != (train, val)
    assert data.split_holdout(1000, 0.05, 32, seed=0)[1].__len__() == 32
    assert data.split_holdout(1, 0.05, 32, seed=0) == ([0], [0])


def test_list_photos_skips_other_files(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "sub" / "b.PNG")
    (tmp_path / "LICENSE.copyright").write_text("text")
    assert [p.name for p in data.list_photos(tmp_path)] == ["a.jpg", "b.PNG"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(PairsError, match="no photos"):
        data.list_photos(tmp_path / "empty")


def test_side_by_side_training_input(tmp_path: Path) -> None:
    """The seed's format: one image, sharp on the left, blurry on the right; crops keep them aligned."""
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    blurry = (255 - sharp).astype(np.uint8)  # a distinguishable, pixel-aligned "blurry" half
    Image.fromarray(np.concatenate([sharp, blurry], axis=1)).save(tmp_path / "0001.png")
    Image.fromarray(np.concatenate([sharp[::-1], blurry[::-1]], axis=1)).save(tmp_path / "0002.png")
    pairs = data.find_training_pairs(tmp_path, True, None)
    assert len(pairs) == 2
    bank = data.CropBank(data.load_pairs(pairs, None, 32))
    assert bank.channels == 6
    crops = bank.sample(16, 32, torch.Generator().manual_seed(0))
    b, s = data.split_stack(crops)
    assert torch.equal(b.int(), 255 - s.int())  # every blurry crop is the partner of its sharp crop
