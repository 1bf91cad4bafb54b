#!/usr/bin/env bash
# Builds the Python wheel that carries libdiffmine: dist/diffmine-VERSION-py3-none-linux_x86_64.whl.
#
#   bash scripts/build_wheel.sh [--lib PATH/libdiffmine.so] [--out DIR]
#
# Without --lib it runs `cargo build --release --lib` first. The library goes into the `diffmine`
# package stripped of its line tables (about 8 MB instead of about 105) and with the rpath
# `$ORIGIN/../torch/lib`, so it loads the libtorch of the torch package pip installs beside it (the
# wheel depends on torch==<the version it was built against>), as torch extension wheels do.
# Install: pip install torch==2.11.0 dist/diffmine-*.whl
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
lib="" out="$root/dist"
while [ $# -gt 0 ]; do
  case "$1" in
    --lib) lib=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: bash scripts/build_wheel.sh [--lib PATH/libdiffmine.so] [--out DIR]" >&2; exit 2 ;;
  esac
done
command -v patchelf >/dev/null || { echo "build_wheel.sh: patchelf is missing (scripts/setup.sh installs Debian's)" >&2; exit 1; }
# The caller's environment wins (a worktree may point LIBTORCH at another path of the same torch).
[ -n "${LIBTORCH:-}" ] || source "$root/scripts/env.sh"
python="${DIFFMINE_VENV:-$root/.deps/venv}/bin/python"

if [ -z "$lib" ]; then
  (cd "$root" && cargo build --release --lib)
  lib="$root/target/release/libdiffmine.so"
fi
[ -f "$lib" ] || { echo "build_wheel.sh: $lib is not a file" >&2; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r "$root/bindings/python/pyproject.toml" "$root/bindings/python/setup.py" "$root/bindings/python/README.md" \
  "$root/bindings/python/diffmine" "$stage/"
find "$stage/diffmine" -name __pycache__ -prune -exec rm -rf {} +

bundled="$stage/diffmine/libdiffmine.so"
strip --strip-debug -o "$bundled" "$lib"
patchelf --set-rpath '$ORIGIN/../torch/lib' "$bundled"

# The torch libraries the library links (those found in libtorch's lib folder), which the package checks
# for at import so that a missing or wrong torch is an ImportError naming the version it needs.
torch_libraries=$(readelf -d "$bundled" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' |
  while read -r name; do if [ -e "$LIBTORCH/lib/$name" ]; then echo "$name"; fi; done)
"$python" - "$root/Cargo.toml" "$LIBTORCH/version.py" "$stage/diffmine/_build.py" $torch_libraries <<'PY'
import runpy, sys, tomllib
cargo, torch_version_py, out, *libraries = sys.argv[1:]
version = tomllib.load(open(cargo, "rb"))["package"]["version"]
torch_version = runpy.run_path(torch_version_py)["__version__"].split("+")[0]
with open(out, "w") as f:
    f.write('"""Written by scripts/build_wheel.sh: the version (Cargo.toml\'s) and the torch the library was built against."""\n\n')
    f.write(f"VERSION = {version!r}\nTORCH_VERSION = {torch_version!r}\nTORCH_LIBRARIES = {libraries!r}\n")
PY

mkdir -p "$out"
"$python" -m build --wheel --no-isolation --outdir "$out" "$stage" >"$stage/build.log" 2>&1 ||
  { cat "$stage/build.log" >&2; exit 1; }
wheel=$(ls -t "$out"/diffmine-*.whl | head -1)
echo "$wheel ($(du -h "$wheel" | cut -f1))"
