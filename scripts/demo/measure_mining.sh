#!/usr/bin/env bash
# Measures the mining bar (models/demo/EVALUATION.md) on the shipped demo models: generates a held-out set of PER_LABEL
# images per label, mines it with the library's defaults (5 boxes per image, the 1000 best per label,
# DIFT ensemble of 8, k-means 32 with 10 restarts; 16 px patches on the 64 px images) and runs
# mining_bar.py on the report. With 1000 images per label the top 1000 keeps a fifth of the 5000
# candidate boxes, as it does on the paper's sets of thousands of images; with 200 per label it keeps
# every box, distractors included. About 10 minutes at SAMPLES=20 and 70–90 at the default 100 on 2 cores;
# the typicality maps and DIFT features are cached in OUT_DIR, so an interrupted run resumes.
# Usage: bash scripts/demo/measure_mining.sh OUT_DIR [SAMPLES (100)] [PER_LABEL (1000)]
#   Environment: MODEL_ARGS, the model options of `diffmine mine` (default: the shipped finetuned UNet
#   with the pretrained folder's other components; e.g. "--model models/demo/pretrained --lora FILE").
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:?usage: measure_mining.sh OUT_DIR [SAMPLES] [PER_LABEL]}
samples=${2:-100}
per_label=${3:-1000}
cd "$root"
source scripts/env.sh
cargo build --release --quiet --features synthetic --bin diffmine
bin=target/release/diffmine
$bin synth --out "$out/held-out" --seed 1 --split held-out --per-label "$per_label"
read -r -a model_args <<< "${MODEL_ARGS:---model models/demo/finetuned --base models/demo/pretrained}"
$bin mine "${model_args[@]}" --data "$out/held-out" \
  --prompt "Chest X-Ray with {label}." --null-prompt "Chest X-Ray." --out "$out/mining" \
  --samples "$samples" --patch 16 --cache "$out/cache-$samples"
python scripts/demo/mining_bar.py "$out/mining" "$out/held-out"
