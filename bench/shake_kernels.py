"""The held-out camera-shake kernel family of ``bench/camera_shake.py``: NOBODY tunes on it.

It is deliberately unlike both families the project develops on: ``deblurcli.blur`` moves a point at
constant speed whose heading takes random kicks (Boracchi & Foi 2012), and ``valsets.heldout_kernels`` draws a
spline through a momentum random walk and softens it. Here the path is a small physical model of a hand holding
a camera, after what recorded kernels look like (Levin et al. 2009: 13-27 px thin curved strokes with bright
knots where the motion paused; Köhler et al. 2012: 500 Hz recordings of hand shake, jittery curves; Gavant et
al. 2011's physiological shake model: tremor plus slow drift):

- **physiological tremor**: a lightly damped oscillator at 8-12 Hz (damping ratio 0.05-0.35) per axis, driven by
  white noise that is correlated between the axes and anisotropic, so the tremor traces tilted ellipses,
  zig-zags and thin loops; started one second before the shutter opens so it is in its steady state;
- **slow drift**: low-pass-filtered noise integrated into a wandering velocity (Gaussian filter of 60-200 ms),
  and with probability 0.6 one **corrective sub-movement**: a minimum-jerk move (Flash & Hogan 1985) between two
  rest points, whose bell-shaped speed starts and ends at zero;
- the shutter stays open 1/16-1/3 s; the two parts are mixed at a tremor:drift ratio drawn log-uniformly in
  [0.1, 1.5], so some kernels are smooth strokes with tremor ripples and others tremor knots that drift;
- the path is sampled **uniformly in time** and every sample splatted with bilinear weights, so the camera's
  uneven speed is the kernel's uneven intensity: it dwells at turning points and rest points (bright dots at
  ends and turns) and crosses fast segments thinly. No optical softening: the kernels are as thin as bilinear
  splatting makes them;
- scaled so that the longest side of its pixel support is the drawn size (13-27 px), centred on its centroid
  (exactly: a bilinear splat keeps the mean), cropped to the smallest odd square around the centre.

Every number comes from the caller's ``numpy.random.Generator`` in an order that does not depend on earlier
outcomes' values, so a seed reproduces the same kernels.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SIZES", "kernel_extent", "sample_kernels", "shake_kernel", "shake_path", "splat_path"]

#: Longest side of a kernel's pixel support, px, inclusive range the sizes are drawn from.
SIZES = (13, 27)
#: Simulation rate of the hand model (Hz) and the time samples splatted per kernel.
RATE_HZ = 2000
SAMPLES = 4096
#: Seconds of tremor simulated before the shutter opens (the oscillator forgets its zero start).
BURN_IN_S = 1.0


def _tremor(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 2)`` tremor positions: a damped 8-12 Hz resonator per axis driven by correlated white noise.

    The resonator is the AR(2) filter whose impulse response is ``r^t sin((t + 1) w) / sin w``; filtering is a
    convolution with that response (by FFT), so no per-sample Python loop.
    """
    freq = rng.uniform(8.0, 12.0)
    zeta = rng.uniform(0.05, 0.35)
    rho = rng.uniform(-0.9, 0.9)  # correlation of the drive between the axes: tilted ellipses
    aspect = rng.uniform(0.25, 1.0)  # the hand shakes more along one direction
    angle = rng.uniform(0.0, math.pi)
    drive = rng.standard_normal((n, 2))
    omega = 2 * math.pi * freq / RATE_HZ
    r = math.exp(-zeta * omega)
    w = omega * math.sqrt(1 - zeta**2)
    t = np.arange(n)
    response = r**t * np.sin((t + 1) * w) / math.sin(w)
    mixed = drive @ np.array([[1.0, rho], [0.0, math.sqrt(1 - rho**2)]])
    mixed[:, 1] *= aspect
    rot = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    mixed = mixed @ rot
    m = 2 * n
    spectrum = np.fft.rfft(mixed, m, axis=0) * np.fft.rfft(response, m)[:, None]
    return np.fft.irfft(spectrum, m, axis=0)[:n]


def _gaussian_lowpass(x: np.ndarray, sigma: float) -> np.ndarray:
    """Each column of ``x`` filtered by a Gaussian of ``sigma`` samples (edges by reflection)."""
    half = int(math.ceil(3 * sigma))
    g = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    g /= g.sum()
    padded = np.pad(x, ((half, half), (0, 0)), mode="reflect")
    return np.stack([np.convolve(padded[:, k], g, mode="valid") for k in range(x.shape[1])], axis=1)


