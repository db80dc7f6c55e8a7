#!/usr/bin/env bash
# One command for a session with a lent GPU: everything issue 25 asks to measure there, in about 5 minutes,
# on the machine's own Python and torch, with no network.
#
#     bash benchmarks/gpu_wheels.sh                          # here, once: wheels into .gpu-wheels/
#     bash benchmarks/gpu_check.sh [OUTDIR] [--dry-run]      # there (device tool: carry [".gpu-wheels"])
#
# OUTDIR defaults to $OUT (the device tool's folder that comes back), else gpu-check/. --dry-run prints the
# steps and writes nothing. Environment: PYTHON (default python3), GPU_WHEELS (default .gpu-wheels),
# GPU_CHECK_FULL=1 (speed.py over every method instead of the issue's headline rows; takes longer).
#
# Steps, each under its own time limit (a step that fails or runs out is recorded, the next one runs):
#   machine    nvidia-smi, torch/CUDA/cuDNN versions, the commit              -> summary.txt
#   agreement  every registered method on EfficientNet-Lite0 (real weights), two photos, CPU vs CUDA (TF32
#              off), then the compiled path on CUDA vs eager CPU fp32           -> agreement.json
#   tests      the GPU tests (pytest: the tests that skip without CUDA)        -> log.txt
#   plans      imagenet_plan.py --device cuda: bf16, bf16 --compile, fp32       -> plan-*.json
#   bf16       bf16_agreement.py --device cuda: each method's bf16 map against fp32 (the 1 % rule) -> log.txt
#   speed      speed.py --device cuda --tune --models resnet50 --images 64 --compile --precision bf16
#              (eager and compiled rows side by side)                          -> speed.json
# Everything printed goes to log.txt; summary.txt has the machine, each step's exit status and seconds and
# the lines worth reading. At most 8 files, as the device tool brings back.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
OUTDIR=""
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
        *) OUTDIR=$arg ;;
    esac
done
OUTDIR=${OUTDIR:-${OUT:-gpu-check}}
PYTHON=${PYTHON:-python3}
WHEELS=${GPU_WHEELS:-.gpu-wheels}
SITE=${TMPDIR:-/tmp}/jittercam-gpu-site
AGREEMENT=${TMPDIR:-/tmp}/jittercam-gpu-agreement.py
if [ "${GPU_CHECK_FULL:-0}" = 1 ]; then
    SPEED_METHODS=all
    SPEED_LIMIT=900
else
    SPEED_METHODS=gradcam,jittercam,ablationcam,deletion_insertion
    SPEED_LIMIT=70
fi

# name | seconds allowed | command
STEPS=(
    "agreement|65|$PYTHON $AGREEMENT $OUTDIR/agreement.json"
    "tests|30|$PYTHON -m pytest -q -p no:cacheprovider tests/test_methods_baselines.py::test_maps_on_the_inputs_device tests/test_methods_rise.py::test_same_masks_and_map_on_the_gpu tests/test_metrics_perturbation.py::test_on_gpu tests/test_compiled.py::test_compiled_on_cuda_with_cuda_graphs"
    "plan-bf16|30|$PYTHON benchmarks/imagenet_plan.py --device cuda --precision bf16 --images 512 --workers 14 --json $OUTDIR/plan-bf16.json"
    "plan-bf16-compiled|50|$PYTHON benchmarks/imagenet_plan.py --device cuda --precision bf16 --images 512 --workers 14 --compile --json $OUTDIR/plan-bf16-compiled.json"
    "plan-fp32|20|$PYTHON benchmarks/imagenet_plan.py --device cuda --precision fp32 --images 256 --workers 14 --json $OUTDIR/plan-fp32.json"
    "bf16|25|$PYTHON benchmarks/bf16_agreement.py --device cuda --images 4 --methods all"
    "speed|$SPEED_LIMIT|$PYTHON benchmarks/speed.py --device cuda --tune --models resnet50 --images 64 --precision bf16 --compile --rise-masks 2000 --methods $SPEED_METHODS --json $OUTDIR/speed.json"
)

