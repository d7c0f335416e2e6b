"""Release evaluation of a generator: the figures the model card reports, and pictures of real blur.

    python scripts/release_eval.py --weights runs/x/best.safetensors [--json e.json] [--markdown e.md]
    python scripts/release_eval.py --model nafnet-s --images-dir docs/images
    python scripts/release_eval.py --weights w.safetensors --limit 3 --real-limit 2     (a quick look)

What it measures, each with exactly the code ``deblur eval`` runs (deblurcli.cli.eval.evaluate):

1. ``synthetic``: the training blur family at a seeded draw; the floor (issue 7 asks +3 dB for the default).
2. ``heldout``: a blur family never trained on (13-27 px camera-shake-like kernels, 1% noise), scored up to
   a ±5 px shift like the blind-deblurring benchmarks (``--max-shift 5``): the proxy for unseen real blur.
3. ``sharp``: unblurred photos; do-no-harm: the output against its own input must stay at >= 38 dB PSNR
   (judged on the worst photo, since one damaged photo in a folder is already harm).
4. ``dynamic``: a moving object with its own blur over a differently blurred (or still) background on
   every photo: what ``auto`` hands the network, and what no single kernel explains.
5. ``real_blur``: real blurry photos without ground truth. No full-reference metric is possible, so it
   prints no-reference figures, output over input: mean gradient magnitude and variance of the Laplacian of
   the luma (> 1 means more high-frequency content: sharper, but ringing and amplified noise also raise
   them, so the pictures are the real check) and the largest shift of a channel's mean in 8-bit levels
   (a colour cast is harm). It writes input | output pictures (full frame, downscaled, over a 1:1 detail)
   as ``<images-dir>/real_blur_<name>.jpg``, each kept under ~250 KB.

The validation sets come from ``python scripts/make_valsets.py`` (``.data/val/<family>``); the real
photos from ``../shared/data/real_blur``. Whatever is absent is skipped with a message (exit 0), so the
script also runs where the shared data is not. Run it niced on a shared CPU:
``OMP_NUM_THREADS=1 nice -n 19 python scripts/release_eval.py ...``.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without `pip install -e .` (the GPU machine)

FAMILIES = ("synthetic", "heldout", "sharp", "dynamic")
#: Blind-deblurring protocol: shifts of up to this many px are forgiven on the held-out family.
HELDOUT_MAX_SHIFT = 5
#: Do-no-harm floor: output vs input PSNR on sharp photos (issue 7).
NO_HARM_DB = 38.0
#: Real photos shown by default: the one real hand-held shot, the two demo inputs, GoPro frames.
SHOWCASE = (
    "srn_deblur_testing_set__4c6",
    "misc_demo__nafnet_demo_blurry",
    "misc_demo__deblurganv2_test_img_000027",
    "deepdeblur_examples_blur_gamma__seq_id-4_frame-1_Input",
    "dmphn_test_samples__000011",
)
#: Size budget of one side-by-side picture in docs/ (the repo carries them).
MAX_IMAGE_BYTES = 250_000
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"})


# ------------------------------------------------------------------------------------------ formatting


def fmt(key: str, value: float | None, signed: bool = False) -> str:
    """A table cell: PSNR with 2 decimals, the others with 4; ``inf`` for identical, ``n/a`` for missing."""
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    spec = ("+" if signed else "") + (".2f" if key == "psnr" else ".4f")
    return format(value, spec)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def family_table(family: str, report: Any) -> str:
    """input / output / gain rows of the means, one column per metric, as ``deblur eval`` reports them."""
    from deblurcli.metrics import LABELS, METRICS

    n = len(report.images)
    shift = report.settings.get("max_shift") or 0
    title = f"{family} ({n} pairs" + (f", best over ±{shift} px shifts" if shift else "") + ")"
    if family == "sharp":  # the input is the target: only the output row says anything
        rows = [["output vs input", *(fmt(k, report.mean["output"][k]) for k in METRICS)]]
    else:
        rows = [
            [scope, *(fmt(k, report.mean[scope][k], signed=scope == "gain") for k in METRICS)]
            for scope in ("input", "output", "gain")
        ]
    return markdown_table([title, *(LABELS[k] for k in METRICS)], rows)


# ------------------------------------------------------------------------------------------ families


def no_harm(report: Any) -> dict[str, Any]:
    """On the sharp family the target is the input: output PSNR is the output-vs-input PSNR."""
    values = [r.output["psnr"] for r in report.images if r.output["psnr"] is not None]
    finite = [v for v in values if math.isfinite(v)]
    worst = min(values) if values else None
    return {
        "mean_psnr": float(np.mean(finite)) if finite else (math.inf if values else None),
        "worst_psnr": worst,
        "worst_image": next((r.pair.key for r in report.images if r.output["psnr"] == worst), None),
        "identical_images": len(values) - len(finite),
        "floor_db": NO_HARM_DB,
        "passed": worst is not None and worst >= NO_HARM_DB,
    }


def run_families(args: argparse.Namespace, blocks: dict[str, Any], sections: list[str]) -> None:
    """Score every validation family that exists into ``blocks`` (JSON) and ``sections`` (markdown), filled
    as each family finishes so that an interrupted run still reports the finished ones."""
    from deblurcli.cli.eval import evaluate, to_json

    for family in FAMILIES:
        root = args.val / family
        if not (root / "blur").is_dir():
            print(f"skipped {family}: {root} is absent (build it with python scripts/make_valsets.py)")
            continue
        start = time.perf_counter()
        report = evaluate(
            root, method=args.method, model_name=args.model, weights=args.weights, lpips_net=args.lpips_net, device=args.device,
            max_shift=HELDOUT_MAX_SHIFT if family == "heldout" else 0, limit=args.limit,
        )
        blocks[family] = to_json(report)
        blocks[family]["seconds"] = round(time.perf_counter() - start, 1)
        section = family_table(family, report)
        if family == "sharp":
            harm = no_harm(report)
            blocks[family]["no_harm"] = {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in harm.items()}
            verdict = "PASS" if harm["passed"] else "FAIL"
            section += (
                f"\n\nDo no harm (output vs its sharp input, floor {NO_HARM_DB:.0f} dB): mean "
                f"{fmt('psnr', harm['mean_psnr'])} dB over the {len(report.images) - harm['identical_images']} "
                f"changed photos, worst {fmt('psnr', harm['worst_psnr'])} dB ({harm['worst_image']}), "
                f"{harm['identical_images']} left identical: **{verdict}**"
            )
        for note in report.notes:
            section += f"\n\nnote: {note}"
        sections.append(section)
        print(section + "\n", flush=True)


# ------------------------------------------------------------------------------------------ real blur


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 full-range luma of H x W x 3 in [0, 1], float64."""
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def sharpness(rgb: np.ndarray) -> dict[str, float]:
    """No-reference figures of one image: mean gradient magnitude and Laplacian variance of its luma."""
    y = luma(rgb)
    gx, gy = y[:-1, 1:] - y[:-1, :-1], y[1:, :-1] - y[:-1, :-1]
    lap = y[1:-1, :-2] + y[1:-1, 2:] + y[:-2, 1:-1] + y[2:, 1:-1] - 4 * y[1:-1, 1:-1]
    return {"gradient": float(np.mean(np.hypot(gx, gy))), "laplacian_var": float(lap.var())}


