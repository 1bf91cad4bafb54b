#!/usr/bin/env bash
# A LoRA finetune of the demo's pretrained UNet, evaluated as the shipped full finetune is
# (models/demo/EVALUATION.md):
#   1. rank-RANK adapters trained on the demo's training set (as scripts/make_demo_model.sh makes it:
#      seed 1, 200 images per label, 64 px) with the full finetune's captions, null prompt, dropout,
#      batch and seed, for STEPS steps, timed with the process's peak memory; the full finetune's cost
#      per step is timed beside it over COST_STEPS steps of the same run;
#   2. held-out average precision and sign test (scripts/demo/evaluate.py --lora-only, 10 held-out
#      images per label);
#   3. the mining shares on PER_LABEL held-out images per label at N = SAMPLES
#      (scripts/demo/measure_mining.sh with the adapter).
# Usage: bash scripts/demo/lora.sh OUT_DIR
#   Environment: RANK (8), STEPS (2000), LR (2e-3), COST_STEPS (100), SAMPLES (20), PER_LABEL (200).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$(realpath -m "${1:?usage: lora.sh OUT_DIR}")
RANK=${RANK:-8}
STEPS=${STEPS:-2000}
LR=${LR:-2e-3}
COST_STEPS=${COST_STEPS:-100}
SAMPLES=${SAMPLES:-20}
PER_LABEL=${PER_LABEL:-200}
cd "$root"
source scripts/env.sh
cargo build --release --quiet --features synthetic --bin diffmine
bin=target/release/diffmine
# The binding of this checkout, on the library just built.
export PYTHONPATH="$root/bindings/python${PYTHONPATH:+:$PYTHONPATH}" DIFFMINE_LIB="$root/target/release/libdiffmine.so"
mkdir -p "$out"
[ -d "$out/train" ] || $bin -q synth --out "$out/train" --seed 1 --per-label 200 --size 64
[ -d "$out/held-out" ] || $bin -q synth --out "$out/held-out" --seed 1 --split held-out --per-label 10
common=(--model models/demo/pretrained --data "$out/train" --batch 16 --resolution 64 --seed 3
  --caption "Chest X-Ray with {label}." --null-prompt "Chest X-Ray." --dropout 0.05)
adapter=$out/lora/pytorch_lora_weights.safetensors
if [ ! -f "$adapter" ]; then  # a second run of the script evaluates the adapter it trained
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$out/load.txt"
  /usr/bin/time -f "%e s, peak %M KiB" -o "$out/full-cost.time" \
    $bin -q finetune "${common[@]}" --out "$out/full-cost" --steps "$COST_STEPS" --lr 3e-4
  /usr/bin/time -f "%e s, peak %M KiB" -o "$out/lora.time" \
    $bin -q finetune "${common[@]}" --out "$out/lora" --steps "$STEPS" --lr "$LR" --lora-rank "$RANK"
  echo "load after training: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/load.txt"
fi
echo "full finetune, $COST_STEPS steps: $(cat "$out/full-cost.time")" | tee "$out/summary.txt"
echo "LoRA rank $RANK, $STEPS steps: $(cat "$out/lora.time")" | tee -a "$out/summary.txt"
python scripts/demo/evaluate.py models/demo/pretrained models/demo/finetuned "$out/held-out" "$out/evaluation.md" \
  --lora "$adapter" --lora-only
cat "$out/evaluation.md"
MODEL_ARGS="--model models/demo/pretrained --lora $adapter" \
  bash scripts/demo/measure_mining.sh "$out/mining" "$SAMPLES" "$PER_LABEL" | tee "$out/mining.txt"
