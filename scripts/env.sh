# Sourced by the other scripts: points the tch build at the PyTorch that scripts/setup.sh installed.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export DIFFMINE_VENV="$root/.deps/venv"
export LIBTORCH=$(echo "$DIFFMINE_VENV"/lib/python3*/site-packages/torch)
export LIBTORCH_BYPASS_VERSION_CHECK=0
export PATH="$DIFFMINE_VENV/bin:$HOME/.cargo/bin:$PATH"
