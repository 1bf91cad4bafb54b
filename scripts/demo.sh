#!/usr/bin/env bash
# The README's first command: installs what is missing, builds libdiffmine and runs the main job on the
# embedded demo models (models/demo: a small SD-architecture pipeline trained here on synthetic
# radiographs, see models/demo/EVALUATION.md): on a held-out generated set whose every label has a
# planted element, a typicality map, mining (typical patches, DIFT, k-means, ranked clusters, the visual
# summary) and the ChestX-ray8-style evaluation of finetuned against pretrained. Output in out/demo/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
source scripts/env.sh
cargo build --release --quiet --features synthetic
bin=target/release/diffmine
finetuned=models/demo/finetuned
pretrained=models/demo/pretrained
rm -rf out/demo && mkdir -p out/demo
$bin info --model "$finetuned" --base "$pretrained"
$bin synth --out out/demo/held-out --seed 1 --split held-out --per-label 10 --dicom out/demo/held-out-dicom
# The DICOM path: a typicality map of a DICOM copy, filed back in its study as a colour overlay.
first_nodule=$(ls out/demo/held-out-dicom/Nodule | head -n 1)
$bin dicom-info --image "out/demo/held-out-dicom/Nodule/$first_nodule"
$bin typicality --model "$finetuned" --base "$pretrained" --image "out/demo/held-out-dicom/Nodule/$first_nodule" \
  --prompt "Chest X-Ray with Nodule." --null-prompt "Chest X-Ray." --samples 50 --out out/demo/typicality --patch 16 \
  --dicom-out overlay
$bin mine --model "$finetuned" --base "$pretrained" --data out/demo/held-out \
  --prompt "Chest X-Ray with {label}." --null-prompt "Chest X-Ray." --out out/demo/mining \
  --samples 20 --patch 16 --per-image 2 --clusters 4 --ensemble 2
$bin cxr8-eval --model "$finetuned" --base "$pretrained" --baseline "$pretrained" --images out/demo/held-out \
  --bbox out/demo/held-out/BBox_List_2017.csv --data-entry out/demo/held-out/Data_Entry_2017.csv \
  --out out/demo/cxr8 --size 64 --samples 20 --t-min 0.1 --t-max 0.7
echo "open out/demo/mining/index.html for the visual summary; out/demo/cxr8/report.md for the evaluation"
