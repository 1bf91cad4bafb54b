#!/usr/bin/env bash
# Reproduces the embedded demo models in models/demo/ from nothing, with libdiffmine's own training
# code (about 45 minutes on 2 CPU cores):
#   1. a random-initialised small SD-architecture pipeline (scripts/demo/init_model.py);
#   2. a synthetic radiograph-like labelled set with planted elements (diffmine synth);
#   3. the VAE trained as an autoencoder, its scaling factor measured (diffmine train-vae);
#   4. the "pretrained" UNet trained with every caption the null prompt (no label seen);
#   5. the finetuned UNet: the pretrained one finetuned with "Chest X-Ray with {label}." captions.
# The shipped weights are stored in float16; the finetuned folder holds only its UNet and takes the
# other components from the pretrained folder (diffmine's --base option).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
source scripts/env.sh
cargo build --release --quiet --features synthetic

work=${DEMO_WORK:-target/demo-build}
bin=target/release/diffmine
VAE_STEPS=${VAE_STEPS:-600}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-1500}
FINETUNE_STEPS=${FINETUNE_STEPS:-2000}
rm -rf "$work" && mkdir -p "$work"

python scripts/demo/init_model.py "$work/init"
$bin synth --out "$work/train" --seed 1 --per-label 200 --size 64
$bin train-vae --model "$work/init" --data "$work/train" --out "$work/vae" \
  --steps "$VAE_STEPS" --batch 8 --resolution 64 --lr 1e-3 --seed 1
$bin finetune --model "$work/vae" --data "$work/train" --out "$work/pretrained" \
  --steps "$PRETRAIN_STEPS" --batch 16 --resolution 64 --lr 3e-4 --seed 2 \
  --caption "Chest X-Ray." --null-prompt "Chest X-Ray." --dropout 0
$bin finetune --model "$work/pretrained" --data "$work/train" --out "$work/finetuned" \
  --steps "$FINETUNE_STEPS" --batch 16 --resolution 64 --lr 3e-4 --seed 3 \
  --caption "Chest X-Ray with {label}." --null-prompt "Chest X-Ray." --dropout 0.05

out=${DEMO_OUT:-models/demo}
python scripts/demo/export_models.py "$work/pretrained" "$work/finetuned" "$out"
du -sh "$out"
