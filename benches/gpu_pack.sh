#!/usr/bin/env bash
# Builds the bundle that travels to a GPU machine with benches/gpu.sh, in target/gpu (ignored by git,
# so the device tool carries it by name: carry ["target/gpu"]):
#   libdiffmine.so and the diffmine CLI of the release build, stripped (`strip`: about 8 MB each
#   instead of about 105 with line tables);
#   fixtures/: the random-weight test pipelines sd15_tiny, sd2_tiny (tests/reference/make_fixtures.py)
#   and sd15_pnp (tests/reference/translate_reference.py), float32 weights only;
#   wheels/: diffusers (the machine has torch and transformers but not diffusers) and the packages it
#   imports that transformers 5 no longer brings (requests and the dependencies it cannot do without),
#   pure Python, rebuilt from this venv's installed files (benches/gpu_wheels.py: no registry needed);
#   bundle.json: the commit and the versions it was built from.
# Then checks that the bundle plus the checkout's files that travel anyway (tracked and untracked,
# not ignored: benches/, bindings/python, models/demo...) stay under the 64 MiB a device command may
# carry, and that nothing the library needs is missing from this machine's torch (ldd).
#
# Usage: benches/gpu_pack.sh
#   Environment: DIFFMINE_LIB and DIFFMINE_CLI (the library and CLI to pack; default: the release
#   build, built first with --features synthetic unless SKIP_BUILD is set), FIXTURES (target/fixtures),
#   PNP_FIXTURE (target/translate_fixtures/sd15_pnp), BUNDLE (target/gpu), PYTHON (the venv's).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
LIMIT_BYTES=$((64 * 1024 * 1024))
BUNDLE=${BUNDLE:-$root/target/gpu}
FIXTURES=${FIXTURES:-$root/target/fixtures}
PNP_FIXTURE=${PNP_FIXTURE:-$root/target/translate_fixtures/sd15_pnp}
PYTHON=${PYTHON:-${DIFFMINE_VENV:-$root/.deps/venv}/bin/python}
# diffusers, and what it imports beyond the GPU machine's packages (requests runs without a character
# detector, which here is a compiled one).
WHEELS=(diffusers requests urllib3 idna certifi)
log() { echo "[gpu_pack $(date -u +%H:%M:%S)] $*" >&2; }
fail() { echo "gpu_pack: $*" >&2; exit 1; }

if [ -z "${DIFFMINE_LIB:-}" ] || [ -z "${DIFFMINE_CLI:-}" ]; then
  if [ -z "${SKIP_BUILD:-}" ]; then
    log "building the release library and CLI"
    cargo build --release --features synthetic --lib --bin diffmine >&2
  fi
  DIFFMINE_LIB=${DIFFMINE_LIB:-$root/target/release/libdiffmine.so}
  DIFFMINE_CLI=${DIFFMINE_CLI:-$root/target/release/diffmine}
fi
for f in "$DIFFMINE_LIB" "$DIFFMINE_CLI" "$FIXTURES/sd15_tiny/model_index.json" "$FIXTURES/sd2_tiny/model_index.json" "$PNP_FIXTURE/model_index.json"; do
  [ -f "$f" ] || fail "$f is missing"
done

"$DIFFMINE_CLI" synth --help > /dev/null 2>&1 || fail "$DIFFMINE_CLI has no synth command (build it with --features synthetic)"

staging=$(mktemp -d "$(dirname "$BUNDLE")/.gpu-bundle.XXXXXX")
trap 'rm -rf "$staging"' EXIT

log "stripping the library and the CLI"
strip -o "$staging/libdiffmine.so" "$DIFFMINE_LIB"
strip -o "$staging/diffmine" "$DIFFMINE_CLI"

log "copying the fixture pipelines (float32 weights)"
copy_pipeline() { # SOURCE NAME
  mkdir -p "$staging/fixtures/$2"
  (cd "$1" && find . -name '*.fp16.safetensors' -prune -o \( -path './model_index.json' -o -path './*/*' \) -type f -print0 \
    | xargs -0 cp --parents -t "$staging/fixtures/$2")
}
copy_pipeline "$FIXTURES/sd15_tiny" sd15_tiny
copy_pipeline "$FIXTURES/sd2_tiny" sd2_tiny
copy_pipeline "$PNP_FIXTURE" sd15_pnp

log "packing the wheels"
"$PYTHON" benches/gpu_wheels.py "$staging/wheels" "${WHEELS[@]}" > /dev/null || fail "cannot pack the wheels of ${WHEELS[*]}"

"$PYTHON" - "$staging/bundle.json" "$(git rev-parse HEAD)" "$(git status --porcelain | wc -l)" <<'PY'
import json, sys
from importlib.metadata import version
names = ("torch", "diffusers", "transformers")
json.dump({"commit": sys.argv[2], "uncommitted_changes": int(sys.argv[3]), "built_with": {n: version(n) for n in names}}, open(sys.argv[1], "w"), indent=1)
PY

log "checking that the library and the CLI find everything in this machine's torch"
torch_lib=$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
missing=$(LD_LIBRARY_PATH=$torch_lib ldd "$staging/libdiffmine.so" "$staging/diffmine" 2>&1 | grep -i "not found" || true)
[ -z "$missing" ] || fail "unresolved libraries: $missing"

bundle_bytes=$(du -sb "$staging" | cut -f1)
tree_bytes=$(git ls-files -z -co --exclude-standard | xargs -0 -r du -cb 2>/dev/null | awk 'END {print $1}')
total=$((bundle_bytes + tree_bytes))
log "bundle $((bundle_bytes / 1024 / 1024)) MiB + the checkout's travelling files $((tree_bytes / 1024 / 1024)) MiB = $((total / 1024 / 1024)) MiB (limit 64 MiB)"
[ "$total" -le "$LIMIT_BYTES" ] || fail "$total bytes travel, more than the 64 MiB a device command may carry"

rm -rf "$BUNDLE"
mv "$staging" "$BUNDLE"
trap - EXIT
echo "{\"kind\": \"pack\", \"bundle\": \"$BUNDLE\", \"bundle_bytes\": $bundle_bytes, \"tree_bytes\": $tree_bytes, \"total_bytes\": $total, \"limit_bytes\": $LIMIT_BYTES}"
