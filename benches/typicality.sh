#!/usr/bin/env bash
# Speed half of the typicality time-to-quality benchmark: one typicality map of a 256 x 256
# image on the random-weight SD 1.5 folder (target/bench/sd15, made by benches/make_sd15.py), CPU,
# 2 threads, batches of 10 samples x 2 prompts, four ways:
#   libdiffmine f32, libdiffmine bf16 (the whole model in bfloat16: `--dtype bfloat16`),
#   diffusers f32 and diffusers bf16 autocast (benches/typicality_diffusers.py, the authors' loop).
# The per-sample time of each, with the samples each drawing mode needs for the authors' quality
# (benches/typicality_quality.py), gives the time-to-quality written in BENCHMARKS.md.
#
# Usage: benches/typicality.sh
#   Environment: ROUNDS (3), SIZE (256), SAMPLES (20), BATCH (10), NICE (-20), IDLE_WAIT_MAX (600 s),
#   SKIP_BUILD (unset: builds the release CLI first).
# Each round runs the four, each in a fresh process, the order reversed every other round. Timed
# region on both sides: VAE encode + posterior sample, text embeddings of both prompts, the UNet
# batches and the upsampled mean (libdiffmine: the CLI's "typicality map HxW in X s"); load and
# (Python) import are outside it. Writes target/bench/typicality-<time>/results.jsonl and prints medians.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/env.sh
ROUNDS=${ROUNDS:-3}
SIZE=${SIZE:-256}
SAMPLES=${SAMPLES:-20}
BATCH=${BATCH:-10}
NICE=${NICE:--20}
PROMPT="Image of a car."
NULL_PROMPT="Image."
source benches/timing.sh typicality

record() { # IMPL MODE ROUND SECONDS
  echo "{\"impl\": \"$1\", \"mode\": \"$2\", \"round\": $3, \"seconds\": $4, \"process_seconds\": $run_wall, \"cpu_seconds\": $run_cpu, \"others_cpu_seconds\": $run_others}" | tee -a "$results"
}
run_rust() { # DTYPE ROUND
  timed "$cli" typicality --model "$model" --image "$image" --prompt "$PROMPT" --null-prompt "$NULL_PROMPT" \
    --samples "$SAMPLES" --batch "$BATCH" --dtype "$1" --out "$work/diffmine_$1"
  record libdiffmine "$1" "$2" "$(echo "$run_out" | sed -n 's/^typicality map .* in \([0-9.]*\) s:.*$/\1/p')"
}
run_python() { # MODE ROUND
  timed python benches/typicality_diffusers.py "$model" "$image" "$PROMPT" "$NULL_PROMPT" "$SAMPLES" "$BATCH" "$1"
  record diffusers "$1" "$2" "$(echo "$run_out" | python -c 'import json,sys; print(json.loads(sys.stdin.read())["seconds"])')"
}
run_all() { # ROUND
  run_rust float32 "$1"; run_python f32 "$1"; run_rust bfloat16 "$1"; run_python bf16-autocast "$1"
}
run_all_reversed() { # ROUND
  run_python bf16-autocast "$1"; run_rust bfloat16 "$1"; run_python f32 "$1"; run_rust float32 "$1"
}

log "setting: ${SIZE}x${SIZE} px, N = $SAMPLES in batches of $BATCH, $ROUNDS round(s)"
for ((r = 1; r <= ROUNDS; r++)); do
  log "round $r"
  if (( r % 2 )); then run_all "$r"; else run_all_reversed "$r"; fi
done

python - "$results" "$SAMPLES" <<'PY'
import json, statistics, sys
rows, samples = [json.loads(l) for l in open(sys.argv[1])], int(sys.argv[2])
for impl, mode in (("libdiffmine", "float32"), ("diffusers", "f32"), ("libdiffmine", "bfloat16"), ("diffusers", "bf16-autocast")):
    runs = [r["seconds"] for r in rows if r["impl"] == impl and r["mode"] == mode]
    median = statistics.median(runs)
    print(f"{impl:12s} {mode:14s}: " + ", ".join(f"{s:.1f}" for s in runs) + f" s (median {median:.1f} s, {median / samples:.2f} s per sample)")
PY
log "results: $results"
