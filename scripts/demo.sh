#!/usr/bin/env bash
# Set up (if needed) and run the demo: a whole simulated lesson on this machine, no hardware, no
# internet, no API credit. Output (transcript, tutor audio, session store) goes to ./demo-output.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/stella-kiosk demo --output demo-output "$@"
