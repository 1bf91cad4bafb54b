#!/usr/bin/env bash
# Fuzzes DICOM ingestion (fuzz_targets/dicom_image.rs) for SECONDS seconds (default 600) without a
# sanitizer, which works on the stable toolchain: bash fuzz/run.sh [SECONDS]
# The corpus starts from pydicom's and pydicom-data's test files (scripts/setup.sh installs them) and
# grows in fuzz/corpus/dicom_image; a crash lands in fuzz/artifacts/dicom_image and fails the run.
# Prints libFuzzer's final stats line, with the number of executions.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/scripts/env.sh"
seconds=${1:-600}
corpus="$root/fuzz/corpus/dicom_image"
mkdir -p "$corpus"
site=$(echo "$DIFFMINE_VENV"/lib/python3*/site-packages)
# Seeds: every test file up to 64 KiB (larger ones only slow each execution down).
find "$site/pydicom/data/test_files" "$site/data_store/data" -name '*.dcm' -size -64k -exec cp -n {} "$corpus/" \;
# The target links libtorch through the library; its build gets no rpath, so point the loader at it.
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cd "$root/fuzz"
cargo fuzz run dicom_image -s none --release "$corpus" -- \
  -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=4096 -timeout=30 -print_final_stats=1
