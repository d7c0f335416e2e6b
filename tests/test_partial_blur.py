"""Auto's second look at a photo the gate calls sharp: the share of blocks the network changed a lot."""

from __future__ import annotations

import numpy as np
import pytest

from deblurcli.decide import MIN_CHANGED, after_gate
from deblurcli.partial_blur import BLOCK, CHANGED_DB, FEATHER, PATCH_DB, changed_share, patch


def photo(h: int = 128, w: int = 192, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 0.8, (h, w, 3)).astype(np.float32)


def test_an_unchanged_photo_has_no_changed_block() -> None:
    a = photo()
    assert changed_share(a, a.copy()) == 0.0


def test_a_redrawn_patch_counts_the_blocks_it_covers() -> None:
    """32 px blocks at a stride of 16 on a 128 x 192 photo (7 x 11 blocks): a 64 px square moved by 0.2
    (14 dB) overlaps 5 x 5 of them by at least a quarter of their area, which is still 20 dB: all 25 count."""
    a = photo()
    b = a.copy()
    b[32:96, 64:128] += 0.2
    share = changed_share(a, b)
    assert share == pytest.approx(5 * 5 / (7 * 11))


def test_the_threshold_is_a_psnr_per_block() -> None:
    a = photo()
    just_under = 10 ** (-CHANGED_DB / 20) * 0.9  # an RMS change a little under the threshold, everywhere
    assert changed_share(a, a + just_under) == 0.0
    assert changed_share(a, a + just_under / 0.8) == 1.0


def test_small_photos_and_odd_shapes() -> None:
    a = photo(20, 24)
    assert changed_share(a, a + 0.5) == 1.0  # smaller than a block: one block
    assert BLOCK == 32
    with pytest.raises(ValueError, match="differ in shape"):
        changed_share(a, photo(24, 20))


def test_after_gate_keeps_the_network_from_the_threshold_on() -> None:
    assert after_gate(MIN_CHANGED).method == "network"
    assert "moving subject" in after_gate(0.04).reason and "4.0%" in after_gate(0.04).reason
    assert not after_gate(MIN_CHANGED).partial and after_gate(MIN_CHANGED * 0.99).partial
    still = after_gate(0.0)
    assert still.method == "unchanged" and "left unchanged" in still.reason


def test_after_gate_patches_below_the_threshold_and_leaves_an_untouched_photo() -> None:
    some = after_gate(MIN_CHANGED * 0.5)
    assert some.method == "network" and some.partial and "there only" in some.reason


def test_patch_keeps_the_output_where_it_moved_and_the_photo_elsewhere() -> None:
    """A 40 px square redrawn at 14 dB on a 256 px photo: inside it the output, one block stride plus the
    feather beyond it the photo's own pixels, bit for bit, with a ramp in between."""
    a = photo(256, 256)
    b = a.copy()
    b[100:140, 100:140] += 0.2
    b += 0.002  # a change everywhere far under PATCH_DB: never kept
    out, share = patch(a, b)
    assert np.array_equal(out[110:130, 110:130], b[110:130, 110:130])
    reach = BLOCK + BLOCK // 2 + FEATHER  # the block grid, one stride of growth, the ramp
    assert np.array_equal(out[: 100 - reach], a[: 100 - reach]) and np.array_equal(out[:, 140 + reach :], a[:, 140 + reach :])
    ramp = out[120, 140:200, 0] - a[120, 140:200, 0]
    assert np.all(np.diff(ramp) <= 1e-6) and ramp[0] > ramp[-1]  # falls off, no seam
    assert 40 * 40 / 256**2 < share < 0.25
    assert PATCH_DB > CHANGED_DB  # the patch reaches past the blocks that triggered it


def test_patch_of_an_unchanged_photo_is_the_photo() -> None:
    a = photo(64, 96)
    out, share = patch(a, a + 0.001)
    assert np.array_equal(out, a) and share == 0.0
    small = photo(20, 24)
    out, share = patch(small, small + 0.5)  # smaller than a block: all of it
    assert np.allclose(out, small + 0.5) and share == 1.0
