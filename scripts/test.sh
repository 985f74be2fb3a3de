#!/usr/bin/env bash
# Set up (if needed), type-check, and run the whole test suite (hardware-in-the-loop tests are skipped off-Pi).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The type check ([tool.mypy] in pyproject.toml) comes first: a type error fails the run before the tests.
.venv/bin/mypy appliance
exec .venv/bin/python -m pytest "$@"
