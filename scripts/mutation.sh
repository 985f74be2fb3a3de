#!/usr/bin/env bash
# Mutation testing of the lesson-keeping modules (store, sync, conversation, companion storage) with
# mutmut; see scripts/mutation.py and docs/TESTING.md "Mutation testing". Not part of scripts/test.sh
# nor of CI: a full run takes the better part of an hour.
#   bash scripts/mutation.sh MODULE|all [--survivors] [--jobs N]
# Runs at the lowest CPU priority with one worker by default, so it leaves timing-sensitive work alone.
set -euo pipefail
cd "$(dirname "$0")/.."
MUTMUT_VERSION="3.8.1"
if [ ! -x .venv/bin/python ]; then
  bash scripts/setup.sh
fi
if [ "$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("mutmut"))' 2>/dev/null || true)" != "$MUTMUT_VERSION" ]; then
  echo "mutation: installing mutmut $MUTMUT_VERSION into .venv"
  .venv/bin/pip install -q "mutmut==$MUTMUT_VERSION"
fi
exec nice -n "${MUTATION_NICE:-19}" .venv/bin/python scripts/mutation.py "$@"
