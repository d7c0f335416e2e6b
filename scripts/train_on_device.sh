#!/usr/bin/env bash
# One GPU slot of the weights campaign (issue 7): resume from the shipped weights, train for a fixed
# wall-clock budget, evaluate, and leave weights + logs + figures in $OUT (at most 8 files, flat).
#
#   bash scripts/train_on_device.sh                      # nafnet-s, 8 minutes, batch 32 x 256²
#   MODEL=dgf-light bash scripts/train_on_device.sh      # the DGF-light stage instead
#   MODEL=nafnet-s-free bash scripts/train_on_device.sh  # the variant trained on the free photos alone
#   MODEL=nafnet-s-unshuffle WEIGHTS=runs/unshuffle-init.safetensors bash scripts/train_on_device.sh
#                                                        # the unshuffle-stem candidate, warm-started from
#                                                        # scripts/warm_start_unshuffle.py (carry that file)
#   BUDGET=6 LR=4e-4 EXTRA="--lpips 0.05" bash scripts/train_on_device.sh
#
# Installs nothing and needs no network. It runs from the repository root with PYTHONPATH=$PWD (no
# `pip install -e .` on the device); pure-Python packages the device image lacks (piq, and lpips for
# --lpips > 0) are taken from $PYDEPS when that folder exists. docs/gpu_training.md says what to carry.
#
# Why 8 minutes by default, not 9: one device command may run 600 s in all, and imports, loading the
# photos, building the validation sets, the final validation and the release evaluation need about 80 s.
# The training itself is also fenced by a hard SIGINT (the loop then checkpoints and exports cleanly), and
# the weights are copied to $OUT before the evaluation starts, so a slow evaluation never costs them.
set -uo pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
REPO=$PWD
T0=$SECONDS

MODEL=${MODEL:-nafnet-s}                 # nafnet-s | nafnet-s-free | nafnet-s-unshuffle | dgf-light
BUDGET=${BUDGET:-8}                      # training minutes (deblur train --max-minutes)
TOTAL_S=${TOTAL_S:-590}                  # the whole script must end within this (device command limit 600 s)
BATCH=${BATCH:-32}
CROP=${CROP:-256}
LR=${LR:-}                               # empty: deblur train's default (1e-4 when fine-tuning)
LPIPS=${LPIPS:-0}                        # stage 1: pixel loss only; LPIPS needs its backbone in $TORCH_HOME
ADV=${ADV:-0}
VAL_EVERY=${VAL_EVERY:-500}
VAL_CROP=${VAL_CROP:-0}                  # whole validation photos: the same figures deblur eval gives
SEED=${SEED:-$(date +%s)}                # a new crop/blur stream per slot (printed, so it can be replayed)
EXTRA=${EXTRA:-}                         # more deblur train options, word-split
EVAL_EXTRA=${EVAL_EXTRA:-}               # more release_eval.py options, e.g. "--limit 2 --real-limit 1"
DEVICE=${DEVICE:-cuda}                   # cpu only for a local smoke test of this script
OUT=${OUT:-$REPO/runs/device-out}        # the device tool sets $OUT; locally it is a folder under runs/
PYDEPS=${PYDEPS:-$REPO/.data/pydeps}
first_dir() { for d in "$@"; do [ -d "$d" ] && { echo "$d"; return; }; done; echo "$1"; }
DATA=${DATA:-$(first_dir ../shared/data/train .data/train)}
LIVE1=${LIVE1:-$(first_dir ../shared/data/val/live1 .data/live1)}
REAL_BLUR=${REAL_BLUR:-$(first_dir ../shared/data/real_blur .data/real_blur)}
VAL=${VAL:-.data/val}

case $MODEL in
    nafnet-s) ARCH=nafnet ;;
    nafnet-s-free) ARCH=nafnet ;;
    nafnet-s-unshuffle) ARCH=nafnet-s-unshuffle ;;
    dgf-light) ARCH=dgf-light ;;
    *) echo "error: MODEL must be nafnet-s, nafnet-s-free, nafnet-s-unshuffle or dgf-light, got $MODEL" >&2; exit 2 ;;
esac
WEIGHTS=${WEIGHTS:-weights/deblur-$MODEL.safetensors}
RUN=${RUN:-runs/device-$MODEL-$(date -u +%Y%m%dT%H%M%S)}
mkdir -p "$OUT" "$RUN"

main() {
[ -d "$PYDEPS" ] && export PYTHONPATH=$REPO:$PYDEPS${PYTHONPATH:+:$PYTHONPATH} || export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
PY=${PY:-python3}

echo "== $(date -u +%FT%TZ) $MODEL: budget ${BUDGET} min, batch $BATCH x ${CROP}², seed $SEED, run $RUN"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
if ! $PY -c "import sys, torch, click, rich, safetensors, PIL, numpy, piq; gpu = sys.argv[1] != 'cpu'; assert not gpu or torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, torch.cuda.get_device_name(0) if gpu else 'cpu')" "$DEVICE"; then
    echo "error: a package is missing or no GPU is visible; carry piq (and lpips) in $PYDEPS (docs/gpu_training.md)" >&2
    return 2
fi
if [ ! -d "$DATA" ]; then echo "error: no training photos at $DATA (carry them as .data/train)" >&2; return 2; fi
RECIPE=()
if [ "$MODEL" = nafnet-s-free ]; then
    # The shipped free recipe (docs/MODEL_CARD.md): never BSDS500 (non-commercial), only free_photos/, without
    # the bokeh-heavy mate wallpapers (they taught the model to smooth dark texture on sharp photos), and
    # 20% unblurred samples.
    FREE=$DATA/free_photos; [ "${DATA##*/}" = free_photos ] && FREE=$DATA
    if [ ! -d "$FREE" ]; then echo "error: nafnet-s-free trains on $FREE, which is missing" >&2; return 2; fi
    mkdir -p "$RUN/photos"
    for f in "$FREE"/*.jpg; do case ${f##*/} in mate_*) ;; *) ln -sf "$(realpath "$f")" "$RUN/photos/" ;; esac; done
    DATA=$RUN/photos
    RECIPE=(--sharp-prob 0.2)
