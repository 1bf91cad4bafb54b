#!/usr/bin/env bash
# Installs everything libdiffmine needs on a fresh machine, idempotently (a second run costs seconds):
#   - a Python virtual environment in .deps/venv with PyTorch 2.11.0 (the version tch 0.24.0 binds),
#     diffusers/transformers (the reference implementation the tests compare against), numpy, and
#     the peers of the DICOM and ChestX-ray8 tests (pydicom, scikit-learn);
#   - cbindgen (to check that include/diffmine.h is current) and cargo-fuzz (the DICOM fuzz target runs
#     briefly in the test suite, without a sanitizer, which the stable toolchain supports);
#   - Debian's chromium and Node.js, and the pinned playwright-core in tests/browser/node_modules
#     (tests/report_browser.rs drives the report pages in headless chromium through it);
#   - Debian's patchelf (scripts/install.sh and scripts/build_wheel.sh set the rpath of the installed
#     library) and abigail-tools (tests/abi.rs compares the C ABI with its baseline).
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

# The formatting and lint checks scripts/test.sh runs.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  retry rustup component add rustfmt clippy
fi

if ! command -v cbindgen >/dev/null 2>&1 || ! cbindgen --version | grep -q '0.29.4'; then
  retry cargo install --locked --quiet cbindgen --version 0.29.4
fi

if ! cargo fuzz --version 2>/dev/null | grep -q '0.13.2'; then
  retry cargo install --locked --quiet cargo-fuzz --version 0.13.2
fi

retry bash "$root/scripts/install_debian.sh" chromium:chromium node:nodejs npm:npm patchelf:patchelf abidw:abigail-tools dciodvfy:dicom3tools

# The Orthanc plugin (bindings/orthanc) and its test: Debian's Orthanc and plugin SDK, json-c, DCMTK's
# storescu, and curl and ip for the test's clients in the server's network namespace.
retry bash "$root/scripts/install_debian.sh" Orthanc:orthanc /usr/include/orthanc/OrthancCPlugin.h:orthanc-dev \
  /usr/include/json-c/json.h:libjson-c-dev storescu:dcmtk curl:curl ip:iproute2
# Debian's orthanc package enables a system service that listens on every address; the test starts its
# own Orthanc inside a private network namespace, so the service stays stopped and disabled.
if [ -e /lib/systemd/system/orthanc.service ]; then
  sudo=$([ "$(id -u)" -eq 0 ] || echo sudo)
  { $sudo systemctl disable --now orthanc || $sudo service orthanc stop || true; } >/dev/null 2>&1
fi

# `npm ci` installs exactly tests/browser/package-lock.json; the stamp (the lock file's hash) skips it
# when node_modules already holds that.
browser="$root/tests/browser"
browser_stamp="$browser/node_modules/.diffmine-lock"
browser_wanted=$(sha256sum "$browser/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$browser_stamp" 2>/dev/null)" != "$browser_wanted" ]; then
  (cd "$browser" && retry npm ci --no-audit --no-fund --fetch-retries 5)
  echo "$browser_wanted" > "$browser_stamp"
fi
