#!/usr/bin/env bash
# The GPU run: libdiffmine's CUDA path checked against its CPU results and timed against diffusers, in
# one go on a machine that has a GPU, PyPI's torch 2.11.0 and transformers, but no Rust, no diffusers
# and no network. The bundle benches/gpu_pack.sh makes (target/gpu: the stripped library and CLI, the
# fixture pipelines, the diffusers wheel) travels with this checkout's tracked files (benches/,
# bindings/python, models/demo).
#
# Usage: benches/gpu.sh OUT_DIR
#   Environment: DEVICE (cuda; cpu runs the same steps at small sizes: the test suite's run,
#   tests/gpu_script.rs), BUNDLE (target/gpu), PYTHON (python3), STEP_TIMEOUT (seconds per step: 300 on
#   CUDA, 1800 on the CPU).
#
# Steps, each a line or more of JSON in OUT_DIR/results.jsonl (its log in OUT_DIR/log.txt):
#   0. environment: the library pointed at this machine's torch/lib (LD_LIBRARY_PATH, as README "On a
#      GPU machine" says) and checked with ldd; the wheels installed into a scratch folder
#      (pip --no-index --no-deps --target) on PYTHONPATH with the Python binding;
#   1. correctness (benches/gpu_check.py): every operation on DEVICE in each dtype against the CPU in
#      float32, and the demo model's map against float32 ("kind": "check", each with "ok");
#   2. typicality speed at SIZE px on a random-weight SD 1.5 built here (benches/make_sd15.py; on the
#      CPU its --reduced widths): libdiffmine (benches/gpu_bench.py, the binding) at the authors'
#      batch and a larger one, and the authors' loop in diffusers (benches/typicality_diffusers.py,
#      fp16 / bf16 pipeline, torch's SDPA attention), same N, same dtype; the UNet's FLOPs per row
#      ("kind": "flops", "typicality");
#   3. one finetuning configuration, bfloat16 autocast: `diffmine finetune` against diffusers' recipe
#      (benches/training_diffusers.py), the mean step after the first ("kind": "finetune");
#   4. the summary: images per second and their ratio, TFLOP/s and share of the card's dense float16
#      peak, the finetuning step ("kind": "summary").
# A step that fails is recorded ("kind": "error") and the others still run; the exit status is 1 when a
# step failed or a check did not pass.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
OUT=${1:?usage: benches/gpu.sh OUT_DIR}
DEVICE=${DEVICE:-cuda}
BUNDLE=${BUNDLE:-$root/target/gpu}
PYTHON=${PYTHON:-python3}
PROMPT="Image of a car."
NULL_PROMPT="Image."

if [ "$DEVICE" = cpu ]; then
  SIZE=64 SAMPLES=4 AUTHORS_BATCH=2 BIG_BATCH=2 DTYPES="bfloat16" REPEATS=1
  TRAIN_SIZE=64 TRAIN_BATCH=2 TRAIN_STEPS=2 SHAPE=--reduced
  # A shared CPU may run this many times slower than when idle (the test suite's machine).
  STEP_TIMEOUT=${STEP_TIMEOUT:-1800}
else
  # The paper's setting: N = 100 samples, 10 per UNet call (20 rows with both prompts).
  SIZE=512 SAMPLES=100 AUTHORS_BATCH=10 BIG_BATCH=50 DTYPES="float16 bfloat16" REPEATS=3
  TRAIN_SIZE=512 TRAIN_BATCH=8 TRAIN_STEPS=4 SHAPE=
  STEP_TIMEOUT=${STEP_TIMEOUT:-300}
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
results=$OUT/results.jsonl
: > "$results"
: > "$OUT/log.txt"
work=$(mktemp -d "${TMPDIR:-/tmp}/diffmine-gpu.XXXXXX")
trap 'rm -rf "$work"' EXIT
failed=0
log() { echo "[gpu.sh $(date -u +%H:%M:%S)] $*" | tee -a "$OUT/log.txt" >&2; }

# step NAME COMMAND...: runs COMMAND (a program, or a function of this script; its stdout appended to
# the results, its stderr to the log and shown), within STEP_TIMEOUT; a failure is recorded and the
# run goes on.
step() {
  local name=$1 started=$SECONDS status
  shift
  log "$name"
  if [ "$(type -t "$1")" = function ]; then
    timeout "$STEP_TIMEOUT" bash -c "$(declare -f "$1"); $*" >> "$results" 2> >(tee -a "$OUT/log.txt" >&2)
  else
    timeout "$STEP_TIMEOUT" "$@" >> "$results" 2> >(tee -a "$OUT/log.txt" >&2)
  fi
  status=$?
  log "$name: exit $status after $((SECONDS - started)) s"
  if [ "$status" != 0 ]; then
    echo "{\"kind\": \"error\", \"step\": \"$name\", \"exit\": $status}" >> "$results"
    failed=1
  fi
  return "$status"
}

log "device $DEVICE, bundle $BUNDLE ($(cat "$BUNDLE/bundle.json" 2>/dev/null | tr -d '\n '))"
torch_lib=$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') || { log "no torch in $PYTHON"; exit 1; }
export LD_LIBRARY_PATH=$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
missing=$(ldd "$BUNDLE/libdiffmine.so" "$BUNDLE/diffmine" 2>&1 | grep -i "not found")
if [ -n "$missing" ]; then
  log "the library does not load against $torch_lib: $missing"
  echo "{\"kind\": \"error\", \"step\": \"ldd\", \"exit\": 1}" >> "$results"
  exit 1
