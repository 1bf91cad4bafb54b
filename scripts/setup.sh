#!/usr/bin/env bash
# Installs everything libdiffmine needs on a fresh machine, idempotently (a second run costs seconds):
#   - a Python virtual environment in .deps/venv with PyTorch 2.11.0 (the version tch 0.24.0 binds),
#     diffusers/transformers (the reference implementation the tests compare against), numpy, and
#     the peers of the DICOM and ChestX-ray8 tests (pydicom, scikit-learn);
#   - cbindgen (to check that include/diffmine.h is current) and cargo-fuzz (the DICOM fuzz target runs
#     briefly in the test suite, without a sanitizer, which the stable toolchain supports);
#   - Debian's chromium (tests/report_browser.rs checks the mining report pages in it, headless).
# `source scripts/env.sh` then sets the environment variables the build needs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.deps/venv"
# The stamp holds a hash of the pinned requirements: a changed pin reinstalls, an unchanged one costs
# nothing.
stamp="$venv/.diffmine-requirements"
wanted=$(sha256sum "$root/scripts/requirements.txt" | cut -d' ' -f1)

if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  # torch==2.11.0 is the CUDA 13.0 build on PyPI: the same build the GPU machines have preinstalled,
  # so a library built here runs there against their own libtorch.
  "$venv/bin/python" -m pip install -q -r "$root/scripts/requirements.txt"
  echo "$wanted" > "$stamp"
fi

if ! command -v cbindgen >/dev/null 2>&1 || ! cbindgen --version | grep -q '0.29.4'; then
  cargo install --locked --quiet cbindgen --version 0.29.4
fi

if ! cargo fuzz --version 2>/dev/null | grep -q '0.13.2'; then
  cargo install --locked --quiet cargo-fuzz --version 0.13.2
fi

bash "$root/scripts/install_chromium.sh"
