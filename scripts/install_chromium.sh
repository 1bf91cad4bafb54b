#!/usr/bin/env bash
# Installs Debian's headless-capable `chromium`, which tests/report_browser.rs drives to check the
# mining report pages. Idempotent: prints nothing and does nothing when `chromium` is already on PATH.
# Refreshes the package lists only when they do not know the package or when the install fails on
# them (stale lists give 404s).
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo env DEBIAN_FRONTEND=noninteractive)
else
    echo "install_chromium.sh: not root and no sudo; install the Debian package 'chromium' by hand" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt_install() {
    "${as_root[@]}" apt-get install -y --no-install-recommends chromium
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

command -v chromium >/dev/null 2>&1 || { echo "install_chromium.sh: chromium still not on PATH" >&2; exit 1; }