def _drift(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 2)`` slow drift: integrated low-pass velocity noise plus, sometimes, one minimum-jerk correction."""
    sigma = rng.uniform(0.06, 0.2) * RATE_HZ
    velocity = _gaussian_lowpass(rng.standard_normal((n, 2)), sigma)
    wander = np.cumsum(velocity, axis=0)
    wander /= max(float(np.ptp(wander, axis=0).max()), 1e-12)
    # A corrective move: from rest to rest, speed 30 u^2 (1 - u)^2 (a bell), placed anywhere in the window.
    has_move = rng.uniform() < 0.6
    start, duration = rng.uniform(-0.3, 0.8), rng.uniform(0.3, 1.0)  # fractions of the window
    heading, amplitude = rng.uniform(0, 2 * math.pi), rng.uniform(0.3, 1.5)
    u = np.clip((np.linspace(0, 1, n) - start) / duration, 0.0, 1.0)
    profile = 10 * u**3 - 15 * u**4 + 6 * u**5
    move = amplitude * profile[:, None] * np.array([math.cos(heading), math.sin(heading)])
    return wander + (move if has_move else 0.0)


def shake_path(rng: np.random.Generator) -> np.ndarray:
    """A hand-shake camera path during one exposure: ``(SAMPLES, 2)`` (x, y), uniform in time, arbitrary scale."""
    exposure = rng.uniform(1 / 16, 1 / 3)
    ratio = math.exp(rng.uniform(math.log(0.1), math.log(1.5)))
    open_n = max(int(exposure * RATE_HZ), 8)
    burn_n = int(BURN_IN_S * RATE_HZ)
    tremor = _tremor(rng, burn_n + open_n)[burn_n:]
    tremor /= max(float(np.ptp(tremor, axis=0).max()), 1e-12)
    drift = _drift(rng, open_n)
    drift /= max(float(np.ptp(drift, axis=0).max()), 1e-12)
    path = drift + ratio * tremor
    # Resampled to SAMPLES instants, still uniform in time (linear interpolation of a 2 kHz path).
    t = np.linspace(0, open_n - 1, SAMPLES)
    return np.stack([np.interp(t, np.arange(open_n), path[:, k]) for k in range(2)], axis=1)


def _support_side(points: np.ndarray) -> int:
    """Longest side of the pixels a bilinear splat of ``points`` (relative to a pixel centre) touches."""
    return int(max(np.ceil(points[:, k].max()) - np.floor(points[:, k].min()) + 1 for k in range(2)))


def splat_path(points: np.ndarray, size: int) -> np.ndarray:
    """The kernel of a time-uniform path: support ``size`` px on its longest side, centred on its centroid.

    Each sample carries equal weight (equal time), spread over its four pixels with bilinear weights, so the
    kernel's centroid is the samples' mean exactly; that mean goes on the centre pixel. The path is scaled to
    ``size - 1`` px and shrunk by 0.5 % steps until the touched pixels fit ``size`` (a sub-pixel offset can add
    one). Returns a ``k x k`` float32 kernel (k odd, the smallest centred square holding the support).
    """
    rel = points - points.mean(axis=0)
    scale = (size - 1) / max(float(np.ptp(rel, axis=0).max()), 1e-12)
    while _support_side(rel * scale) > size:
        scale *= 0.995
    rel = rel * scale
    half = int(np.ceil(np.abs(rel).max())) + 1
    side = 2 * half + 1
    pos = rel + half
    base = np.floor(pos).astype(int)
    frac = pos - base
    k = np.zeros(side * side)
    for dy in (0, 1):  # the four bilinear corners, each one bincount over all samples
        for dx in (0, 1):
            weight = (frac[:, 1] if dy else 1 - frac[:, 1]) * (frac[:, 0] if dx else 1 - frac[:, 0])
            index = (base[:, 1] + dy) * side + base[:, 0] + dx
            k += np.bincount(index, weights=weight, minlength=side * side)
    k = k.reshape(side, side)
    nz = np.argwhere(k > 0)
    r = int(np.abs(nz - half).max())
    k = k[half - r : half + r + 1, half - r : half + r + 1]
    return (k / k.sum()).astype(np.float32)


def shake_kernel(rng: np.random.Generator, size: int) -> np.ndarray:
    """One held-out camera-shake kernel whose pixel support is ``size`` px on its longest side (see module doc)."""
    if not SIZES[0] <= size <= SIZES[1]:
        raise ValueError(f"kernel size must be in {SIZES[0]}..{SIZES[1]} px, got {size}")
    return splat_path(shake_path(rng), size)


def sample_kernels(seed: int, n: int) -> list[np.ndarray]:
    """``n`` kernels from one seeded stream, sizes evenly spread over ``SIZES`` (for pictures and tests)."""
    rng = np.random.default_rng(seed)
    sizes = np.linspace(SIZES[0], SIZES[1], n).round().astype(int) if n > 1 else [SIZES[1]]
    return [shake_kernel(rng, int(s)) for s in sizes]


def kernel_extent(kernel: np.ndarray) -> int:
    """Longest side of the bounding box of a kernel's non-zero pixels."""
    nz = np.argwhere(kernel > 0)
    return int((nz.max(axis=0) - nz.min(axis=0) + 1).max())
