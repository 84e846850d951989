#!/usr/bin/env bash
# Check that the lower bounds in pyproject.toml hold: install every dependency at exactly its lower bound into a
# throwaway virtual environment, install seed-hf there without dependencies, and run the fast test suite.
#
# Usage: bash scripts/check_lower_bounds.sh [pytest arguments]   (default: the whole fast suite, -m "not slow")
#   LOWER_BOUNDS_VENV=dir  keep the environment in `dir` (reused when it exists) instead of a temporary folder
#
# torch: PyPI has no CPU-only wheels, so the floor's wheel is the CUDA build with its nvidia-* libraries (a few
# GB to download); the tests still run on the CPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
venv="${LOWER_BOUNDS_VENV:-}"
if [ -z "$venv" ]; then
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    venv="$scratch/venv"
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"

# "name>=X,<Y" -> "name==X" for every runtime dependency (a dependency without a lower bound is left free)
mapfile -t pins < <("$venv/bin/python" - "$root/pyproject.toml" <<'EOF'
import re, sys, tomllib

with open(sys.argv[1], "rb") as file:
    dependencies = tomllib.load(file)["project"]["dependencies"]
for requirement in dependencies:
    name = re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0)
    floor = re.search(r">=\s*([^,;\s]+)", requirement)
    print(f"{name}=={floor.group(1)}" if floor else name)
EOF
)
echo "lower bounds: ${pins[*]}"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install "${pins[@]}" pytest
"${pip[@]}" install --no-deps -e "$root"
"$venv/bin/python" -m pip --disable-pip-version-check list

cd "$root"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
status=0
"$venv/bin/python" -m pytest -p no:cacheprovider "$@" || status=$?
echo "lower-bound check: pytest exit status $status with ${pins[*]}"
exit "$status"
