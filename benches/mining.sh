#!/usr/bin/env bash
# Mining benchmark: IMAGES synthetic radiographs of SIZE × SIZE (3 labels, made by
# `diffmine synth`) mined on the random-weight SD 1.5 folder (target/bench/sd15, made by
# benches/make_sd15.py), CPU, 2 threads, N = SAMPLES typicality samples per image in UNet calls of
# 2 × BATCH rows, then the library's defaults: 5 boxes per image of PATCH × PATCH, the label's best 1000,
# DIFT at t = 161 with 8 ensemble members (up_blocks[1]), k-means k = 32 with 10 k-means++ restarts.
#   libdiffmine: `diffmine mine --dtype DTYPE` (its "stage times:" line);
#   reference: benches/mining_diffusers.py, the same pipeline in diffusers + scikit-learn, in f32, or
#   under bf16 autocast against libdiffmine's bfloat16.
#
# Usage: benches/mining.sh
#   Environment: ROUNDS (3), IMAGES (30, a multiple of 3), SIZE (256), SAMPLES (10), BATCH (10), PATCH (64),
#   DTYPES ("float32"; "float32 bfloat16" adds the bf16 pair), NICE (-20), IDLE_WAIT_MAX (600 s),
#   SKIP_BUILD (unset: builds the release CLI first).
# Each round runs every implementation and dtype, each in a fresh process (fresh cache folder for
# libdiffmine), the order reversed every other round. Timed on both sides, per stage: typicality (image
# read, VAE encode, embeddings, UNet, map), patches (pooling and box choice), DIFT (image read, VAE
# encode, embedding, UNet up to up_blocks[1], box features), clustering (k-means and ranking); their sum
# is the compared total. libdiffmine also writes its HTML report (timed apart, not in the total); model
# load and (Python) import are outside the stages but inside the process wall time, also recorded.
# Writes target/bench/mining-<time>/results.jsonl (copied to benches/results-mining.jsonl when the
# setting is the recorded one) and prints medians per image and per stage.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/env.sh
ROUNDS=${ROUNDS:-3}
IMAGES=${IMAGES:-30}
SIZE=${SIZE:-256}
SAMPLES=${SAMPLES:-10}
BATCH=${BATCH:-10}
PATCH=${PATCH:-64}
DTYPES=${DTYPES:-float32}
NICE=${NICE:--20}
PROMPT="Chest X-Ray with {label}."
NULL_PROMPT="Chest X-Ray."
LABELS=3
if (( IMAGES % LABELS )); then echo "IMAGES must be a multiple of $LABELS" >&2; exit 2; fi
source benches/timing.sh mining

# The synthetic set has 4 labels; the first LABELS of them, IMAGES / LABELS images each, as a CSV.
make_data() {
  "$cli" synth --out "$work/synth" --seed 0 --per-label $((IMAGES / LABELS)) --size "$SIZE" >&2
  awk -F, -v labels="$LABELS" 'NR == 1 { print; next } !($2 in seen) { if (n == labels) next; seen[$2] = ++n } { print }' \
    "$work/synth/labels.csv" > "$work/synth/data.csv"
  echo "$work/synth/data.csv"
}
data=$(make_data)

