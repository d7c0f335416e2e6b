"""The weights shipped in weights/ load as the default model and do real work on the bundled sample photo."""

from pathlib import Path

import numpy as np
import pytest

from deblurcli.weights import default_model_name, get_entry, is_cached, load_generator

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "coffee_blurry.jpg"


def test_default_model_is_bundled_and_present() -> None:
    entry = get_entry(default_model_name())
    assert entry.source == "bundled"
    assert is_cached(entry), "the default model's weights file is missing from weights/"


def test_free_variant_is_shipped() -> None:
    entry = get_entry("nafnet-s-free")
    assert entry.source == "bundled" and entry.shipped and is_cached(entry)


@pytest.mark.parametrize("name", [None, "nafnet-s-free"])
def test_bundled_model_changes_the_sample_but_keeps_it_close(name: str | None) -> None:
    """The output differs from the blurry input (the model is not the identity) yet stays near it (no wreck)."""
    from deblurcli.api import deblur_image

    if not SAMPLE.exists():
        pytest.skip("sample photo absent")
    from PIL import Image

    image = Image.open(SAMPLE).convert("RGB").crop((0, 0, 192, 160))
    model = load_generator(name)
    out = deblur_image(image, model, device="cpu", precision="fp32", tile=0)
    a = np.asarray(image, dtype=np.float64)
    b = np.asarray(out, dtype=np.float64)
    assert out.size == image.size and out.mode == "RGB"
    psnr = 10 * np.log10(255.0**2 / np.mean((a - b) ** 2))
    assert 20.0 < psnr < 60.0, psnr
