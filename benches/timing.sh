# Sourced by the benchmark scripts (benches/mining.sh, benches/translate.sh, benches/typicality.sh,
# benches/umap.sh) with the benchmark's name as its argument, once they have set root, SIZE and NICE:
# builds the release CLI (unless SKIP_BUILD is set), makes the random-weight SD 1.5 folder and a
# SIZE x SIZE test image (neither with a second argument --no-model, for benchmarks that need no model),
# and defines `timed`, which runs a measured command once the machine is idle, at high priority, and
# records how much CPU time the rest of the machine used meanwhile.
model="$root/target/bench/sd15"
work="$root/target/bench/$1-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$work"
results="$work/results.jsonl"
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
needs_model=$([ "${2:-}" = --no-model ] && echo 0 || echo 1)
if [ "$needs_model" = 1 ] && [ -z "${SKIP_BUILD:-}" ]; then log "building the CLI (release)"; cargo build --release --features synthetic --bin diffmine >&2; fi
cli="$root/target/release/diffmine"

hz=$(getconf CLK_TCK)
# CPU time (clock ticks) the whole machine has spent busy since boot.
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
# Waits (up to IDLE_WAIT_MAX s, default 600) until the machine has been under 10% busy for 2 s.
wait_idle() {
  local waited=0 b0 b1
  while :; do
    b0=$(busy_ticks); sleep 2; b1=$(busy_ticks)
    if [ $(( (b1 - b0) * 100 )) -lt $(( 10 * 2 * hz * $(nproc) )) ] || [ $waited -ge "${IDLE_WAIT_MAX:-600}" ]; then
      [ $waited -gt 0 ] && log "waited ${waited}s for the machine to be idle"
      return 0
    fi
    waited=$((waited + 2))
  done
}
# Runs "$@" (stdout to $run_out), timing it: sets run_wall (s), run_cpu (the process tree's user+sys, s)
# and run_others (CPU seconds the rest of the machine used meanwhile: other people's work).
timed() {
  wait_idle
  local t0 t1 b0 b1
  b0=$(busy_ticks); t0=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o "$work/time.txt" "${nice_cmd[@]}" "$@" > "$work/out.txt"
  t1=$(date +%s.%N); b1=$(busy_ticks)
  run_out=$(cat "$work/out.txt")
  run_wall=$(echo "$t1 - $t0" | bc)
  run_cpu=$(awk '{print $1 + $2}' "$work/time.txt")
  run_others=$(echo "($b1 - $b0) / $hz - $run_cpu" | bc -l | awk '{printf "%.1f", ($1 < 0 ? 0 : $1)}')
}

nice_cmd=()
if [ -z "$(nice -n "$NICE" true 2>&1)" ]; then nice_cmd=(nice -n "$NICE"); else log "cannot run at niceness $NICE; running at the default"; fi


# Makes the random-weight SD 1.5 folder if it is missing, reads its weight files into the page cache,
# and touches 8 GiB of memory once: on a VM the first process to touch guest memory the host has not
# backed yet pays for it (it made a 64 px test run 2.4x slower), so no measured process should.
prepare_sd15() {
  python benches/make_sd15.py "$1" >&2
  log "reading the weight files into the page cache"
  cat "$1"/*/*.safetensors > /dev/null
  log "touching 8 GiB of memory once"
  python -c 'import torch; x = torch.empty(2 * 1024**3, dtype=torch.float32); x.fill_(1.0)'
}

# A deterministic SIZE x SIZE RGB PNG of smooth waves: make_test_image PATH SIZE.
make_test_image() {
  python - "$1" "$2" <<'PY'
import sys, numpy as np
from PIL import Image
n = int(sys.argv[2]); y, x = np.mgrid[0:n, 0:n] / (n - 1)
rgb = [0.5 + 0.4 * np.sin(2 * np.pi * (fy * y + fx * x) + p) for fy, fx, p in ((1.0, 2.0, 0.3), (2.5, 0.5, 1.7), (1.5, 1.5, 4.0))]
Image.fromarray((np.stack(rgb, -1) * 255).round().astype(np.uint8)).save(sys.argv[1])
PY
}

if [ "$needs_model" = 1 ]; then
  prepare_sd15 "$model"
  image="$work/car_${SIZE}.png"
  make_test_image "$image" "$SIZE"
fi
