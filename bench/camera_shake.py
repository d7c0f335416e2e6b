"""Camera-shake judge (issue 17): deblurring methods on photos blurred by a kernel family nobody tunes on.

    python bench/camera_shake.py                                  # every method available, 15 live1 photos
    python bench/camera_shake.py --methods network,true-kernel --limit 15 --json shake.json
    python bench/camera_shake.py --kernels-png kernels.png        # look at the kernels (no scoring)
    OMP_NUM_THREADS=1 nice -n 19 python bench/camera_shake.py ...  # on a shared CPU

The protocol, the blind-deblurring benchmarks' (Levin et al. 2009, Sun et al. 2013):

- photos: ``../shared/data/val/live1`` (absent: a message and exit 0), whole photos fit to 768x512 as
  ``deblurcli.valsets.fit_crop`` does (``--crop S``: an S x S centre crop), on 8-bit levels;
- blur: one kernel per photo from ``bench/shake_kernels.py`` (hand tremor + drift, 13-27 px; see there), drawn
  from a stream seeded by (``--seed``, photo name), applied in sRGB to the **valid** region (no boundary is
  synthesised: the blurry photo is k-1 px smaller than the sharp one, whose centre it is aligned with), plus
  1 % Gaussian noise from the same stream, quantised to 8 bits as a saved photo would be (``--noise STD`` and
  ``--jpeg Q`` make the clean and the compressed variants: another noise level, a JPEG round trip after it);
- score: the method's output quantised to 8 bits, PSNR and SSIM each the best over integer shifts within
  ±5 px, on the aligned sharp photo minus an 8 px border (``deblurcli.metrics.shift_tolerant_psnr`` and
  ``shift_tolerant_ssim``); the blurry input is scored the same way and the gain is output minus input;
- do no harm: every method on the unblurred photos, PSNR of its output against its input (target >= 45 dB;
  'identical' where the output is the input bit for bit).

Methods are callables ``rgb (H x W x 3 float32 in [0, 1]) -> rgb`` of the same shape, or returning
``(rgb, info)`` where ``info`` is a dict of figures kept in the JSON (kernel confidence, the path taken ...).
A :class:`TrueKernel` method is handed the true kernel as well (the ceiling). Built in: ``network`` (the
bundled default model through the tiled engine, as ``deblur`` runs it), ``kernel`` (blind:
``deblurcli.kernel.estimate.estimate_kernel`` on the luma, then ``deblurcli.kernel.deconv.deconvolve``),
``true-kernel`` (``deconvolve`` with the true kernel) and ``auto`` (``deblurcli.session.Session``); a method
whose modules are missing is reported as unavailable. :func:`run_bench` is the whole measurement on photo
arrays, for other scripts and tests.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without `pip install -e .`
sys.path.insert(0, str(Path(__file__).resolve().parent))  # shake_kernels beside this file

from shake_kernels import SIZES, kernel_extent, sample_kernels, shake_kernel  # noqa: E402

PHOTOS = REPO.parent / "shared" / "data" / "val" / "live1"
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"})
#: sRGB Gaussian noise std added after the blur (the protocol's 1 %).
NOISE = 0.01
#: What happens to the blurred photo after the blur: its noise std and a JPEG quality (None: kept as 8-bit
#: levels, the protocol). ``--noise`` and ``--jpeg`` set them, for clean photos and compressed ones.
DEGRADATION: dict[str, Any] = {"noise": NOISE, "jpeg": None}
#: Shifts forgiven (px) and border dropped from the sharp photo (px, shifts included) when scoring.
MAX_SHIFT = 5
BORDER = 8
#: Do-no-harm target: output vs input PSNR on sharp photos.
NO_HARM_DB = 45.0
#: BT.601 full-range luma weights (Pillow's convert("L")): the grey image the kernel estimator sees.
METHOD_NAMES = ("network", "kernel", "true-kernel", "auto")

Info = dict[str, Any]
Method = Callable[[np.ndarray], Union[np.ndarray, tuple[np.ndarray, Info]]]


@dataclass(frozen=True)
class TrueKernel:
    """A method that is told the true kernel: ``fn(rgb, kernel)``; on sharp photos the kernel is ``[[1.0]]``."""

    fn: Callable[[np.ndarray, np.ndarray], Union[np.ndarray, tuple[np.ndarray, Info]]]


# ------------------------------------------------------------------------------------------ blur


def stream_rng(seed: int, name: str) -> np.random.Generator:
    """The photo's own random stream: adding or removing a photo changes no other photo's blur or noise."""
    return np.random.default_rng((seed * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % (2**63))


def blur_valid(sharp: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """True 2-D convolution of H x W x C with a k x k kernel, 'valid' part only: (H-k+1) x (W-k+1) x C.

    Output pixel (y, x) is centred on sharp pixel (y + r, x + r), r = (k - 1) / 2, so no border
    extension is invented. By FFT in float64 (exact to far below 8-bit levels).
    """
    import torch

    k = kernel.shape[0]
    h, w = sharp.shape[:2]
    if h < k or w < k:
        raise ValueError(f"a {w}x{h} photo is smaller than a {k} px kernel")
    x = torch.from_numpy(np.ascontiguousarray(sharp, dtype=np.float64)).permute(2, 0, 1)
    size = (h + k - 1, w + k - 1)
    spectrum = torch.fft.rfft2(x, s=size) * torch.fft.rfft2(torch.from_numpy(kernel.astype(np.float64)), s=size)
    full = torch.fft.irfft2(spectrum, s=size)
    return full[:, k - 1 : h, k - 1 : w].permute(1, 2, 0).numpy().astype(np.float32)


def degrade(sharp: np.ndarray, name: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(blurry, kernel, target)``: the photo's blurred 8-bit version, its kernel, and the sharp region it covers."""
    from deblurcli.metrics import quantize8

    rng = stream_rng(seed, name)
    size = int(rng.integers(SIZES[0], SIZES[1] + 1))
    kernel = shake_kernel(rng, size)
    blurred = blur_valid(sharp, kernel)
    noisy = quantize8(blurred + rng.normal(0.0, DEGRADATION["noise"], blurred.shape).astype(np.float32))
    if DEGRADATION["jpeg"] is not None:
        noisy = jpeg_round_trip(noisy, int(DEGRADATION["jpeg"]))
    r = (kernel.shape[0] - 1) // 2
    return noisy, kernel, sharp[r : sharp.shape[0] - r, r : sharp.shape[1] - r]


