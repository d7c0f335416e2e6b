"""Deconvolution in linear light, and which domain a photo was blurred in.

A camera photo is ``encode(k (x) linear)``, not ``k (x) encode(sharp)``; test sets and the camera-shake bench
blur the stored values. Deconvolving in the wrong domain cost 0.3-5.0 dB even with the true kernel
(``python bench/blur_domain.py``: LIVE1 photos, the held-out shake family, 1 % noise; figures in
docs/how_deblurcli_decides.md, "Linear light and ``--blur-domain``"). :func:`choose_domain` judges it per
photo for ``--blur-domain auto``; the tests that did not work are in that document.

Linear-light deconvolution (:func:`to_linear`, :func:`linear_noise`, :func:`linear_saturation`): the
photo's values are decoded with the sRGB curve (the usual encoding, and close to the gamma-2.2 curves of
Adobe RGB and camera JPEGs), deconvolved, and encoded back. Noise measured on the encoded photo is scaled by
the curve's mean slope over the photo, so the regulariser sees the noise the linear values carry. In an
ad-hoc sweep with the true kernel on 5 linear-light blurs, 0.6x that scale lost 0.1-4.0 dB, and the noise
measured on the decoded photo itself (whose dark half hides it) lost 0.2-0.5 dB on 4 photos and gained 0.2
on one.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from deblurcli.blur import linear_to_srgb, srgb_to_linear

__all__ = ["DOMAINS", "Domain", "choose_domain", "from_linear", "linear_noise", "linear_saturation", "out_of_range", "to_linear"]

#: Where the kernel method estimates and deconvolves (``decide.BLUR_DOMAINS`` lists them for the CLI).
Domain = Literal["srgb", "linear"]
DOMAINS: tuple[Domain, ...] = get_args(Domain)
#: :func:`choose_domain` picks linear light when the linear solution strays out of [0, 1] at most this many
#: times as often as the sRGB one (set after seeing the camera-shake bench's ratios, see choose_domain).
LINEAR_RATIO = 2.0


def to_linear(x: torch.Tensor) -> torch.Tensor:
    """Encoded (sRGB) values in [0, 1] to linear light."""
    return srgb_to_linear(x.clamp(0.0, 1.0))


def from_linear(x: torch.Tensor) -> torch.Tensor:
    """Linear light back to the encoding; values outside [0, 1] are clipped first (the curve is not defined
    for negative light, and the encoded photo holds nothing brighter than white)."""
    return linear_to_srgb(x.clamp(0.0, 1.0))


def _slope(x: torch.Tensor) -> torch.Tensor:
    """Derivative of :func:`to_linear` at encoded values ``x``."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, torch.full_like(x, 1 / 12.92), (2.4 / 1.055) * ((x + 0.055) / 1.055) ** 1.4)


#: :func:`linear_noise` averages the curve's slope over at most about this many of the photo's values (an
#: even stride through them): the mean is the same to 1e-4, and all 36 M values of a 12 MP photo took 0.6 s.
SLOPE_SAMPLES = 1_000_000


def linear_noise(image: torch.Tensor, noise: float) -> float:
    """The noise std of ``image`` (encoded) after decoding: ``noise`` times the curve's mean slope."""
    values = image.reshape(-1)
    return float(noise) * float(_slope(values[:: max(1, values.numel() // SLOPE_SAMPLES)].float()).mean())


def linear_saturation(threshold: float) -> float:
    """An encoded clipping threshold (e.g. ``deconv.SATURATION``) in linear units."""
    return float(srgb_to_linear(torch.tensor(float(threshold))))


def out_of_range(x: torch.Tensor) -> float:
    """Share of values at or outside [0, 1]: a deconvolution's over- and undershoots."""
    return float(((x <= 0.0) | (x >= 1.0)).float().mean())


def choose_domain(window: torch.Tensor, kernel: torch.Tensor, noise: float) -> tuple[Domain, float]:
    """The domain the ``C x H x W`` encoded ``window`` was blurred in, and the ratio it was judged by.

    The window is deconvolved twice with the *same* kernel (the one estimated in linear light), in sRGB and in
    linear light, and each solution's share of values outside [0, 1] is counted. In the wrong domain a
    blurred high-contrast edge is not the kernel applied to a step, and the solver fits it with over- and
    undershooting lobes; a slightly wrong kernel makes lobes in both domains alike, which the ratio cancels.
    Measured on 8 LIVE1 photos blurred both ways (``bench/blur_domain.py`` reruns 6 of them): the ratio was
    2.9-30 on sRGB blur and 1.0-2.9 on linear-light blur; the camera-shake bench's sRGB blurs measured 2.2-17,
    which is why :data:`LINEAR_RATIO` is 2.0 and not 2.9 (docs/how_deblurcli_decides.md). Comparing each
    domain's solution with its own kernel did not separate them (0.5-27 against 1.6-98).
    """
    from deblurcli.kernel.deconv import SATURATION, deconvolve

    y = window.float()
    encoded = out_of_range(deconvolve(y, kernel, noise=noise, clip=False))
    light = out_of_range(deconvolve(to_linear(y), kernel, noise=linear_noise(y, noise), clip=False,
                                    saturation=linear_saturation(SATURATION)))
    ratio = light / max(encoded, 1e-4)
    return ("linear" if ratio <= LINEAR_RATIO else "srgb"), ratio
