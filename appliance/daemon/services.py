"""Start the local stand-ins (simulator, companion) as child processes and wait until they listen.

Each prints one line ``READY <url>`` on stdout once it accepts connections; waiting for that line
(with a deadline) is how the demo, the benchmarks and the tests know a server is up, never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path


class ServiceError(Exception):
    """A child server did not start; the message includes the end of its log."""


class ChildServer:
    """``stella-kiosk <args>`` in a child process, its stderr kept in ``log_path``."""

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.url = ""
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, timeout_s: float = 30.0) -> str:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log_file:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "appliance.cli", *self.args,
                stdout=asyncio.subprocess.PIPE, stderr=log_file, env=self.env,
            )
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    line = await self.process.stdout.readline()
                    if not line:
                        raise ServiceError(f"{self.name} exited before it was ready "
                                           f"(code {await self.process.wait()}): {self._log_tail()}")
                    text = line.decode(errors="replace").strip()
                    if text.startswith("READY "):
                        self.url = text.split(" ", 1)[1].strip()
                        return self.url
        except TimeoutError:
            await self.stop()
            raise ServiceError(f"{self.name} was not ready within {timeout_s:g} s: {self._log_tail()}") from None

    async def stop(self, timeout_s: float = 10.0) -> int | None:
        process = self.process
        if process is None or process.returncode is not None:
            return None if process is None else process.returncode
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            return await asyncio.wait_for(process.wait(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            return await process.wait()

    def _log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"
