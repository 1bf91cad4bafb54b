#!/usr/bin/env bash
# libdiffmine vs diffusers at real SD 1.5 shapes (random weights), on the CPU with 2 torch threads.
#
# Usage: benches/run.sh
#   Environment: ROUNDS (3), REPEATS (UNet passes per process, 3), ATTEMPTS (3), IDLE_WAIT_MAX (10 s),
#   NICE (-20). The table in BENCHMARKS.md was made with ROUNDS=4 ATTEMPTS=2.
#
# 1. builds the `sd15` bench binary (release) and makes the random-weight SD 1.5 folder in
#    target/bench/sd15 if it is not there (benches/make_sd15.py, ~4.3 GB of f32 safetensors);
# 2. checks the UNet's numerical parity with diffusers once (f32, same inputs);
# 3. runs ROUNDS rounds of: load f32, load bf16, UNet pass f32, UNet pass bf16, libdiffmine and
#    diffusers interleaved (the order alternating between rounds), every measurement in a fresh process
#    so load times and peak RSS (VmHWM) are a real process's; before each it waits for the machine to be
#    idle, runs it at a raised priority, and runs it again (up to ATTEMPTS=3 times) when its threads
#    waited for a CPU for more than 5% of the timed region (other people's work on a shared machine);
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
IDLE_WAIT_MAX=${IDLE_WAIT_MAX:-10}
# Scheduling priority of this script's session while it runs (negative, when the script may): on a
# shared machine other people's builds then take little CPU from a measurement, and both
# implementations get the same. With autogroup scheduling (kernel.sched_autogroup_enabled), a process's
# own nice value only ranks it within its session, so the session's autogroup nice is what counts.
NICE=${NICE:--20}
ATTEMPTS=${ATTEMPTS:-3}
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
nice_cmd=()
if [ -z "$(nice -n "$NICE" true 2>&1)" ]; then nice_cmd=(nice -n "$NICE"); else log "cannot run at niceness $NICE; running at the default"; NICE=0; fi
if [ "$NICE" != 0 ] && [ -w /proc/self/autogroup ] && [ "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null)" = 1 ]; then
  old_group_nice=$(sed -n 's/.* nice //p' /proc/$$/autogroup)
  if echo "$NICE" > /proc/$$/autogroup 2>/dev/null; then
    trap 'echo "$old_group_nice" > /proc/$$/autogroup' EXIT
    log "session autogroup at nice $NICE for the run (restored to $old_group_nice on exit)"
  fi
fi
# CPU time (in clock ticks) the whole machine has spent busy since boot.
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }

# Waits (up to IDLE_WAIT_MAX seconds) until the machine has been under 10% busy for 2 seconds: other
# people's builds on the same cores would otherwise be timed as well.
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
# $results, with the process's wall time and the CPU time other processes used meanwhile. A measurement
# whose threads waited for a CPU (schedstat run delay, reported by the benches themselves) for more than
# 5% of the timed region is discarded and run again (up to ATTEMPTS times; the last attempt is kept
# whatever happened, with its "attempts" count).
measure() {
  local name=$1; shift
  local attempt b0 b1 summary
  for attempt in $(seq 1 "$ATTEMPTS"); do
    wait_idle
    b0=$(busy_ticks)
    if ! /usr/bin/time -f '%e %U %S' -o "$work/time" "${nice_cmd[@]}" "$@" > "$work/out" 2> "$work/err"; then
      log "FAILED: $name"; tail -20 "$work/err" >&2; return 1
    fi
    b1=$(busy_ticks)
    python - "$work/out" "$work/time" "$b0" "$b1" "$hz" "$attempt" > "$work/record" <<'EOF'
import json, os, sys
out, timing, b0, b1, hz, attempt = sys.argv[1:]
wall, user, sys_ = map(float, open(timing).read().split()[-3:])
record = json.loads([l for l in open(out) if l.startswith("{")][-1])
record["process_wall_seconds"] = wall
record["others_cpu_seconds"] = round((int(b1) - int(b0)) / int(hz) - user - sys_, 2)
record["attempts"] = int(attempt)
print(json.dumps(record))
EOF
    summary=$(python -c 'import json,os,sys; r=json.load(open(sys.argv[1])); busy=r["run_delay_seconds"] > 0.05*r["region_seconds"]; print("%s %.3fs, run delay %.2fs, others used %ss CPU" % ("disturbed" if busy else "clean", r["seconds"], r["run_delay_seconds"], r["others_cpu_seconds"]))' "$work/record")
    log "$name (attempt $attempt): ${summary}"
    if [ "${summary%% *}" = clean ] || [ "$attempt" -eq "$ATTEMPTS" ]; then
      cat "$work/record" >> "$results"
      return 0
    fi
  done
}

# The two implementations' command lines (each followed by DTYPE WHAT REPEATS [FILE]).
rust=("$bench_bin" "$model")
diffusers=(python benches/bench_diffusers.py "$model")

log "parity at SD 1.5 shape (f32, batch 2, 4x32x32, context 2x77x768)"
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
  --rounds "$ROUNDS" --repeats "$REPEATS" --nice "$NICE" --attempts "$ATTEMPTS" --idle-wait "$IDLE_WAIT_MAX" --out BENCHMARKS.md
log "raw results: $results; table written to BENCHMARKS.md"
