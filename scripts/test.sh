#!/usr/bin/env bash
# Set up (if needed), check types and import rules, and run the whole test suite (hardware-in-the-loop tests are skipped off-Pi).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The type check ([tool.mypy] in pyproject.toml) and the import rules (.importlinter) come first: a type
# error or a broken layer fails the run before the tests.
.venv/bin/mypy appliance
.venv/bin/lint-imports
exec .venv/bin/python -m pytest "$@"
