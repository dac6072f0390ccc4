#!/usr/bin/env bash
# Run the test suite on the oldest versions the README claims (Python 3.9, torch 2.4.1) in a fresh venv.
# Usage: scripts/test_oldest.sh [python3.9 executable] [pytest args...]
# torch 2.4.1 from PyPI is a CUDA build (about 3 GB with its nvidia-* dependencies); it runs on the CPU.
set -euo pipefail
PY=${1:-python3.9}; shift || true
VENV=${TRACKJAC_OLD_VENV:-/tmp/trackjac-py39}
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q torch==2.4.1
"$VENV/bin/pip" install -q -e '.[test]'
"$VENV/bin/python" -m trackjac demo > /dev/null
CI=true "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
