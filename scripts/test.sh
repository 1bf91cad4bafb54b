#!/usr/bin/env bash
# The README's second command and what CI runs: installs what is missing, then runs the whole test
# suite in release mode (one build serves the library, the tests, the C programs and the Python
# binding tests). Reference fixtures are built on first use by tests/reference/make_fixtures.py.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
source scripts/env.sh
# The C programs and the Python binding link libdiffmine.so, which `cargo test` alone does not build;
# both commands share the release profile and the features (the tests' dev-dependency on the crate
# turns on `synthetic`), so this is one build.
cargo build --release --features synthetic
cargo test --release --no-fail-fast
