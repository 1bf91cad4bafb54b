#!/usr/bin/env bash
# Training-step benchmark: `diffmine finetune` against diffusers' training recipe
# (benches/training_diffusers.py) on the random-weight SD 1.5 folder (target/bench/sd15, made by
# benches/make_sd15.py), CPU, 2 threads, four ways each: f32, f32 with gradient checkpointing, bf16
# autocast, bf16 autocast with gradient checkpointing. Each mode prefixed with `lora-` (e.g. lora-f32)
# trains LoRA adapters of rank LORA_RANK on the attention projections instead of the whole UNet
# (`--lora-rank`; in Python diffusers' train_text_to_image_lora.py recipe with peft). Measured: the mean time of the steps after the
# first (the CLI's "steps after the first"; the same span in Python) and the process's peak resident
# memory (weights, gradients, AdamW's moments and the activations the backward pass keeps).
#
# Usage: benches/training.sh
#   Environment: ROUNDS (1), SIZE (256: 32x32 latents), STEPS (4), BATCH (1), NICE (-20),
#   MODES (the four full-finetuning ones, space-separated), LORA_RANK (4), IDLE_WAIT_MAX (600 s), SKIP_BUILD (unset: builds the release
#   CLI first).
# Each run is a fresh process, libdiffmine and diffusers alternating. Writes
# target/bench/training-<time>/results.jsonl and prints a table.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/env.sh
ROUNDS=${ROUNDS:-1}
SIZE=${SIZE:-256}
STEPS=${STEPS:-4}
BATCH=${BATCH:-1}
LORA_RANK=${LORA_RANK:-4}
NICE=${NICE:--20}
source benches/timing.sh training

data="$work/data"
mkdir -p "$data/Nodule" "$data/Effusion"
cp "$image" "$data/Nodule/a.png"
cp "$image" "$data/Effusion/a.png"

# Runs "$@" once the machine is idle; sets peak_gib from /usr/bin/time and run_out.
measured() {
  wait_idle
  /usr/bin/time -f "%M" -o "$work/rss.txt" "${nice_cmd[@]}" "$@" > "$work/out.txt"
  run_out=$(cat "$work/out.txt")
  peak_gib=$(awk '{printf "%.2f", $1 / 1024 / 1024}' "$work/rss.txt")
}
record() { # IMPL MODE ROUND SECONDS_PER_STEP PEAK_GIB
  echo "{\"impl\": \"$1\", \"mode\": \"$2\", \"round\": $3, \"seconds_per_step\": $4, \"peak_rss_gib\": $5}" | tee -a "$results"
}
cli_flags() { # MODE
  case "$1" in
    lora-*) echo "--lora-rank $LORA_RANK $(cli_flags "${1#lora-}")" ;;
    f32) echo "" ;;
    f32-checkpointing) echo "--gradient-checkpointing" ;;
    bf16-autocast) echo "--autocast bfloat16" ;;
    bf16-autocast-checkpointing) echo "--autocast bfloat16 --gradient-checkpointing" ;;
  esac
}
run_rust() { # MODE ROUND
  # shellcheck disable=SC2046
  measured "$cli" finetune --model "$model" --data "$data" --out "$work/finetuned" --steps "$STEPS" --batch "$BATCH" \
    --resolution "$SIZE" $(cli_flags "$1")
  record libdiffmine "$1" "$2" "$(echo "$run_out" | sed -n 's/^steps after the first: \([0-9.]*\) s each$/\1/p')" "$peak_gib"
}
run_python() { # MODE ROUND
  measured python benches/training_diffusers.py "$model" "$data" "$STEPS" "$BATCH" "$SIZE" "$1" "$LORA_RANK"
  record diffusers "$1" "$2" "$(echo "$run_out" | python -c 'import json,sys; print(json.loads(sys.stdin.read())["seconds_per_step"])')" "$peak_gib"
}

read -r -a modes <<< "${MODES:-f32 f32-checkpointing bf16-autocast bf16-autocast-checkpointing}"
log "setting: ${SIZE}x${SIZE} px, batch $BATCH, $STEPS steps per run, $ROUNDS round(s)"
for ((r = 1; r <= ROUNDS; r++)); do
  for mode in "${modes[@]}"; do
    log "round $r: $mode"
    if (( r % 2 )); then run_rust "$mode" "$r"; run_python "$mode" "$r"; else run_python "$mode" "$r"; run_rust "$mode" "$r"; fi
  done
done

python - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| mode | libdiffmine s/step | diffusers s/step | speed ratio | libdiffmine peak GiB | diffusers peak GiB |")
print("|---|---|---|---|---|---|")
for mode in dict.fromkeys(r["mode"] for r in rows):
    get = lambda impl, key: statistics.median(r[key] for r in rows if r["impl"] == impl and r["mode"] == mode)
    ours, theirs = get("libdiffmine", "seconds_per_step"), get("diffusers", "seconds_per_step")
    print(f"| {mode} | {ours:.2f} | {theirs:.2f} | {theirs / ours:.2f}x | {get('libdiffmine', 'peak_rss_gib'):.1f} | {get('diffusers', 'peak_rss_gib'):.1f} |")
PY