def colour_shift(inp: np.ndarray, out: np.ndarray) -> float:
    """Largest change of a channel's mean, in 8-bit levels: a deblurrer should not tint the photo."""
    return float(np.abs(out.mean(axis=(0, 1)) - inp.mean(axis=(0, 1))).max() * 255)


def detail_window(rgb: np.ndarray, height: int, width: int) -> tuple[int, int]:
    """Top-left corner of the ``height x width`` window with the most gradient energy (an integral image
    over a coarse grid of positions), so the 1:1 detail shows edges rather than sky."""
    y = luma(rgb)
    energy = np.zeros((y.shape[0] + 1, y.shape[1] + 1))
    g = np.zeros_like(y)
    g[:-1, :-1] = np.hypot(y[:-1, 1:] - y[:-1, :-1], y[1:, :-1] - y[:-1, :-1])
    energy[1:, 1:] = g.cumsum(0).cumsum(1)
    ys = np.linspace(0, y.shape[0] - height, 9).round().astype(int)[:, None]
    xs = np.linspace(0, y.shape[1] - width, 9).round().astype(int)[None, :]
    box = energy[ys + height, xs + width] - energy[ys, xs + width] - energy[ys + height, xs] + energy[ys, xs]
    i, j = np.unravel_index(int(box.argmax()), box.shape)
    return int(ys[i, 0]), int(xs[0, j])


