#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite (hardware-in-the-loop tests are skipped off-Pi).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
