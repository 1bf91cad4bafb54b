#!/usr/bin/env bash
# Prints, per test file both pydicom and dicom-pixeldata 0.10.1 decode, whether frame 0's values after
# the Modality LUT agree, and the totals. Needs scripts/setup.sh's venv (pydicom is the reference).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
source "$root/scripts/env.sh"
python "$root/tests/reference/dicom_reference.py" "$root/target/dicom-reference"
cd "$root/scripts/pixeldata_gaps"
CARGO_TARGET_DIR="$root/target/pixeldata-gaps" cargo run --release --quiet -- "$root/target/dicom-reference"