if [ "$DRY" = 1 ]; then
    echo "gpu_check: results to $OUTDIR (dry run: nothing runs)"
    echo "setup: $PYTHON -m pip install --no-index --no-deps --target $SITE $WHEELS/*.whl; PYTHONPATH=src:$SITE"
    echo "machine: nvidia-smi; $PYTHON -c 'torch, CUDA, cuDNN, GPU'; git rev-parse HEAD"
    total=0
    for step in "${STEPS[@]}"; do
        IFS='|' read -r name limit command <<<"$step"
        total=$((total + limit))
        echo "$name (at most ${limit} s): $command"
    done
    echo "at most $total s of steps"
    exit 0
fi

mkdir -p "$OUTDIR"
LOG=$OUTDIR/log.txt
SUMMARY=$OUTDIR/summary.txt
: >"$LOG"
: >"$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }

# -------------------------------------------------------------------------------------------- setup
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$WHEELS"/*.whl >>"$LOG" 2>&1 || say "setup: installing the wheels from $WHEELS failed (see log.txt)"
else
    say "setup: no wheels in $WHEELS (bash benchmarks/gpu_wheels.sh, then carry it); using what is installed"
fi
export PYTHONPATH="src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export JITTERCAM_CACHE_DIR="${TMPDIR:-/tmp}/jittercam-gpu-cache"  # the plans tuned here, not the user's

# ------------------------------------------------------------------------------------------ machine
say "gpu_check $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>&1 | sed 's/^/gpu: /' \
    | tee -a "$SUMMARY"
nvidia-smi >>"$LOG" 2>&1
"$PYTHON" - <<'PY' 2>&1 | tee -a "$SUMMARY"
import os, platform
import torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}, {os.cpu_count()} CPUs")
print("device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")
PY

# ------------------------------------------------------------------------- agreement (CPU vs CUDA)
cat >"$AGREEMENT" <<'PY'
"""Every registered method: maps on the CPU and on CUDA (TF32 off), EfficientNet-Lite0 with its real
weights, two photos; then the compiled path on CUDA against the eager CPU maps, and deletion/insertion.
Relative difference: max |a - b| / max |a|. Written after every method (a step cut short keeps them)."""
import json
import sys
import time
from pathlib import Path

import jittercam  # before torch: OpenMP waits passively

import torch  # noqa: E402

from jittercam import frontend, metrics  # noqa: E402
from jittercam.methods.registry import create, default_names  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
out = Path(sys.argv[1])
photos = sorted(Path("examples/images").glob("*.JPEG"))[:2]
cpu_model = jittercam.load_model("efficientnet_lite0")
gpu_model = jittercam.load_model("efficientnet_lite0").cuda()
card = jittercam.model_card(cpu_model)
x = torch.cat([jittercam.data.to_input(jittercam.data.load_image(p), card) for p in photos])
with torch.no_grad():
    target = cpu_model(x).argmax(1)
result = {"photos": [p.name for p in photos], "eager": {}, "compiled": {}, "seconds": {}}


def relative(a, b):
    a, b = a.float().cpu(), b.float().cpu()
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))


def options(name):
    return {"masks": 1000} if name == "rise" else {}


cpu_maps = {}
for name in default_names():
    start = time.perf_counter()
    try:
        cpu_maps[name] = create(name, cpu_model, **options(name))(x, target)
        gpu = create(name, gpu_model, **options(name))(x.cuda(), target.cuda())
        result["eager"][name] = relative(cpu_maps[name], gpu)
    except Exception as exc:  # noqa: BLE001 - reported, the others go on
        result["eager"][name] = f"{type(exc).__name__}: {exc}"[:300]
    result["seconds"][name] = round(time.perf_counter() - start, 2)
    print(f"eager CPU vs CUDA {name}: {result['eager'][name]}", flush=True)
    out.write_text(json.dumps(result, indent=1))
