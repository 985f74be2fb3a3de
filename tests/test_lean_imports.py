"""What the kiosk loads into memory that it never uses: a board's whole call must fit in 100 MB."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

CLI_ONLY = ("rich", "click", "pygments")


@pytest.mark.skipif(any(importlib.util.find_spec(name) is None for name in CLI_ONLY),
                    reason="httpx's command-line extras are not installed here, so nothing can load them")
def test_the_kiosk_never_loads_httpxs_command_line_tool() -> None:
    """With rich, click and pygments installed (as in a developer's venv), ``import httpx`` alone loads
    them (~6 MB resident); the kiosk's daemon, its call stack and its uplink must not."""
    probe = ("import sys, json, appliance.cli, appliance.call.webrtc, appliance.uplink, httpx; "
             f"print(json.dumps([m for m in {CLI_ONLY!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout) == []
    import httpx
    assert callable(httpx.main)  # httpx's own stub stands in, with a clear message if ever called