def side_by_side(inp: np.ndarray, out: np.ndarray, labels: tuple[str, str]) -> Any:
    """input | output: the whole frames (downscaled to at most 640 px wide each) over a 1:1 detail crop of
    the same size, every panel labelled. Downscaling hides blur and restoration alike, hence the detail."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = inp.shape[:2]
    half_w = min(640, w)
    half_h = round(h * half_w / w)
    ch, cw = min(half_h, h), min(half_w, w)
    top, left = detail_window(inp, ch, cw)

    def pil(a: np.ndarray) -> Image.Image:
        return Image.fromarray(np.round(np.clip(a, 0, 1) * 255).astype(np.uint8))

    canvas = Image.new("RGB", (2 * half_w, half_h + ch), (0, 0, 0))
    for i, (a, label) in enumerate(zip((inp, out), labels, strict=True)):
        canvas.paste(pil(a).resize((half_w, half_h), Image.Resampling.LANCZOS), (i * half_w, 0))
        canvas.paste(pil(a[top : top + ch, left : left + cw]), (i * half_w, half_h))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(12, half_h // 22))
    pad = 4
    for i, label in enumerate(labels):
        for row, text in ((0, label), (half_h, f"{label}, 1:1 detail")):
            x0, y0, x1, y1 = draw.textbbox((i * half_w + 2 * pad, row + 2 * pad), text, font=font)
            draw.rectangle((x0 - pad, y0 - pad, x1 + pad, y1 + pad), fill=(0, 0, 0))
            draw.text((i * half_w + 2 * pad, row + 2 * pad), text, fill=(255, 255, 255), font=font)
    draw.line((half_w, 0, half_w, canvas.height), fill=(255, 255, 255), width=2)
    return canvas


def jpeg_under(image: Any, max_bytes: int) -> bytes:
    """JPEG bytes of ``image`` within ``max_bytes``: quality 88 down to 75, then smaller sizes (LANCZOS)."""
    from PIL import Image

    while True:
        for quality in (88, 82, 75):
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=quality, optimize=True, progressive=True)
            if buffer.tell() <= max_bytes:
                return buffer.getvalue()
        image = image.resize((round(image.width * 0.85), round(image.height * 0.85)), Image.Resampling.LANCZOS)


def run_real_blur(args: argparse.Namespace) -> tuple[dict[str, Any] | None, str | None]:
    """Deblur the real photos; no-reference figures for all of them, pictures for the showcase ones."""
    if not args.real_blur.is_dir():
        print(f"skipped real_blur: {args.real_blur} is absent (the shared data is not here)")
        return None, None
    import torch

    from deblurcli.atomic import atomic_write_bytes
    from deblurcli.photo import read_photo
    from deblurcli.session import Session

    photos = sorted(p for p in args.real_blur.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    showcase = set(args.showcase or SHOWCASE)
    if args.real_limit:  # a quick look: the showcase photos first
        photos = sorted(photos, key=lambda p: (p.stem not in showcase, p.name))[: args.real_limit]
    session = Session(args.method, model=args.model, weights=args.weights, device=args.device)
    device = session.device
    name = args.weights.stem if args.weights is not None else (args.model or "default model")
    rows: list[dict[str, Any]] = []
    for path in photos:
        inp = np.asarray(read_photo(path).rgb, dtype=np.float32)
        start = time.perf_counter()
        out = session.deblur(inp).rgb
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        out = np.round(np.clip(out, 0, 1) * 255) / 255  # as saved
        s_in, s_out = sharpness(inp), sharpness(out)
        row: dict[str, Any] = {
            "photo": path.name,
            "width": inp.shape[1],
            "height": inp.shape[0],
            "gradient_ratio": s_out["gradient"] / s_in["gradient"],
            "laplacian_var_ratio": s_out["laplacian_var"] / s_in["laplacian_var"],
            "colour_shift_levels": colour_shift(inp, out),
            "seconds": round(seconds, 2),
        }
        if path.stem in showcase and args.images_dir is not None:
            target = args.images_dir / f"real_blur_{path.stem}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            data = jpeg_under(side_by_side(inp, out, ("input (real blur)", f"output ({name})")), MAX_IMAGE_BYTES)
            atomic_write_bytes(target, data)
            row["image"] = str(target)
        rows.append(row)
        print(f"  {path.name}: gradient x{row['gradient_ratio']:.2f}, Laplacian var x{row['laplacian_var_ratio']:.2f}, "
              f"colour shift {row['colour_shift_levels']:.2f} levels, {seconds:.1f} s", flush=True)
    if not rows:
        print(f"skipped real_blur: no photos in {args.real_blur}")
        return None, None
    keys = ("gradient_ratio", "laplacian_var_ratio", "colour_shift_levels")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    table = markdown_table(
        [f"real_blur ({len(rows)} photos, no ground truth)", "gradient out/in", "Laplacian var out/in", "colour shift (levels)", "seconds"],
        [[r["photo"], f"{r['gradient_ratio']:.2f}", f"{r['laplacian_var_ratio']:.2f}", f"{r['colour_shift_levels']:.2f}", f"{r['seconds']:.1f}"] for r in rows]
        + [["**mean**", f"{mean['gradient_ratio']:.2f}", f"{mean['laplacian_var_ratio']:.2f}", f"{mean['colour_shift_levels']:.2f}", ""]],
    )
    print(table + "\n", flush=True)
    return {"photos": rows, "mean": mean, "device": str(device)}, table


# ------------------------------------------------------------------------------------------ main


def provenance(args: argparse.Namespace) -> dict[str, Any]:
    """What was evaluated, where and when: enough to put a row in the model card's history table."""
    import torch

    from deblurcli.weights import read_state_dict, sha256_file

    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": args.model,
        "weights": str(args.weights) if args.weights is not None else None,
        "torch": torch.__version__,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if args.weights is not None:
        info["sha256"] = sha256_file(args.weights)
        info["metadata"] = read_state_dict(args.weights)[1]
    return info


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="catalogue model name (default: the default model)")
    source.add_argument("--weights", type=Path, help="weights file, e.g. runs/x/best.safetensors")
    parser.add_argument("--val", type=Path, default=REPO / ".data" / "val", help="folder of the validation families")
    parser.add_argument("--real-blur", type=Path, default=REPO.parent / "shared" / "data" / "real_blur")
    parser.add_argument("--images-dir", type=Path, default=REPO / "docs" / "images", help="where the side-by-side pictures go")
    parser.add_argument("--no-images", dest="images_dir", action="store_const", const=None, help="write no pictures")
    parser.add_argument("--showcase", action="append", metavar="STEM", help="real photo (file stem) to picture; repeatable")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--markdown", type=Path, help="write the tables here")
    parser.add_argument("--limit", type=int, help="score only the first N pairs of each family")
    parser.add_argument("--real-limit", type=int, help="only N real photos (the showcase ones first)")
    parser.add_argument("--no-real-blur", action="store_true", help="skip the real photos")
    parser.add_argument("--lpips-net", default="alex", choices=["alex", "vgg", "squeeze", "none"])
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--method", default="network", choices=["network", "auto", "kernel"],
        help="what to evaluate (default network: these are the weights' figures; auto/kernel: the whole tool's)",
    )
    args = parser.parse_args(argv)

    from deblurcli.atomic import atomic_write_bytes
    from deblurcli.errors import DeblurError

    if args.weights is not None and not args.weights.is_file():
        print(f"error: {args.weights}: no such weights file", file=sys.stderr)
        return 1
    result: dict[str, Any] = {"provenance": {}, "complete": False, "families": {}, "real_blur": None}
    sections: list[str] = []
    try:
        result["provenance"] = provenance(args)
        run_families(args, result["families"], sections)
        if not args.no_real_blur:
            result["real_blur"], real_table = run_real_blur(args)
            if real_table:
                sections.append(real_table)
        result["complete"] = True
    except DeblurError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a deadline (timeout --signal=INT) or Ctrl-C: keep what is finished
        print("interrupted: writing the figures finished so far", file=sys.stderr)
        sections.append("**Interrupted: the evaluation did not finish; the sections above are complete.**")
    if args.json is not None:
        text = json.dumps(result, indent=2, allow_nan=False, default=str)
        atomic_write_bytes(args.json, (text + "\n").encode())
    if args.markdown is not None:
        what = args.weights or args.model or "default model"
        head = f"# Release evaluation of {what}\n\n{result['provenance']['date']}\n\n"
        atomic_write_bytes(args.markdown, (head + "\n\n".join(sections) + "\n").encode())
    if not sections:
        print("nothing evaluated: neither the validation sets nor the real photos are here")
    return 0 if result["complete"] else 130


if __name__ == "__main__":
    sys.exit(main())
