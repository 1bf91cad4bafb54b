#!/usr/bin/env bash
# Mining on Ray (python -m diffmine.distributed mine) against `diffmine mine` on the same set, on this
# machine: IMAGES generated radiographs of SIZE px (`diffmine synth`, 4 labels) mined with the demo
# model (models/demo, where the engine's own cost shows most), N = SAMPLES typicality samples in UNet
# calls of 2 × BATCH rows, PATCH px boxes, DIFT with ENSEMBLE members. Runs, each in a fresh process
# with a fresh output and working folder: `diffmine mine`, then the Ray pipeline with 1 and with 2
# model actors on a one-node Ray cluster (--num-cpus 4) started in a network namespace of its own.
# Records per run: process wall time and the stage times each prints; derives images per second and
# Ray's overhead per image (its typicality stage, which includes reading, keying, queueing, the actors'
# Parquet writes and the hand-back to the driver, minus `diffmine mine`'s typicality stage, per image).
#
# Usage: benches/ray.sh     Environment: ROUNDS (1), IMAGES (24, a multiple of 4), SIZE (64), SAMPLES (8),
#   BATCH (4), PATCH (16), ENSEMBLE (2), RAY_BATCH (2, images per actor batch), NICE (-20),
#   IDLE_WAIT_MAX (600 s), SKIP_BUILD.
# Writes target/bench/ray-<time>/results.jsonl (copied to benches/results-ray.jsonl) and prints a table.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ -z "${RAY_BENCH_NETNS:-}" ]; then
  # Ray binds every interface: the cluster and the driver run in a namespace with only loopback.
  exec unshare -n env RAY_BENCH_NETNS=1 bash "$0" "$@"
fi
ip link set lo up
source scripts/env.sh
ROUNDS=${ROUNDS:-1} IMAGES=${IMAGES:-24} SIZE=${SIZE:-64} SAMPLES=${SAMPLES:-8} BATCH=${BATCH:-4} PATCH=${PATCH:-16}
ENSEMBLE=${ENSEMBLE:-2} RAY_BATCH=${RAY_BATCH:-2} NICE=${NICE:--20}
if (( IMAGES % 4 )); then echo "IMAGES must be a multiple of 4" >&2; exit 2; fi
source benches/timing.sh ray --no-model
[ -n "${SKIP_BUILD:-}" ] || { log "building the CLI and the library (release)"; cargo build --release --features synthetic >&2; }
python=$root/.deps/venv/bin/python
# The driver and the workers (which inherit the environment of `ray start`) use this build's binding.
export DIFFMINE_LIB=$root/target/release/libdiffmine.so PYTHONPATH=$root/bindings/python
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$work/ray-token RAY_USAGE_STATS_ENABLED=0
"$python" -c 'import secrets; print(secrets.token_hex(32))' > "$RAY_AUTH_TOKEN_PATH"
ray() { timeout 120 "$python" -m ray.scripts.scripts "$@"; }
netns=$(readlink /proc/self/ns/net)
stop_cluster() {
  ray stop --force >/dev/null 2>&1 || true
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" = "$$" ] && continue
    [ "$(readlink "$p/ns/net" 2>/dev/null)" = "$netns" ] && kill -9 "$pid" 2>/dev/null || true
  done
}
trap stop_cluster EXIT
ray start --head --node-ip-address=127.0.0.1 --port=6379 --include-dashboard=false --num-cpus=4 \
  --object-store-memory=200000000 --disable-usage-stats --temp-dir="$(mktemp -d /tmp/ray-bench.XXXX)" >&2

"$cli" synth --out "$work/set" --seed 0 --per-label $((IMAGES / 4)) --size "$SIZE" >&2
options=(--model models/demo/finetuned --base models/demo/pretrained --data "$work/set" --samples "$SAMPLES" --batch "$BATCH"
  --patch "$PATCH" --per-image 2 --top 10 --ensemble "$ENSEMBLE" --clusters 3 --restarts 2)

# The run's output as a JSON line: its stage times and wall time.
record() { # IMPL ACTORS ROUND
  echo "$run_out" | "$python" -c '
import json, re, sys
impl, actors, round_, wall, others, images = sys.argv[1:]
line = sys.stdin.read().split("stage times:")[1].splitlines()[0]
stages = {name.lower(): float(v) for name, v in re.findall(r"(\w+) ([0-9.]+) s", line)}
print(json.dumps(dict(impl=impl, actors=int(actors), round=int(round_), images=int(images), process_seconds=float(wall),
                      others_cpu_seconds=float(others), stages=stages)))' "$1" "$2" "$3" "$run_wall" "$run_others" "$IMAGES" | tee -a "$results"
}
for round in $(seq "$ROUNDS"); do
  log "round $round: diffmine mine"
  timed "$cli" mine "${options[@]}" --out "$work/mine-$round"
  record diffmine 1 "$round"
  for actors in 1 2; do
    log "round $round: Ray, $actors actors"
    timed "$python" -m diffmine.distributed mine "${options[@]}" --out "$work/ray$actors-$round" --workdir "$work/workdir$actors-$round" \
      --address 127.0.0.1:6379 --actors-per-node "$actors" --batch-size "$RAY_BATCH"
    record ray "$actors" "$round"
  done
done
cp "$results" benches/results-ray.jsonl
"$python" - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def median(impl, actors, key):
    values = [r["process_seconds"] if key == "wall" else r["stages"][key] for r in rows if r["impl"] == impl and r["actors"] == actors]
    return statistics.median(values)
images = rows[0]["images"]
mine_typicality = median("diffmine", 1, "typicality")
print(f"{'run':<22}{'wall s':>9}{'images/s':>10}{'typicality s':>14}{'Ray overhead s/image':>22}")
for impl, actors in (("diffmine", 1), ("ray", 1), ("ray", 2)):
    wall, typicality = median(impl, actors, "wall"), median(impl, actors, "typicality")
    overhead = "" if impl == "diffmine" else f"{(typicality - mine_typicality) / images:.3f}"
    name = "diffmine mine" if impl == "diffmine" else f"Ray, {actors} actor{'s' * (actors > 1)}"
    print(f"{name:<22}{wall:>9.1f}{images / wall:>10.3f}{typicality:>14.1f}{overhead:>22}")
PY
