#!/usr/bin/env bash
# libdiffmine vs diffusers at real SD 1.5 shapes (random weights), on the CPU with 2 torch threads.
#
# Usage: benches/run.sh            (ROUNDS=3 REPEATS=3 by default; both can be set in the environment)
#
# 1. builds the `sd15` bench binary (release) and makes the random-weight SD 1.5 folder in
#    target/bench/sd15 if it is not there (benches/make_sd15.py, ~4.3 GB of f32 safetensors);
# 2. checks the UNet's numerical parity with diffusers once (f32, same inputs);
# 3. runs ROUNDS rounds of: load f32, load bf16, UNet pass f32, UNet pass bf16, libdiffmine and
#    diffusers interleaved (the order alternating between rounds), every measurement in a fresh process
#    so load times and peak RSS (VmHWM) are a real process's; before each it waits for the machine to be
#    idle and it records how much CPU other processes used meanwhile;
# 4. writes the medians, ratios and the raw figures into BENCHMARKS.md (benches/report.py).
#
# The weight files are read once before the first round, so every load finds them in the page cache:
# the load figures are warm-cache figures, for both implementations alike.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/env.sh
ROUNDS=${ROUNDS:-3}
REPEATS=${REPEATS:-3}
IDLE_WAIT_MAX=${IDLE_WAIT_MAX:-180}
model="$root/target/bench/sd15"
work="$root/target/bench/run-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$work"
results="$work/results.jsonl"
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

log "building the sd15 bench (release)"
bench_bin=$(cargo build --release --bench sd15 --message-format=json-render-diagnostics \
  | python -c 'import json,sys
exe=[m["executable"] for m in map(json.loads, sys.stdin) if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["name"]=="sd15"]
print(exe[-1])')
log "bench binary: $bench_bin"

log "making the random-weight SD 1.5 folder if needed: $model"
python benches/make_sd15.py "$model" >&2

log "reading the weight files into the page cache"
cat "$model"/*/*.safetensors > /dev/null
# On a VM, the first process to touch guest memory the host has not backed yet pays for that; touch
# as much as the largest measurement will use once, so neither implementation pays it in round 1.
log "touching 8 GiB of memory once"
python -c 'import torch; x = torch.empty(2 * 1024**3, dtype=torch.float32); x.fill_(1.0)'

hz=$(getconf CLK_TCK)
# CPU time (in clock ticks) the whole machine has spent busy since boot.
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }

# Waits (up to IDLE_WAIT_MAX seconds) until the machine has been under 10% busy for 2 seconds: other people's
# builds on the same 2 cores would otherwise be timed as well.
wait_idle() {
  local waited=0 b0 b1
  while :; do
    b0=$(busy_ticks); sleep 2; b1=$(busy_ticks)
    if [ $(( (b1 - b0) * 100 )) -lt $(( 10 * 2 * hz * $(nproc) )) ] || [ $waited -ge "$IDLE_WAIT_MAX" ]; then
      [ $waited -gt 0 ] && log "waited ${waited}s for the machine to be idle"
      return 0
    fi
    waited=$((waited + 2))
  done
}

# measure NAME COMMAND...: runs one measurement in a fresh process and appends its JSON line to
# $results, with the process's wall time and the CPU time other processes used meanwhile.
measure() {
  local name=$1; shift
  wait_idle
  local b0 b1
  b0=$(busy_ticks)
  if ! /usr/bin/time -f '%e %U %S' -o "$work/time" "$@" > "$work/out" 2> "$work/err"; then
    log "FAILED: $name"; tail -20 "$work/err" >&2; return 1
  fi
  b1=$(busy_ticks)
  python - "$work/out" "$work/time" "$b0" "$b1" "$hz" "$name" >> "$results" <<'EOF'
import json, sys
out, timing, b0, b1, hz, name = sys.argv[1:]
wall, user, sys_ = map(float, open(timing).read().split()[-3:])
record = json.loads([l for l in open(out) if l.startswith("{")][-1])
record["process_wall_seconds"] = wall
record["others_cpu_seconds"] = round((int(b1) - int(b0)) / int(hz) - user - sys_, 2)
print(json.dumps(record))
EOF
  log "$name: $(tail -1 "$results" | python -c 'import json,sys; r=json.load(sys.stdin); print("%.3fs, others used %ss CPU" % (r["seconds"], r["others_cpu_seconds"]))')"
}

# The two implementations' command lines (each followed by DTYPE WHAT REPEATS [FILE]).
rust=("$bench_bin" "$model")
diffusers=(python benches/bench_diffusers.py "$model")

log "parity at SD 1.5 shape (f32, batch 2, 4x32x32, context 2x77x768)"
wait_idle
"${diffusers[@]}" f32 parity 1 "$work/parity.safetensors" 2>/dev/null | tee "$work/parity_diffusers.json" >&2
"${rust[@]}" f32 parity 1 "$work/parity.safetensors" | tee "$work/parity.json" >&2

for round in $(seq 1 "$ROUNDS"); do
  for m in "load f32" "load bf16" "unet f32" "unet bf16"; do
    set -- $m
    what=$1 dtype=$2
    if [ $((round % 2)) -eq 1 ]; then order="rust diffusers"; else order="diffusers rust"; fi
    for impl in $order; do
      declare -n cmd=$impl
      measure "round $round $impl $what $dtype" "${cmd[@]}" "$dtype" "$what" "$REPEATS"
      unset -n cmd
    done
  done
done

python benches/report.py --results "$results" --parity "$work/parity.json" --model "$model" \
  --rounds "$ROUNDS" --repeats "$REPEATS" --out BENCHMARKS.md
log "raw results: $results; table written to BENCHMARKS.md"