for name in ("gradcam", "jittercam", "ablationcam", "rise"):
    if name not in cpu_maps or not frontend.takes(name, "compile"):
        continue
    start = time.perf_counter()
    try:
        method = create(name, gpu_model, compile=True, **options(name))
        one = method(x[:1].cuda(), target[:1].cuda())  # one image: CUDA graphs for the one-pass methods
        both = method(x.cuda(), target.cuda())
        result["compiled"][name] = {"one image": relative(cpu_maps[name][:1], one),
                                    "two images": relative(cpu_maps[name], both)}
    except Exception as exc:  # noqa: BLE001
        result["compiled"][name] = f"{type(exc).__name__}: {exc}"[:300]
    result["seconds"][f"{name} compiled"] = round(time.perf_counter() - start, 2)
    print(f"compiled CUDA vs eager CPU {name}: {result['compiled'][name]}", flush=True)
    out.write_text(json.dumps(result, indent=1))
saliency = cpu_maps.get("gradcam", torch.rand(2, 7, 7))
reference = metrics.deletion_insertion(cpu_model, x, saliency, target)
for label, compile in (("eager", False), ("compiled", True)):
    try:
        games = metrics.deletion_insertion(gpu_model, x.cuda(), saliency.cuda(), target.cuda(), compile=compile)
        result[f"deletion_insertion {label}"] = {
            "deletion auc": float((games.deletion.auc.cpu() - reference.deletion.auc).abs().max()),
            "insertion auc": float((games.insertion.auc.cpu() - reference.insertion.auc).abs().max()),
        }
    except Exception as exc:  # noqa: BLE001
        result[f"deletion_insertion {label}"] = f"{type(exc).__name__}: {exc}"[:300]
    print(f"deletion/insertion {label} CUDA vs CPU: {result[f'deletion_insertion {label}']}", flush=True)
out.write_text(json.dumps(result, indent=1))
PY

# ---------------------------------------------------------------------------------------------- steps
for step in "${STEPS[@]}"; do
    IFS='|' read -r name limit command <<<"$step"
    echo "=== $name (at most ${limit} s): $command" >>"$LOG"
    started=$(date +%s)
    # shellcheck disable=SC2086  # the command is split into words on purpose
    timeout --signal=INT --kill-after=10 "$limit" $command >>"$LOG" 2>&1
    status=$?
    seconds=$(( $(date +%s) - started ))
    case $status in
        0) say "$name: ok, ${seconds} s" ;;
        124|130|137) say "$name: stopped at its limit of ${limit} s (partial results kept)" ;;
        *) say "$name: failed (exit $status), ${seconds} s; see log.txt" ;;
    esac
done

# ---------------------------------------------------------------------------------------- the lines
{
    echo "--- worth reading"
    grep -E "^(eager CPU vs CUDA|compiled CUDA vs eager CPU|deletion/insertion)" "$LOG"
    grep -E "^[0-9]+ (passed|failed|skipped)" "$LOG" | tail -3
    for plan in plan-bf16 plan-bf16-compiled plan-fp32; do
        [ -f "$OUTDIR/$plan.json" ] && "$PYTHON" -c "import json,sys; r=json.load(open(sys.argv[1])); \
print(sys.argv[2], {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k.endswith(('ms', 'minutes', 'diff', 'batch'))})" \
            "$OUTDIR/$plan.json" "$plan"
    done
    grep -E "^\| resnet50 \| (gradcam|jittercam|ablationcam|scorecam|deletion)" "$LOG" | cut -c1-220
    grep -E "Jitter-CAM \+ deletion \+ insertion" "$LOG"
} >>"$SUMMARY" 2>/dev/null
sed -n '/^--- worth reading/,$p' "$SUMMARY"
