#!/usr/bin/env bash
# Installs everything libdiffmine needs on a fresh machine, idempotently (a second run costs seconds):
#   - a Python virtual environment in .deps/venv with PyTorch 2.11.0 (the version tch 0.24.0 binds),
#     diffusers/transformers (the reference implementation the tests compare against), numpy, and
#     the peers of the DICOM and ChestX-ray8 tests (pydicom, scikit-learn);
#   - cbindgen (to check that include/diffmine.h is current) and cargo-fuzz (the DICOM fuzz target runs
#     briefly in the test suite, without a sanitizer, which the stable toolchain supports);
#   - Debian's chromium (tests/report_browser.rs checks the mining report pages in it, headless);
#   - Debian's patchelf (scripts/build_wheel.sh sets the rpath of the wheel's library).
# `source scripts/env.sh` then sets the environment variables the build needs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.deps/venv"
# The stamp holds a hash of the pinned requirements: a changed pin reinstalls, an unchanged one costs
# nothing.
stamp="$venv/.diffmine-requirements"
wanted=$(sha256sum "$root/scripts/requirements.txt" | cut -d' ' -f1)

# Downloads here are several GB (torch's CUDA wheels) and a connection dropped midway must not fail
# the whole run: pip resumes a broken download itself, and a command that still fails is run again
# after a pause (pip keeps what it finished in its cache, cargo in its registry).
export CARGO_NET_RETRY=10
retry() {
  local attempt
  for attempt in 1 2 3 4; do
    "$@" && return 0
    echo "setup.sh: attempt $attempt of '$*' failed; trying again in $((attempt * 20)) s" >&2
    sleep $((attempt * 20))
  done
  "$@"
}
pip_install() {
  "$venv/bin/python" -m pip install -q --retries 10 --timeout 60 --resume-retries 20 "$@"
}

if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  # The install takes about 5 GB; on a fuller disk pip's failures can read like network errors.
  free_gib=$(df --output=avail -BG "$venv" | tail -1 | tr -dc 0-9)
  if [ "$free_gib" -lt 8 ]; then
    echo "setup.sh: warning: only ${free_gib} GiB free under $venv; the Python packages take about 5 GiB and the release build about 10" >&2
  fi
  # pip is pinned to a version that knows --resume-retries (25.1 and later).
  retry "$venv/bin/python" -m pip install -q --retries 10 --timeout 60 pip==26.3
  # torch==2.11.0 is the CUDA 13.0 build on PyPI: the same build the GPU machines have preinstalled,
  # so a library built here runs there against their own libtorch.
  retry pip_install -r "$root/scripts/requirements.txt"
  echo "$wanted" > "$stamp"
fi

if ! command -v cbindgen >/dev/null 2>&1 || ! cbindgen --version | grep -q '0.29.4'; then
  retry cargo install --locked --quiet cbindgen --version 0.29.4
fi

if ! cargo fuzz --version 2>/dev/null | grep -q '0.13.2'; then
  retry cargo install --locked --quiet cargo-fuzz --version 0.13.2
fi

retry bash "$root/scripts/install_chromium.sh"

# patchelf gives the wheel's copy of the library its rpath into the torch package (scripts/build_wheel.sh).
if ! command -v patchelf >/dev/null 2>&1; then
  sudo_if_needed=()
  [ "$(id -u)" -eq 0 ] || sudo_if_needed=(sudo)
  retry "${sudo_if_needed[@]}" env DEBIAN_FRONTEND=noninteractive sh -c \
    'apt-get update -qq && apt-get install -y -qq --no-install-recommends patchelf'
fi
