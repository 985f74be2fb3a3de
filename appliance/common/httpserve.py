"""Running the project's HTTP services (companion, simulator): bind, announce, stop on a signal.

Both print exactly one ``READY <url>`` line once they accept connections; the demo, the benchmarks
and the tests wait for that line instead of sleeping.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Protocol

from aiohttp import web


async def start_http(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app``; returns the runner (for cleanup) and the port actually bound (port 0 = any)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    port_bound: int = runner.addresses[0][1]  # (host, port, ...) of the site's first socket
    return runner, port_bound


class Service(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    @property
    def base_url(self) -> str: ...


async def serve_until_signal(service: Service) -> int:
    """Start, print ``READY <url>``, run until SIGTERM or SIGINT, stop cleanly; exit code 0."""
    await service.start()
    print(f"READY {service.base_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await service.stop()
    return 0
