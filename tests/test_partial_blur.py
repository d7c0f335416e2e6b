"""Auto's second look at a photo the gate calls sharp: the share of blocks the network changed a lot."""

from __future__ import annotations

import numpy as np
import pytest

from deblurcli.decide import MIN_CHANGED, after_gate
from deblurcli.partial_blur import BLOCK, CHANGED_DB, changed_share


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
    still = after_gate(MIN_CHANGED * 0.99)
    assert still.method == "unchanged" and "left unchanged" in still.reason