fi

# Validation sets: carried as .data/val, or rebuilt here from the 3 MB of LIVE1 photos (about 10 s),
# since the PNG sets weigh 52 MB and the whole carried tree may not exceed 64 MiB.
if [ ! -d "$VAL/synthetic/blur" ] && [ -d "$LIVE1" ]; then
    $PY scripts/make_valsets.py --src "$LIVE1" --out "$VAL"
fi
VAL_ARGS=()
[ -d "$VAL/synthetic/blur" ] && VAL_ARGS=(--val-pairs "$VAL/synthetic" --val-crop "$VAL_CROP")

if [ -f "$WEIGHTS" ]; then START=(--weights "$WEIGHTS"); else START=(--arch "$ARCH"); echo "note: $WEIGHTS absent: training $ARCH from scratch"; fi
[ -n "$LR" ] && START+=(--lr "$LR")
[ -f "$RUN/checkpoints/last.pt" ] && START=(--resume)

# GPU utilisation every 15 s: is the GPU, not Python, the bottleneck? (issue 7 asks for samples/s)
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 15 > "$RUN/gpu.csv" 2>/dev/null &
SMI=$!

HARD_S=$(( TOTAL_S - (SECONDS - T0) - 45 ))
# shellcheck disable=SC2086  # EXTRA is meant to be word-split
timeout --signal=INT --kill-after=30 "$HARD_S" \
    $PY -m deblurcli train --synthetic "$DATA" -o "$RUN" "${START[@]}" "${VAL_ARGS[@]}" \
    --max-minutes "$BUDGET" --batch-size "$BATCH" --crop "$CROP" --device "$DEVICE" \
    --lpips "$LPIPS" --adv "$ADV" --val-every "$VAL_EVERY" --seed "$SEED" "${RECIPE[@]}" $EXTRA
TRAIN_RC=$?
kill "$SMI" 2>/dev/null
echo "== training exited $TRAIN_RC after $(( SECONDS - T0 )) s"

# Weights and the log first: they must come back even if the evaluation is cut short.
for f in best last; do
    [ -f "$RUN/$f.safetensors" ] && cp "$RUN/$f.safetensors" "$OUT/deblur-$MODEL-$f.safetensors"
done
[ -f "$RUN/log.csv" ] && cp "$RUN/log.csv" "$OUT/log.csv"
$PY - "$RUN/log.csv" "$RUN/gpu.csv" <<'PYEOF' || true
import csv, statistics, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r.get("samples_per_s")]
rates = [float(r["samples_per_s"]) for r in rows[len(rows) // 5:]]  # skip the warm-up fifth
if rates:
    print(f"throughput: median {statistics.median(rates):.1f} samples/s over {len(rates)} log rows, last step {rows[-1]['step']}")
vals = [(r["step"], r["val_psnr"]) for r in csv.DictReader(open(sys.argv[1])) if r.get("val_psnr")]
print("validation PSNR by step:", ", ".join(f"{s}: {float(v):.2f}" for s, v in vals) or "none")
try:
    util = [float(l.split(",")[1].split()[0]) for l in open(sys.argv[2]) if l.count(",") >= 2]
    if util:
        print(f"GPU utilisation: median {statistics.median(util):.0f}% over {len(util)} samples")
except (OSError, ValueError, IndexError):
    pass
PYEOF

EVAL_S=$(( TOTAL_S - (SECONDS - T0) - 10 ))
BEST=$RUN/best.safetensors
[ -f "$BEST" ] || BEST=$RUN/last.safetensors
if [ -f "$BEST" ] && [ "$EVAL_S" -ge 30 ]; then
    TORCH_HUB_DIR=$($PY -c "import torch; print(torch.hub.get_dir())")
    LPIPS_NET=none
    [ -f "$TORCH_HUB_DIR/checkpoints/alexnet-owt-7be5be79.pth" ] && LPIPS_NET=alex
    timeout --signal=INT "$EVAL_S" $PY scripts/release_eval.py --weights "$BEST" --val "$VAL" \
        --real-blur "$REAL_BLUR" --images-dir "$RUN/images" --lpips-net "$LPIPS_NET" --device "$DEVICE" \
        --json "$OUT/eval.json" --markdown "$OUT/eval.md" $EVAL_EXTRA
    echo "== evaluation exited $? after $(( SECONDS - T0 )) s"
    if compgen -G "$RUN/images/*.jpg" > /dev/null; then
        tar -cf "$OUT/real_blur_images.tar" -C "$RUN/images" .
    fi
else
    echo "== evaluation skipped (weights: $BEST, seconds left: $EVAL_S)"
fi
echo "== done in $(( SECONDS - T0 )) s; in \$OUT: $(ls "$OUT" | tr '\n' ' ')"
return "$TRAIN_RC"
}

# One log of everything, in $OUT, written as it goes (what is under $OUT comes back even after a kill).
main 2>&1 | tee -a "$OUT/console.log"
exit "${PIPESTATUS[0]}"
