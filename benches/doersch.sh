#!/usr/bin/env bash
# Typicality mining against the discriminative baseline (Doersch et al.), on the demo's synthetic
# radiographs (`diffmine synth --size SIZE`, 4 labels, the planted element of each image known):
#   quality: for each of QUALITY_SIZES images per label, the share of the shown elements (top 6
#     clusters with 6 members or more / top 6 detectors, 6 elements each) that hold their image's planted
#     element's centre, and chance (the share of all 64 px windows at stride 8 that do);
#   cost: for each of COST_SIZES images per label (doubling), wall time per stage and the process's
#     peak memory (/usr/bin/time), a fresh process per point, and the growth exponents fitted to them.
# Typicality mining runs the demo models (models/demo) on the images resized to the demo's 64 px
# (`--resize 64`), with 16 px patches (64 px at SIZE 256) and N = SAMPLES typicality samples; the
# baseline runs at its native settings on the SIZE px images unless the environment reduces them.
#
# Usage: benches/doersch.sh
#   Environment: SIZE (256), QUALITY_SIZES ("100 200"), COST_SIZES ("25 50 100 200 400"), SAMPLES (100),
#   CLUSTERS (k of typicality mining's k-means: 32; on small sets fewer, so that clusters reach the 6
#   members a shown cluster needs),
#   CANDIDATES (25000), DETECTORS (1000), NEGATIVES (10000), NEGATIVE_POOL (25000), FINAL (50),
#   PRECISION (float32), METHODS ("typicality doersch"), SKIP_BUILD (unset: builds the release CLI).
# An empty QUALITY_SIZES or COST_SIZES runs none of its points. Writes
# target/bench/doersch-<time>/results.jsonl and the Markdown tables (tables.md) beside it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/env.sh
SIZE=${SIZE:-256}
QUALITY_SIZES=${QUALITY_SIZES-"100 200"}
COST_SIZES=${COST_SIZES-"25 50 100 200 400"}
SAMPLES=${SAMPLES:-100}
CANDIDATES=${CANDIDATES:-25000}
DETECTORS=${DETECTORS:-1000}
NEGATIVES=${NEGATIVES:-10000}
NEGATIVE_POOL=${NEGATIVE_POOL:-25000}
FINAL=${FINAL:-50}
PRECISION=${PRECISION:-float32}
CLUSTERS=${CLUSTERS:-32}
METHODS=${METHODS:-"typicality doersch"}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet --features synthetic --bin diffmine
cli=$root/target/release/diffmine
work=$root/target/bench/doersch-$(date +%Y%m%d-%H%M%S)
mkdir -p "$work"
results=$work/results.jsonl
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$work/load.txt"

dataset() { # PER_LABEL -> folder
  local dir=$work/set-$1
  [ -d "$dir" ] || "$cli" -q synth --out "$dir" --seed 0 --per-label "$1" --size "$SIZE" >&2
  echo "$dir"
}

# Runs one method on a set in a fresh process; prints the JSON of its stage times and peak memory.
run_method() { # METHOD SET OUT
  local method=$1 set=$2 out=$3
  rm -rf "$out"
  if [ "$method" = typicality ]; then
    /usr/bin/time -f "%M" -o "$out.rss" "$cli" -q mine --model models/demo/finetuned --base models/demo/pretrained \
      --data "$set" --prompt "Chest X-Ray with {label}." --null-prompt "Chest X-Ray." --resize 64 --patch 16 \
      --samples "$SAMPLES" --clusters "$CLUSTERS" --cache "$out.cache" --out "$out" > "$out.log"
    rm -rf "$out.cache"
  else
    /usr/bin/time -f "%M" -o "$out.rss" "$cli" -q doersch --data "$set" --out "$out" --candidates "$CANDIDATES" \
      --detectors "$DETECTORS" --negatives "$NEGATIVES" --negative-pool "$NEGATIVE_POOL" --final-neighbours "$FINAL" \
      --precision "$PRECISION" --timings "$out.json" > "$out.log"
  fi
  python - "$method" "$out" <<'PY'
import json, re, sys
method, out = sys.argv[1], sys.argv[2]
log = open(out + ".log").read()
line = log.split("stage times:")[1].splitlines()[0]
stages = {name.replace(" ", "_"): float(v) for name, v in re.findall(r"([a-zA-Z ]+?) ([0-9.]+) s", line)}
stages = {k.strip("_,"): v for k, v in stages.items()}
rss = int(open(out + ".rss").read().split()[-1]) * 1024
print(json.dumps({"stages": stages, "total_seconds": sum(stages.values()), "peak_resident_bytes": rss}))
PY
}

record_cost() { # METHOD PER_LABEL COST_JSON
  python -c 'import json,sys; c=json.loads(sys.argv[3]); c.update(kind="cost", method=sys.argv[1], images=4*int(sys.argv[2])); print(json.dumps(c))' \
    "$1" "$2" "$3" >> "$results"
}

for per_label in $QUALITY_SIZES; do
  set=$(dataset "$per_label")
  for method in $METHODS; do
    out=$work/quality-$method-$per_label
    cost=$(run_method "$method" "$set" "$out")
    scale=1 min_members=1
    [ "$method" = typicality ] && scale=$((SIZE / 64)) min_members=6
    python benches/doersch_compare.py quality "$out" "$set" "$scale" "$min_members" \
      | python -c 'import json,sys; q=json.loads(sys.stdin.read()); q.update(kind="quality", method=sys.argv[1], per_label=int(sys.argv[2]), cost=json.loads(sys.argv[3])); print(json.dumps(q))' \
        "$method" "$per_label" "$cost" | tee -a "$results"
    record_cost "$method" "$per_label" "$cost"
  done
done
# The quality runs are cost points too; COST_SIZES adds the others.
for per_label in $COST_SIZES; do
  case " $QUALITY_SIZES " in *" $per_label "*) continue ;; esac
  set=$(dataset "$per_label")
  for method in $METHODS; do
    record_cost "$method" "$per_label" "$(run_method "$method" "$set" "$work/cost-$method-$per_label")"
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$work/load.txt"
python benches/doersch_compare.py tables "$results" | tee "$work/tables.md"