def jpeg_round_trip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """The 8-bit photo saved as a JPEG of ``quality`` (4:2:0, as cameras and PIL save) and read back."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.rint(rgb * 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) / 255


# ------------------------------------------------------------------------------------------ scoring


def score(output: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(PSNR, SSIM) of the 8-bit output, each best within ±MAX_SHIFT px, on the target minus BORDER px."""
    from deblurcli.metrics import quantize8, shift_tolerant_psnr, shift_tolerant_ssim

    c = BORDER - MAX_SHIFT  # the shifts eat the rest of the border
    out = quantize8(output)[c : output.shape[0] - c, c : output.shape[1] - c]
    tgt = target[c : target.shape[0] - c, c : target.shape[1] - c]
    return shift_tolerant_psnr(out, tgt, MAX_SHIFT), shift_tolerant_ssim(out, tgt, MAX_SHIFT)


def call_method(method: Method | TrueKernel, rgb: np.ndarray, kernel: np.ndarray) -> tuple[np.ndarray, Info, float]:
    """(output, info, seconds) of one method on one photo; checks that the shape is kept."""
    start = time.perf_counter()
    result = method.fn(rgb, kernel) if isinstance(method, TrueKernel) else method(rgb)
    seconds = time.perf_counter() - start
    out, info = result if isinstance(result, tuple) else (result, {})
    out = np.asarray(out, dtype=np.float32)
    if out.shape != rgb.shape:
        raise ValueError(f"the method returned shape {out.shape} for an input of shape {rgb.shape}")
    return out, dict(info), seconds


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _run_one(
    method: Method | TrueKernel, rgb: np.ndarray, kernel: np.ndarray
) -> tuple[np.ndarray | None, Info, float, str | None]:
    """call_method, with an exception turned into an error line: one crashing photo must not lose the run."""
    try:
        out, info, seconds = call_method(method, rgb, kernel)
        return out, info, seconds, None
    except Exception as exc:  # noqa: BLE001 - any failure of a method under test is a result to report
        return None, {}, 0.0, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]


