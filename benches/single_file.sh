#!/usr/bin/env bash
# Loading SD 1.5 from one single-file checkpoint (the original layout, as v1-5-pruned-emaonly.safetensors
# ships) against loading the diffusers folder, and against diffusers' from_single_file: wall time and
# peak resident memory (VmHWM) of a fresh process, f32 and bf16, with the weights' own size beside them
# (the loaders' bar: peak at most 1.2 x the weights at the loaded dtype).
#
# Usage: benches/single_file.sh
#   Environment: ROUNDS (3). Makes the random-weight SD 1.5 folder target/bench/sd15 if missing
#   (benches/make_sd15.py) and target/bench/sd15.safetensors from it with the test fixtures' writer
#   (tests/reference/models_reference.py, which checks that diffusers reads the file back equal to the
#   folder). Writes target/bench/single-file-<time>/results.jsonl and prints the table.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/env.sh
ROUNDS=${ROUNDS:-3}
cargo build --release --quiet --bench sd15
sd15_bin=$(ls -t target/release/deps/sd15-* | grep -v '\.d$' | head -1)
folder=target/bench/sd15
file=target/bench/sd15.safetensors
[ -d "$folder" ] || python benches/make_sd15.py "$folder"
if [ ! -f "$file" ]; then
  python -c 'import sys; sys.path.insert(0, "tests/reference"); from pathlib import Path; from models_reference import write_single_file; write_single_file(Path(sys.argv[1]), Path(sys.argv[2]), open_clip=False, with_ema=False)' \
    "$folder" "${file%.safetensors}-partial.safetensors"  # diffusers reads a file by its extension
  mv "${file%.safetensors}-partial.safetensors" "$file"
fi
work=target/bench/single-file-$(date +%Y%m%d-%H%M%S)
mkdir -p "$work"
results=$work/results.jsonl
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$work/load.txt"
cat "$folder"/*/*.safetensors "$file" > /dev/null  # warm page cache for every load alike
for round in $(seq "$ROUNDS"); do
  for dtype in f32 bf16; do
    for source in file folder; do
      model=$([ "$source" = file ] && echo "$file" || echo "$folder")
      "$sd15_bin" "$model" "$dtype" load 1 | python -c 'import json,sys; r=json.loads(sys.stdin.read()); r.update(source=sys.argv[1], round=int(sys.argv[2])); print(json.dumps(r))' "$source" "$round" >> "$results"
      python benches/bench_diffusers.py "$model" "$dtype" load 1 | python -c 'import json,sys; r=json.loads(sys.stdin.read()); r.update(source=sys.argv[1], round=int(sys.argv[2])); print(json.dumps(r))' "$source" "$round" >> "$results"
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$work/load.txt"
python - "$results" "$file" <<'PY'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
f32_bytes = os.path.getsize(sys.argv[2])  # the file holds f32 weights (and a small header)
weights = {"f32": f32_bytes, "bf16": f32_bytes / 2}
print("| dtype | source | implementation | load (median) | peak memory (median) | peak / weights |")
print("|---|---|---|---|---|---|")
for dtype in ("f32", "bf16"):
    for source in ("file", "folder"):
        for impl in ("libdiffmine", "diffusers"):
            sel = [r for r in rows if r["dtype"] == dtype and r["source"] == source and r["impl"] == impl]
            s = statistics.median(r["seconds"] for r in sel)
            m = statistics.median(r["vmhwm_bytes"] for r in sel)
            name = "single file" if source == "file" else "diffusers folder"
            print(f"| {dtype} | {name} | {impl} | {s:.2f} s | {m / 2**30:.2f} GiB | {m / weights[dtype]:.2f} |")
print(f"\nweights: {f32_bytes / 2**30:.2f} GiB in f32, {f32_bytes / 2**31:.2f} GiB in bf16; {len(rows)} measurements, {max(r['round'] for r in rows)} rounds")
PY
