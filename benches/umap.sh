#!/usr/bin/env bash
# Our UMAP (src/mining/cotypicality/umap.rs) at the co-typicality miner's sizes against umap-learn: the miner fits
# one UMAP (15 neighbours, 32 components) on the DIFT features (1280 dimensions for SD 1.5) of every
# version of every kept box, up to 10 000 boxes times the number of labels.
#
# Usage: benches/umap.sh
#   Environment: SIZES ("2000 10000 20000": points per data set), NICE (-20), IDLE_WAIT_MAX (600 s).
# Builds benches/umap.rs and runs benches/umap_compare.py (which makes the data, runs both sides and
# scores them; see its docstring) once the machine is idle, at high priority, libtorch and BLAS at 2
# threads. Prints a table; appends one JSON line per size to benches/results-umap.jsonl, and keeps the
# data and embeddings in target/bench/umap-<time>.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/env.sh
SIZES=${SIZES:-2000 10000 20000}
NICE=${NICE:--20}
source benches/timing.sh umap --no-model

# Builds the bench binary (a no-op when it is up to date) and prints its path, from cargo's JSON messages.
bench_binary() {
  cargo build --release --bench umap --message-format=json-render-diagnostics | python -c 'import json,sys
exe=[m["executable"] for m in map(json.loads, sys.stdin) if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["name"]=="umap"]
print(exe[-1])'
}

log "building the umap bench (release)"
bench=$(bench_binary)
log "bench binary: $bench; sizes: $SIZES"
wait_idle
"${nice_cmd[@]}" python benches/umap_compare.py --bench "$bench" --work "$work" --results benches/results-umap.jsonl $SIZES
log "results appended to benches/results-umap.jsonl; data and embeddings in $work"
