"""What the kiosk loads into memory that it never uses: a board's whole call must fit in 100 MB."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

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


FIRST_CALL_PROBE = '''
import asyncio, json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, "scripts")
imported = []
watching = False
def note(event, args):
    if watching and event == "import":
        imported.append(args[0])
sys.addaudithook(note)
import bench_quota
from bench_stack import BenchServices
from appliance.common.net import enable_loopback_candidates

class Ready(bench_quota.CpuCap):
    def enter(self, pid):  # the kiosk is READY and warmed up: from here on, every import is the call's
        global watching
        watching = True

async def main():
    enable_loopback_candidates()
    with tempfile.TemporaryDirectory() as tmp:
        services = BenchServices(Path(tmp))
        await services.start()
        try:
            results = await bench_quota.kiosk_side(services.kiosk_settings(), Ready(Path(tmp), 1), 1, 1.0,
                                                   services.api_key)
        finally:
            await services.stop()
    print(json.dumps({"calls": len(results), "imported": sorted(set(imported))}))
asyncio.run(main())
'''


def test_a_first_call_imports_nothing_after_the_warm_up() -> None:
    """Whatever the first call imports on its way to connect (the certificate's and DTLS's cryptography
    modules, ICE consent: ~5 ms here, 20–50 ms of a Pi core) is imported by the warm-up after READY
    instead, so a real call (kiosk's own code, the simulator in its own process) imports nothing."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", FIRST_CALL_PROBE], capture_output=True, text=True,
                          timeout=180, cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["calls"] == 1
    assert figures["imported"] == []
