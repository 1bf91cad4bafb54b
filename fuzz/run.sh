#!/usr/bin/env bash
# Fuzzes the library's parsers of outside input (fuzz_targets/<target>.rs, bodies in entries.rs)
# without a sanitizer, which works on the stable toolchain:
#
#   bash fuzz/run.sh [-t SECONDS] [-n RUNS] [-j JOBS] [-r] [TARGET...]
#   bash fuzz/run.sh -s [TARGET...]
#
# -t  seconds per target (default 600); -n  executions per target (default: no limit): whichever
#     comes first.
# -j  targets fuzzed at a time (default 1), each under `nice -n 10`.
# -r  record each run in fuzz/RESULTS.md: executions, exec/s, coverage (libFuzzer's cov: edges and
#     ft: features), corpus, crashes, with date, commit and CPU (one row per target, replaced), and
#     keep its log in fuzz/logs/<target>.log (other runs' logs go with their scratch folder).
# -s  record from the logs of the last recorded runs without fuzzing.
# No TARGET: all of them. One `cargo fuzz build` builds every target first.
#
# Each corpus starts from fuzz/seeds/<target> (fuzz/make_seeds.py) and, for the DICOM targets,
# pydicom's and pydicom-data's test files (scripts/setup.sh installs them); a recorded run grows it
# in fuzz/corpus/<target>.
# A crash, a timeout or an out-of-memory input lands in fuzz/artifacts/<target> and fails the run;
# keep it in fuzz/regressions/<target>, which tests/fuzz.rs replays. Prints each target's
# summary.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ -n "${LIBTORCH:-}" ] || source "$root/scripts/env.sh"
all_targets=(dicom_image dicom_write image_buffer safetensors model_config tokenizer cxr8_csv)
seconds=600 runs=-1 jobs=1 record=0 logs_only=0
while getopts "t:n:j:rs" option; do
  case $option in
    t) seconds=$OPTARG ;;
    n) runs=$OPTARG ;;
    j) jobs=$OPTARG ;;
    r) record=1 ;;
    s) logs_only=1 record=1 ;;
    *) sed -n '2,20p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
targets=("${@:-${all_targets[@]}}")
results="$root/fuzz/RESULTS.md"
logs="$root/fuzz/logs"

# One row of the results table from a target's log: its first line is the script's own
# "# <date> <commit> <cpu>", then libFuzzer's output with its final stats.
summarize() {
  local target=$1 log="$logs/$1.log"
  local date commit cpu
  read -r _ date commit cpu < <(head -1 "$log")
  awk -v target="$target" -v date="$date" -v commit="$commit" -v cpu="${cpu//_/ }" '
    / cov: / { for (i = 1; i < NF; i++) { if ($i == "cov:") cov = $(i + 1); if ($i == "ft:") ft = $(i + 1); if ($i == "corp:") corp = $(i + 1) } }
    /^stat::number_of_executed_units:/ { runs = $2 }
    /^stat::average_exec_per_sec:/ { speed = $2 }
    /^stat::peak_rss_mb:/ { rss = $2 }
    /^Done [0-9]+ runs in [0-9]+ second/ { seconds = $5 }
    /^Slowest unit: [0-9]+ s/ && $3 > slowest { slowest = $3 }
    /^stat::slowest_unit_time_sec:/ && $2 > slowest { slowest = $2 }
    /Test unit written to/ && !/slow-unit-/ { crashes++ }
    END {
      if (runs == "") runs = "(stopped)"
      if (seconds == "") seconds = "—"
      split(corp, c, "/")
      printf "| %s | %s | %s | %s | %s | %s | %s files, %s | %s | %s | %s | %s | %s | %s |\n", target, runs, seconds, speed, cov, ft, c[1], c[2], rss, slowest + 0, crashes + 0, date, commit, cpu
    }' "$log"
}

record_row() {
  local row=$1
  (
    flock 9
    if [ ! -f "$results" ]; then
      cat > "$results" <<'EOF'
# Fuzzing results

One row per fuzz target, its last recorded run (`bash fuzz/run.sh -r`, see the script): executions,
the seconds it ran, executions per second, libFuzzer's coverage (`cov`: edges reached, `ft`:
features), the corpus it ended with, peak resident memory, the slowest input's seconds (libFuzzer
keeps it in fuzz/artifacts as slow-unit-*; not a failure below the 30 s timeout), the crashes found
(crash, timeout or out-of-memory inputs; libFuzzer stops at the first), then when, at which commit,
on which CPU.
Targets run without a sanitizer, several at a time on shared cores: exec/s is what they got, not
what they could do.

| target | executions | seconds | exec/s | cov | ft | corpus | peak RSS (MB) | slowest (s) | crashes | date (UTC) | commit | CPU |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
EOF
    fi
    local target=${row#| } && target=${target%% *}
    grep -v "^| $target |" "$results" > "$results.new" || true
    echo "$row" >> "$results.new"
    mv "$results.new" "$results"
  ) 9> "$results.lock"
  rm -f "$results.lock"
}

if [ $logs_only = 1 ]; then
  for target in "${targets[@]}"; do record_row "$(summarize "$target")"; done
  exit 0
fi

cd "$root/fuzz"
cargo fuzz build -s none --release >&2
binaries="$root/fuzz/target/x86_64-unknown-linux-gnu/release"
# The targets link libtorch through the library; their build gets no rpath, so point the loader at it.
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The file-reading targets write each input to a scratch folder under TMPDIR: memory when there is
# some, so that the writer's fsync costs nothing; removed at the end.
scratch=$(mktemp -d "$([ -d /dev/shm ] && echo /dev/shm || echo /tmp)/diffmine-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
# A recorded run grows the corpus in fuzz/corpus; any other starts from the seeds alone, in the scratch
# folder, so that a brief run takes as long whatever the campaigns left behind.
corpora="$root/fuzz/corpus"
if [ $record = 0 ]; then logs="$scratch/logs" corpora="$scratch/corpus"; fi
mkdir -p "$logs"
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs | tr ' ' '_')
commit=$(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD -- src fuzz/entries.rs || echo "+changes")
site=$(echo "$DIFFMINE_VENV"/lib/python3*/site-packages)

fuzz_one() {
  local target=$1 corpus="$corpora/$1" artifacts="$root/fuzz/artifacts/$1/" log="$logs/$1.log"
  mkdir -p "$corpus" "$artifacts"
  cp -n "$root/fuzz/seeds/$target"/* "$corpus/" 2>/dev/null || true
  if [[ $target == dicom_* ]]; then
    # Every DICOM test file up to 64 KiB (larger ones only slow each execution down).
    find "$site/pydicom/data/test_files" "$site/data_store/data" -name '*.dcm' -size -64k -exec cp -n {} "$corpus/" \;
  fi
  echo "# $(date -u +%Y-%m-%dT%H:%MZ) $commit $cpu" > "$log"
  local status=0
  mkdir -p "$scratch/$target"
  TMPDIR="$scratch/$target" nice -n 10 "$binaries/$target" "$corpus" -max_total_time="$seconds" -runs="$runs" -max_len=65536 \
    -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=30 -print_final_stats=1 -artifact_prefix="$artifacts" >> "$log" 2>&1 || status=$?
  local row
  row=$(summarize "$target")
  echo "$row"
  if [ $record = 1 ]; then record_row "$row"; fi
  if [ $status != 0 ]; then
    echo "$target failed (status $status):" >&2
    tail -40 "$log" >&2
    return 1
  fi
}

for target in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  fuzz_one "$target" || touch "$scratch/failed" &
done
wait
[ ! -e "$scratch/failed" ]