def run_bench(
    photos: Mapping[str, np.ndarray],
    methods: Mapping[str, Method | TrueKernel],
    *,
    seed: int = 0,
    sharp_check: bool = True,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Blur every photo (8-bit H x W x 3 in [0, 1]), run every method on it, score, and summarise.

    Returns ``{"photos": [...], "summary": {method: figures}, "sharp": {method: figures}, "complete": bool}``;
    infinite PSNRs (identical images) are ``None``. ``log`` gets one line per photo as it finishes. An interrupt
    (Ctrl-C, ``timeout --signal=INT``) ends the run early with the finished photos summarised.
    """
    rows: list[dict[str, Any]] = []
    try:
        for name, photo in photos.items():
            rows.append(_bench_photo(name, photo, methods, seed, sharp_check))
            if log is not None:
                log(_photo_line(rows[-1]))
    except KeyboardInterrupt:  # a deadline (timeout --signal=INT) or Ctrl-C: summarise the finished photos
        if log is not None:
            log(f"interrupted: {len(rows)} of {len(photos)} photos finished")
    summary = {label: summarise_blurred(rows, label) for label in methods}
    sharp = {label: summarise_sharp(rows, label) for label in methods} if sharp_check else {}
    return {"photos": rows, "summary": summary, "sharp": sharp, "complete": len(rows) == len(photos)}


def _bench_photo(
    name: str, photo: np.ndarray, methods: Mapping[str, Method | TrueKernel], seed: int, sharp_check: bool
) -> dict[str, Any]:
    """One photo's row: its blur, the input's score, and every method's score (and sharp-photo check)."""
    from deblurcli.metrics import psnr, quantize8

    sharp = quantize8(np.asarray(photo, dtype=np.float32))
    blurry, kernel, target = degrade(sharp, name, seed)
    p_in, s_in = score(blurry, target)
    row: dict[str, Any] = {
        "photo": name, "kernel_extent": kernel_extent(kernel), "kernel_side": int(kernel.shape[0]), "megapixels": blurry.shape[0] * blurry.shape[1] / 1e6,
        "sharp_megapixels": sharp.shape[0] * sharp.shape[1] / 1e6, "input": {"psnr": p_in, "ssim": s_in},
        "methods": {}, "sharp": {},
    }
    for label, method in methods.items():
        out, info, seconds, error = _run_one(method, blurry, kernel)
        entry: dict[str, Any] = {"seconds": seconds, "info": info, "error": error}
        if out is not None:
            p, s = score(out, target)
            entry.update(psnr=_finite(p), ssim=s, gain_psnr=p - p_in, gain_ssim=s - s_in)
        row["methods"][label] = entry
        if sharp_check:
            out, info, seconds, error = _run_one(method, sharp, np.ones((1, 1), np.float32))
            check: dict[str, Any] = {"seconds": seconds, "info": info, "error": error}
            if out is not None:
                q = quantize8(out)
                check.update(psnr=_finite(psnr(q, sharp)), identical=bool(np.array_equal(q, sharp)))
            row["sharp"][label] = check
    return row


def _photo_line(row: Mapping[str, Any]) -> str:
    cells = []
    for label, entry in row["methods"].items():
        gain = "error" if entry["error"] else f"{entry['gain_psnr']:+.2f} dB"
        ran = entry["info"].get("ran")
        cells.append(f"{label} {gain}" + (f" ({ran})" if ran else ""))
    head = f"  {row['photo']}: kernel {row['kernel_extent']} px ({row['kernel_side']} px array), "
    return head + f"input {row['input']['psnr']:.2f} dB; " + ", ".join(cells)


def _tally(entries: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How often each path ran, for methods that say (``info["ran"]``, e.g. auto: network / kernel / unchanged)."""
    counts: dict[str, int] = {}
    for entry in entries:
        if (ran := entry["info"].get("ran")) is not None:
            counts[str(ran)] = counts.get(str(ran), 0) + 1
    return counts


def summarise_blurred(rows: Sequence[Mapping[str, Any]], label: str) -> dict[str, Any]:
    """Mean gains, the worst photo, failures (< 0 dB) and bad failures (< -0.5 dB), seconds per MP."""
    done = [(r["photo"], r["methods"][label], r["megapixels"]) for r in rows if not r["methods"][label]["error"]]
    errors = [f"{r['photo']}: {r['methods'][label]['error']}" for r in rows if r["methods"][label]["error"]]
    if not done:
        return {"photos": 0, "errors": errors}
    gains = np.array([e["gain_psnr"] for _, e, _ in done])
    worst = int(np.argmin(gains))
    seconds = sum(e["seconds"] for _, e, _ in done)
    return {
        "photos": len(done),
        "mean_gain_psnr": float(gains.mean()),
        "mean_gain_ssim": float(np.mean([e["gain_ssim"] for _, e, _ in done])),
        "worst_photo": done[worst][0],
        "worst_gain_psnr": float(gains[worst]),
        "failures": int((gains < 0).sum()),
        "below_minus_half_db": int((gains < -0.5).sum()),
        "seconds_per_mp": seconds / sum(mp for _, _, mp in done),
        "ran": _tally(e for _, e, _ in done),
        "errors": errors,
    }


def summarise_sharp(rows: Sequence[Mapping[str, Any]], label: str) -> dict[str, Any]:
    """Output vs input PSNR on the sharp photos: mean over the changed ones, worst, identical count."""
    done = [(r["photo"], r["sharp"][label], r["sharp_megapixels"]) for r in rows if not r["sharp"][label]["error"]]
    errors = [f"{r['photo']}: {r['sharp'][label]['error']}" for r in rows if r["sharp"][label]["error"]]
    if not done:
        return {"photos": 0, "errors": errors}
    values = [math.inf if e["psnr"] is None else e["psnr"] for _, e, _ in done]
    finite = [v for v in values if math.isfinite(v)]
    worst = int(np.argmin(values))
    return {
        "photos": len(done),
        "mean_psnr_changed": float(np.mean(finite)) if finite else None,
        "worst_photo": done[worst][0],
        "worst_psnr": _finite(values[worst]),
        "identical": sum(e["identical"] for _, e, _ in done),
        "passed": min(values) >= NO_HARM_DB,
        "seconds_per_mp": sum(e["seconds"] for _, e, _ in done) / sum(mp for _, _, mp in done),
        "ran": _tally(e for _, e, _ in done),
        "errors": errors,
    }


# ------------------------------------------------------------------------------------------ tables


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def blurred_table(summary: Mapping[str, Mapping[str, Any]], n: int) -> str:
    header = [f"method ({n} photos, held-out shake)", "mean gain PSNR", "mean gain SSIM", "worst photo",
              "failures (< 0 dB)", "< -0.5 dB", "s/MP", "errors"]
    rows = []
    for label, s in summary.items():
        if not s["photos"]:
            rows.append([label, "n/a", "n/a", "n/a", "n/a", "n/a", "n/a", str(len(s["errors"]))])
            continue
        rows.append([label, f"{s['mean_gain_psnr']:+.2f} dB", f"{s['mean_gain_ssim']:+.4f}",
                     f"{s['worst_photo']} ({s['worst_gain_psnr']:+.2f} dB)", f"{s['failures']}/{s['photos']}",
                     f"{s['below_minus_half_db']}/{s['photos']}", f"{s['seconds_per_mp']:.2f}", str(len(s["errors"]))])
    return markdown_table(header, rows)


def sharp_table(sharp: Mapping[str, Mapping[str, Any]], n: int) -> str:
    def db(value: float | None) -> str:
        return "identical" if value is None else f"{value:.2f} dB"

    header = [f"method ({n} sharp photos)", "PSNR out vs in (changed)", "worst photo", "identical",
              f">= {NO_HARM_DB:.0f} dB", "s/MP", "errors"]
    rows = []
    for label, s in sharp.items():
        if not s["photos"]:
            rows.append([label, "n/a", "n/a", "n/a", "n/a", "n/a", str(len(s["errors"]))])
            continue
        mean = "n/a (all identical)" if s["mean_psnr_changed"] is None else f"{s['mean_psnr_changed']:.2f} dB"
        rows.append([label, mean, f"{s['worst_photo']} ({db(s['worst_psnr'])})", f"{s['identical']}/{s['photos']}",
                     "PASS" if s["passed"] else "FAIL", f"{s['seconds_per_mp']:.2f}", str(len(s["errors"]))])
    return markdown_table(header, rows)


# ------------------------------------------------------------------------------------------ methods


#: Session options of the Session-based methods (``--refiner``, ``--blur-domain``); the defaults are the CLI's.
SESSION_OPTIONS: dict[str, str] = {"refiner": "auto", "blur_domain": "auto"}


def _session_method(method: str, device: str) -> Method:
    """``deblur --method METHOD`` exactly as the CLI runs it (one Session, built once); records which path
    ran, the kernel's size and confidence, and why."""
    from deblurcli.devices import keep_host_memory
    from deblurcli.session import Session

    keep_host_memory()  # as the CLI does
    session = Session(method=method, device=device, **SESSION_OPTIONS)

    def run(rgb: np.ndarray) -> tuple[np.ndarray, Info]:
        result = session.deblur(rgb)
        info = {"ran": result.method, "confidence": result.confidence, "kernel_size": result.kernel_size,
                "notes": [str(n) for n in result.notes]}
        return np.asarray(result.rgb, dtype=np.float32), info

    return run


def network_method(device: str) -> Method:
    """The bundled default model through the tiled engine (``--method network``)."""
    return _session_method("network", device)


def kernel_method(device: str) -> Method:
    """Blind kernel path forced (``--method kernel``): deconvolve unless the gate finds the photo sharp."""
    return _session_method("kernel", device)


def true_kernel_method(device: str) -> TrueKernel:
    """The ceiling: deconvolve with the kernel that made the blur (noise level estimated, as the blind path
    must); a sharp photo (delta kernel) is returned as it is, since the oracle knows there is no blur."""
    import torch

    from deblurcli.devices import resolve_device
    from deblurcli.kernel.deconv import deconvolve

    dev = resolve_device(device)

    def run(rgb: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        if kernel.size == 1:
            return rgb
        out = deconvolve(torch.from_numpy(rgb).to(dev).permute(2, 0, 1), torch.from_numpy(kernel).to(dev))
        return out.permute(1, 2, 0).cpu().numpy()

    return TrueKernel(run)


def auto_method(device: str) -> Method:
    """``--method auto``, the default: learned or kernel path, chosen per photo."""
    return _session_method("auto", device)


BUILDERS: dict[str, Callable[[str], Method | TrueKernel]] = {
    "network": network_method, "kernel": kernel_method, "true-kernel": true_kernel_method, "auto": auto_method,
}


def build_methods(names: Sequence[str], device: str) -> tuple[dict[str, Method | TrueKernel], dict[str, str]]:
    """The methods that can be built here, and why each other one cannot (a missing module, say)."""
    methods: dict[str, Method | TrueKernel] = {}
    missing: dict[str, str] = {}
    for name in names:
        try:
            methods[name] = BUILDERS[name](device)
        except ImportError as exc:  # a module not written yet
            missing[name] = f"unavailable ({exc})"
        except Exception as exc:  # noqa: BLE001 - e.g. absent weights: report and bench the rest
            missing[name] = f"could not be built ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return methods, missing


# ------------------------------------------------------------------------------------------ photos, pictures


def photo_paths(folder: Path, limit: int | None) -> list[Path]:
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    return paths[:limit] if limit else paths


def load_photos(paths: Sequence[Path], crop: int | None) -> dict[str, np.ndarray]:
    """Photos as the CLI reads them, fit to 768x512 (or an S x S centre crop), on 8-bit levels."""
    from deblurcli.metrics import quantize8
    from deblurcli.photo import read_photo
    from deblurcli.valsets import fit_crop

    photos = {}
    for path in paths:
        rgb = np.asarray(read_photo(path).rgb, dtype=np.float32)
        if crop:
            h, w = rgb.shape[:2]
            top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
            rgb = rgb[top : top + crop, left : left + crop]
        else:
            rgb = fit_crop(rgb)
        photos[path.stem] = quantize8(rgb)
    return photos


def kernels_picture(kernels: Sequence[np.ndarray], columns: int = 4, scale: int = 6) -> np.ndarray:
    """uint8 grid of kernels, each normalised to its own maximum and enlarged by nearest neighbour."""
    cell = max(k.shape[0] for k in kernels) + 2
    rows = math.ceil(len(kernels) / columns)
    side = cell * scale
    picture = np.full((rows * (side + 2) - 2, columns * (side + 2) - 2), 96, np.uint8)
    for i, k in enumerate(kernels):
        r, c = divmod(i, columns)
        tile = np.zeros((cell, cell))
        o = (cell - k.shape[0]) // 2
        tile[o : o + k.shape[0], o : o + k.shape[0]] = k / k.max()
        big = np.kron(tile, np.ones((scale, scale)))
        picture[r * (side + 2) : r * (side + 2) + side, c * (side + 2) : c * (side + 2) + side] = np.round(big * 255)
    return picture


def write_kernels_png(path: Path, names: Sequence[str], seed: int) -> list[int]:
    """Picture the kernels of the first 12 photos (or 12 seeded samples without photos); their extents (px)."""
    from PIL import Image

    if names:
        kernels = []
        for name in names[:12]:
            rng = stream_rng(seed, name)
            kernels.append(shake_kernel(rng, int(rng.integers(SIZES[0], SIZES[1] + 1))))
    else:
        kernels = sample_kernels(seed, 12)
    Image.fromarray(kernels_picture(kernels)).save(path, format="PNG")
    return [kernel_extent(k) for k in kernels]


# ------------------------------------------------------------------------------------------ main


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHOD_NAMES), help=f"comma-separated: {', '.join(METHOD_NAMES)}")
    parser.add_argument("--photos", type=Path, default=PHOTOS, help="folder of sharp photos")
    parser.add_argument("--limit", type=int, help="only the first N photos (by name)")
    parser.add_argument("--crop", type=int, help="an S x S centre crop instead of fitting to 768x512")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--refiner", default="auto", help="the kernel path's refiner: auto, none, a model name or a weights file")
    parser.add_argument("--blur-domain", default="auto", choices=("srgb", "linear", "auto"), help="the kernel path's --blur-domain")
    parser.add_argument("--noise", type=float, default=NOISE, help=f"noise std after the blur (default {NOISE}, the protocol)")
    parser.add_argument("--jpeg", type=int, metavar="Q", help="save the blurred photo as a JPEG of quality Q first")
    parser.add_argument("--no-sharp-check", action="store_true", help="skip the do-no-harm run on sharp photos")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--kernels-png", type=Path, metavar="FILE", help="write a picture of a dozen kernels and exit")
    args = parser.parse_args(argv)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in BUILDERS]
    if unknown:
        parser.error(f"unknown method {unknown[0]!r}: choose from {', '.join(METHOD_NAMES)}")
    present = args.photos.is_dir()
    if args.kernels_png is not None:
        stems = [p.stem for p in photo_paths(args.photos, args.limit)] if present else []
        sizes = write_kernels_png(args.kernels_png, stems, args.seed)
        what = "photos" if stems else "seeded samples"
        print(f"wrote {args.kernels_png}: kernels of {len(sizes)} {what}, extents {sizes} px")
        return 0
    if not present:
        print(f"skipped: {args.photos} is absent (the shared data is not here)")
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    SESSION_OPTIONS.update(refiner=args.refiner, blur_domain=args.blur_domain)
    DEGRADATION.update(noise=args.noise, jpeg=args.jpeg)
    photos = load_photos(photo_paths(args.photos, args.limit), args.crop)
    methods, missing = build_methods(names, args.device)
    for name, why in missing.items():
        print(f"method {name}: {why}")
    if not methods:
        print("nothing to run: no method is available")
        return 1
    print(f"{len(photos)} photos from {args.photos}, seed {args.seed}, methods {', '.join(methods)}", flush=True)
    result = run_bench(photos, methods, seed=args.seed, sharp_check=not args.no_sharp_check,
                       log=lambda line: print(line, flush=True))
    n = len(result["photos"])
    print("\n" + blurred_table(result["summary"], n))
    if result["sharp"]:
        print("\n" + sharp_table(result["sharp"], n))
    for scope, block in (("blurred", result["summary"]), ("sharp", result["sharp"])):
        for label, s in block.items():
            if s.get("ran"):
                paths = ", ".join(f"{k} {v}" for k, v in sorted(s["ran"].items()))
                print(f"{label} on the {scope} photos ran: {paths}")
            for line in s["errors"][:3]:
                print(f"error ({label}, {scope}): {line}")
    if args.json is not None:
        result["settings"] = {"photos": str(args.photos), "seed": args.seed, "crop": args.crop, "limit": args.limit,
                              "refiner": args.refiner,
                              "noise": args.noise, "jpeg": args.jpeg, "max_shift": MAX_SHIFT, "border": BORDER, "no_harm_db": NO_HARM_DB,
                              "unavailable": missing}
        text = json.dumps(_json_safe(result), indent=1, allow_nan=False)
        args.json.write_text(text + "\n")
    return 0 if result["complete"] else 130


if __name__ == "__main__":
    sys.exit(main())
