#!/usr/bin/env bash
# Installs Debian's headless-capable `chromium`, and Node.js with npm, through which
# tests/report_browser.rs drives it (Playwright) to check the report pages. Idempotent: prints nothing
# and does nothing when `chromium`, `node` and `npm` are already on PATH.
# Refreshes the package lists only when they do not know the package or when the install fails on
# them (stale lists give 404s).
set -euo pipefail

have_all() {
    command -v chromium >/dev/null 2>&1 && command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1
}
if have_all; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo env DEBIAN_FRONTEND=noninteractive)
else
    echo "install_chromium.sh: not root and no sudo; install the Debian packages 'chromium nodejs npm' by hand" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt_install() {
    "${as_root[@]}" apt-get install -y --no-install-recommends chromium nodejs npm
}
has_candidate() {
    # Captured first: `apt-cache | grep -q` can fail under pipefail when grep stops reading early.
    local policy
    policy=$(apt-cache policy chromium 2>/dev/null || true)
    [[ $policy == *"Candidate: "[0-9]* ]]
}

if ! has_candidate; then
    "${as_root[@]}" apt-get update
fi
if ! apt_install; then
    "${as_root[@]}" apt-get update
    apt_install
fi

have_all || { echo "install_chromium.sh: chromium, node or npm still not on PATH" >&2; exit 1; }
