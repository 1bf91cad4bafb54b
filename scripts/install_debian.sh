#!/usr/bin/env bash
# Installs Debian packages for the commands named, each given as COMMAND:PACKAGE (for instance
# abidw:abigail-tools) or, for a package without a command, /ABSOLUTE/FILE:PACKAGE (for instance
# /usr/include/json-c/json.h:libjson-c-dev). Idempotent: does nothing when every command is already on
# PATH and every file exists. Refreshes the
# package lists only when the install fails on them (stale lists give 404s).
set -euo pipefail

present() {
    case "$1" in
        /*) [ -e "$1" ] ;;
        *) command -v "$1" >/dev/null 2>&1 ;;
    esac
}

missing=()
for pair in "$@"; do
    present "${pair%%:*}" || missing+=("${pair#*:}")
done
[ ${#missing[@]} -gt 0 ] || exit 0

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo env DEBIAN_FRONTEND=noninteractive)
else
    echo "install_debian.sh: not root and no sudo; install the Debian packages ${missing[*]} by hand" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt_install() {
    "${as_root[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
}
if ! apt_install; then
    "${as_root[@]}" apt-get update
    apt_install
fi
for pair in "$@"; do
    present "${pair%%:*}" || { echo "install_debian.sh: ${pair%%:*} still missing after installing ${pair#*:}" >&2; exit 1; }
done