# Adds the round and the `timed` figures to the JSON line on stdin, and records it.
record() { # ROUND
  python -c 'import json,sys; r=json.loads(sys.stdin.read()); r.update(round=int(sys.argv[1]), process_seconds=float(sys.argv[2]), cpu_seconds=float(sys.argv[3]), others_cpu_seconds=float(sys.argv[4])); print(json.dumps(r))' \
    "$1" "$run_wall" "$run_cpu" "$run_others" | tee -a "$results"
}
# The CLI's output as the reference's JSON line: its "stage times:" line and its boxes and clusters.
cli_json() { # DTYPE
  python -c '
import json, re, sys
out, images = sys.stdin.read(), int(sys.argv[2])
stages = dict(re.findall(r"(typicality|patches|DIFT|clustering|report) ([0-9.]+) s", out.split("stage times:")[1].splitlines()[0]))
counts = re.findall(r"^.*: ([0-9]+) patches, ([0-9]+) clusters$", out, re.M)
r = dict(impl="libdiffmine", mode=sys.argv[1], images=images, labels=len(counts))
r.update({f"{s.lower()}_seconds": float(v) for s, v in stages.items()})
r.update(seconds=sum(r[f"{s}_seconds"] for s in ("typicality", "patches", "dift", "clustering")),
         boxes=sum(int(b) for b, _ in counts), clusters=sum(int(c) for _, c in counts))
print(json.dumps(r))' "$1" "$IMAGES"
}
run_rust() { # DTYPE ROUND
  timed "$cli" mine --model "$model" --data "$data" --prompt "$PROMPT" --null-prompt "$NULL_PROMPT" \
    --samples "$SAMPLES" --batch "$BATCH" --patch "$PATCH" --dtype "$1" --out "$work/diffmine_$1_$2"
  echo "$run_out" | cli_json "$1" | record "$2"
}
run_python() { # DTYPE ROUND
  local mode; mode=$([ "$1" = bfloat16 ] && echo bf16-autocast || echo f32)
  timed python benches/mining_diffusers.py "$model" "$data" "$PROMPT" "$NULL_PROMPT" "$SAMPLES" "$BATCH" "$PATCH" "$mode"
  echo "$run_out" | record "$2"
}
run_all() { # ROUND
  for dtype in $DTYPES; do run_rust "$dtype" "$1"; run_python "$dtype" "$1"; done
}
run_all_reversed() { # ROUND
  for dtype in $(echo "$DTYPES" | tr ' ' '\n' | tac); do run_python "$dtype" "$1"; run_rust "$dtype" "$1"; done
}

log "setting: $IMAGES images of ${SIZE}x${SIZE} px ($LABELS labels), N = $SAMPLES in batches of $BATCH, patch $PATCH, dtypes $DTYPES, $ROUNDS round(s)"
for ((r = 1; r <= ROUNDS; r++)); do
  log "round $r"
  if (( r % 2 )); then run_all "$r"; else run_all_reversed "$r"; fi
done

python - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
stages = ("typicality", "patches", "dift", "clustering")
median = lambda runs, key: statistics.median(r[key] for r in runs)
for rust_mode, python_mode in (("float32", "f32"), ("bfloat16", "bf16-autocast")):
    runs = {impl: [r for r in rows if r["impl"] == impl and r["mode"] == mode] for impl, mode in (("libdiffmine", rust_mode), ("diffusers", python_mode))}
    if not all(runs.values()):
        continue
    for impl, rs in runs.items():
        n = rs[0]["images"]
        per_image = ", ".join(f"{s} {median(rs, s + '_seconds') / n:.4f}" for s in stages)
        report = f"; report {median(rs, 'report_seconds'):.2f} s (not in the total)" if "report_seconds" in rs[0] else ""
        print(f"{impl:12s} {rs[0]['mode']:14s} s per image: {per_image}; total {median(rs, 'seconds') / n:.2f}{report}")
        print(f"{'':27s} runs: " + ", ".join(f"{r['seconds']:.1f}" for r in rs) + f" s for {n} images (process median "
              f"{median(rs, 'process_seconds'):.1f} s); {rs[0]['boxes']} boxes, {rs[0]['clusters']} clusters")
    # A stage below the CLI's 0.1 ms resolution has no meaningful ratio.
    ratio = lambda key: f"{median(runs['diffusers'], key) / median(runs['libdiffmine'], key):.2f}x" if median(runs["libdiffmine"], key) > 0 else "-"
    print(f"ratio diffusers / libdiffmine ({rust_mode}): " + ", ".join(f"{s} {ratio(s + '_seconds')}" for s in stages) + f", total {ratio('seconds')}")
PY
# Only the recorded setting replaces the kept raw lines; trial settings stay in target/bench.
if [ "$IMAGES $SIZE $SAMPLES $PATCH" = "30 256 10 64" ]; then cp "$results" benches/results-mining.jsonl; log "copied to benches/results-mining.jsonl"; fi
log "results: $results"