fi
site=$work/site
if ! "$PYTHON" -m pip install -q --no-index --no-deps --target "$site" "$BUNDLE"/wheels/*.whl 2>&1 | tee -a "$OUT/log.txt" >&2; then
  # Without pip: a pure-Python wheel unpacked is an installed package (its scripts aside).
  log "pip failed; unpacking the wheels instead"
  for wheel in "$BUNDLE"/wheels/*.whl; do "$PYTHON" -m zipfile -e "$wheel" "$site"; done
fi
export PYTHONPATH=$root/bindings/python:$site${PYTHONPATH:+:$PYTHONPATH}
export DIFFMINE_LIB=$BUNDLE/libdiffmine.so HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
cli=$BUNDLE/diffmine
export cli DEVICE  # for the steps that are functions of this script

# 1. correctness
step "checks on $DEVICE" "$PYTHON" benches/gpu_check.py "$DEVICE" "$BUNDLE/fixtures" models/demo "$cli" "$results"

# 2. typicality speed
model=$work/sd15
step "random-weight SD 1.5 ${SHAPE:-(full size)}" "$PYTHON" benches/make_sd15.py "$model" $SHAPE
image=$work/car.png
"$PYTHON" - "$image" "$SIZE" <<'PY'
import sys
import numpy as np
from PIL import Image
n = int(sys.argv[2]); y, x = np.mgrid[0:n, 0:n] / (n - 1)
rgb = [0.5 + 0.4 * np.sin(2 * np.pi * (fy * y + fx * x) + p) for fy, fx, p in ((1.0, 2.0, 0.3), (2.5, 0.5, 1.7), (1.5, 1.5, 4.0))]
Image.fromarray((np.stack(rgb, -1) * 255).round().astype(np.uint8)).save(sys.argv[1])
PY
step "UNet FLOPs at $SIZE px" "$PYTHON" benches/gpu_bench.py flops "$model" "$SIZE" "$SIZE" "$DEVICE"
for dtype in $DTYPES; do
  mode=$([ "$dtype" = float16 ] && echo fp16 || echo bf16)
  step "diffusers typicality $mode, N $SAMPLES, batch $AUTHORS_BATCH" \
    "$PYTHON" benches/typicality_diffusers.py "$model" "$image" "$PROMPT" "$NULL_PROMPT" "$SAMPLES" "$AUTHORS_BATCH" "$mode" "$DEVICE" "$REPEATS"
  batches=$(echo "$AUTHORS_BATCH $BIG_BATCH" | tr ' ' '\n' | uniq | paste -sd,)
  step "libdiffmine typicality $dtype, N $SAMPLES, batches $batches" \
    "$PYTHON" benches/gpu_bench.py typicality "$model" "$image" "$DEVICE" "$dtype" "$SAMPLES" "$batches" "$REPEATS"
done

# 3. finetuning step
data=$work/data
export model data work TRAIN_SIZE TRAIN_BATCH TRAIN_STEPS
"$PYTHON" - "$data" "$TRAIN_SIZE" "$TRAIN_BATCH" <<'PY'
import os, sys
import numpy as np
from PIL import Image
out, n, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
y, x = np.mgrid[0:n, 0:n] / (n - 1)
for i in range(count):
    label = ("Nodule", "Effusion")[i % 2]
    os.makedirs(f"{out}/{label}", exist_ok=True)
    rgb = [0.5 + 0.4 * np.sin(2 * np.pi * (fy * y + fx * x) + p + i) for fy, fx, p in ((1.0, 2.0, 0.3), (2.5, 0.5, 1.7), (1.5, 1.5, 4.0))]
    Image.fromarray((np.stack(rgb, -1) * 255).round().astype(np.uint8)).save(f"{out}/{label}/{i}.png")
PY
finetune_line() { # prints the CLI's mean step as a JSON line
  local seconds
  "$cli" finetune --quiet --model "$model" --data "$data" --out "$work/finetuned" --steps "$TRAIN_STEPS" --batch "$TRAIN_BATCH" \
    --resolution "$TRAIN_SIZE" --autocast bfloat16 --device "$DEVICE" > "$work/finetune.txt" || return 1
  seconds=$(sed -n 's/^steps after the first: \([0-9.]*\) s each$/\1/p' "$work/finetune.txt")
  [ -n "$seconds" ] || { cat "$work/finetune.txt" >&2; return 1; }
  echo "{\"kind\": \"finetune\", \"impl\": \"libdiffmine\", \"mode\": \"bf16-autocast\", \"device\": \"$DEVICE\", \"batch\": $TRAIN_BATCH, \"resolution\": $TRAIN_SIZE, \"steps\": $TRAIN_STEPS, \"seconds_per_step\": $seconds}"
  rm -rf "$work/finetuned"
}
step "libdiffmine finetuning, ${TRAIN_SIZE} px, batch $TRAIN_BATCH, bf16 autocast" finetune_line
step "diffusers finetuning, ${TRAIN_SIZE} px, batch $TRAIN_BATCH, bf16 autocast" \
  "$PYTHON" benches/training_diffusers.py "$model" "$data" "$TRAIN_STEPS" "$TRAIN_BATCH" "$TRAIN_SIZE" bf16-autocast 4 "$DEVICE"

# 4. summary
step summary "$PYTHON" benches/gpu_bench.py summary "$results"
tail -1 "$results" >&2
[ "$(grep -c '"ok": false' "$results")" = 0 ] || failed=1
log "done: $([ "$failed" = 0 ] && echo "every step ran and every check passed" || echo "FAILED (see kind error / ok false in $results)")"
exit "$failed"
