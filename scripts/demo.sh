#!/usr/bin/env bash
# The README's first command: installs what is missing, builds libdiffmine, builds the embedded default
# model (a small random-weight Stable Diffusion 1.x pipeline in the diffusers layout, made by
# tests/reference/make_fixtures.py) and runs the CLI on it. Output lands in out/demo/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
source scripts/env.sh
cargo build --release --quiet
python tests/reference/make_fixtures.py target/fixtures
model=target/fixtures/sd15_tiny
mkdir -p out/demo
bin=target/release/diffmine
$bin info --model "$model"
$bin tokenize --model "$model" --text "Chest X-Ray with Effusion."
$bin roundtrip --model "$model" --image examples/data/chest_like.png --out out/demo/roundtrip.png
$bin denoise --model "$model" --image examples/data/chest_like.png --prompt "Chest X-Ray with Effusion." --t 500 --out out/demo/denoised_t500.png
# The main job: a typicality map (paper Eq. 3, the authors' defaults) and the image's typical patches.
$bin typicality --model "$model" --image examples/data/chest_like.png \
  --prompt "Chest X-Ray with Effusion." --null-prompt "Chest X-Ray." --out out/demo/typicality --patch 16
