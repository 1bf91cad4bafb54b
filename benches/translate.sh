#!/usr/bin/env bash
# Plug-and-Play translation of one image to 3 targets: libdiffmine's CLI vs the diffusers reference of
# the same algorithm (tests/reference/translate_reference.py, via benches/translate_diffusers.py), on
# the random-weight SD 1.5 folder (target/bench/sd15, made by benches/make_sd15.py), f32, CPU, 2 threads.
#
# Usage: benches/translate.sh
#   Environment: ROUNDS (3), SIZE (256: the test image is SIZE × SIZE), INVERSION_STEPS (50), STEPS (50),
#   GUIDANCE (7.5), NICE (-20), IDLE_WAIT_MAX (600 s), SKIP_BUILD (unset: builds the release CLI first).
#   Before each run it waits until the machine is idle, and it records the CPU time the rest of the
#   machine used during the run ("others_cpu_seconds": other people's work on a shared machine).
#
# Each round runs both implementations, each in a fresh process, the order alternating between rounds.
# Same inputs on both sides: a deterministic SIZE × SIZE PNG (smooth waves, made here), source prompt
# "Image of a car.", 3 target prompts, null prompt "", posterior mean latent. Timed region on both
# sides: VAE encode + DDIM inversion + PnP sampling + VAE decode of the 3 results and of the
# reconstruction (libdiffmine: `translate`, as the CLI prints it; diffusers: the same steps in
# translate_diffusers.py); model load and (Python) import are not in it but are in the process wall
# time, also recorded. Note: libdiffmine samples all targets in one batch [source, uncond × 3,
# cond × 3] (7 rows per step); the reference, as the authors' code, runs one target per batch of 3
# (9 rows per step in all).
# Writes target/bench/translate-<time>/results.jsonl and prints medians and the ratio.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/env.sh
ROUNDS=${ROUNDS:-3}
SIZE=${SIZE:-256}
INVERSION_STEPS=${INVERSION_STEPS:-50}
STEPS=${STEPS:-50}
GUIDANCE=${GUIDANCE:-7.5}
NICE=${NICE:--20}
SOURCE="Image of a car."
TARGETS=("Image of a truck." "Image of a bicycle." "Image of a horse.")
source benches/timing.sh translate

target_options=()
for target in "${TARGETS[@]}"; do target_options+=(--target "$target"); done

run_rust() {
  RUST_LOG=diffmine=info timed "$cli" translate --model "$model" --image "$image" --source-prompt "$SOURCE" "${target_options[@]}" \
    --out "$work/diffmine" --steps "$STEPS" --inversion-steps "$INVERSION_STEPS" --guidance "$GUIDANCE"
  local seconds; seconds=$(echo "$run_out" | sed -n 's/^[0-9]* translations in \([0-9.]*\) s$/\1/p')
  echo "{\"impl\": \"libdiffmine\", \"round\": $1, \"seconds\": $seconds, \"process_seconds\": $run_wall, \"cpu_seconds\": $run_cpu, \"others_cpu_seconds\": $run_others}" | tee -a "$results"
}
run_python() {
  timed python benches/translate_diffusers.py "$model" "$image" "$SOURCE" "$(IFS=,; echo "${TARGETS[*]}")" "$INVERSION_STEPS" "$STEPS" "$GUIDANCE"
  echo "$run_out" | python -c 'import json,sys; r=json.loads(sys.stdin.read()); r.update(round=int(sys.argv[1]), process_seconds=float(sys.argv[2]), cpu_seconds=float(sys.argv[3]), others_cpu_seconds=float(sys.argv[4])); print(json.dumps(r))' \
    "$1" "$run_wall" "$run_cpu" "$run_others" | tee -a "$results"
}

log "setting: ${SIZE}x${SIZE} px, $INVERSION_STEPS inversion + $STEPS sampling steps, guidance $GUIDANCE, 3 targets, f32, $ROUNDS round(s)"
for ((r = 1; r <= ROUNDS; r++)); do
  if (( r % 2 )); then log "round $r: libdiffmine"; run_rust "$r"; log "round $r: diffusers"; run_python "$r"
  else log "round $r: diffusers"; run_python "$r"; log "round $r: libdiffmine"; run_rust "$r"; fi
done

python - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = {}
for impl in ("libdiffmine", "diffusers"):
    r = [x for x in rows if x["impl"] == impl]
    med[impl] = {k: statistics.median(x[k] for x in r) for k in ("seconds", "process_seconds")}
    print(f"{impl:12s} translate: " + ", ".join(f"{x['seconds']:.1f}" for x in r) + f" s (median {med[impl]['seconds']:.1f} s); "
          f"process: " + ", ".join(f"{x['process_seconds']:.1f}" for x in r) + f" s (median {med[impl]['process_seconds']:.1f} s)")
for k in ("seconds", "process_seconds"):
    print(f"ratio diffusers / libdiffmine ({'translate' if k == 'seconds' else 'process'}): {med['diffusers'][k] / med['libdiffmine'][k]:.2f}x")
PY
log "results: $results"
