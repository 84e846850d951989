#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install seed-hf into it.
# Usage: source scripts/setup_venv.sh [extras]   (extras default: dev)
set -euo pipefail
extras="${1:-dev}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
if [ ! -x "$root/.venv/bin/python" ]; then
    "$python" -m venv "$root/.venv"
fi
pip=("$root/.venv/bin/python" -m pip --disable-pip-version-check -q)
# torch is pinned here (a CPU wheel on the project's machines); the package itself accepts torch>=2.6.
if ! "$root/.venv/bin/python" -c "import torch" 2>/dev/null; then
    "${pip[@]}" install "torch==2.13.0"
fi
"${pip[@]}" install -e "$root[$extras]"
