"""Stella Kiosk: a voice-first English-tutor appliance (headless, WebRTC to the OpenAI Realtime API)."""

import sys

__version__ = "0.1.0"

# httpx imports its command-line client whenever rich, click and pygments happen to be installed (a
# developer's venv, a board with those packages for other tools): ~6 MB resident the appliance never
# uses, on a board whose whole call must fit in 100 MB. A refused import is httpx's own fallback for a
# missing CLI extra: it then defines a stub ``main`` instead. Other processes (the httpx CLI itself)
# are not affected.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
