"""The updater's parts on a kiosk, built from its config: the companion's signed repository, its rollout
assignment and heartbeat, the installer, systemd's unit and the daemon's control socket.

Why apart from the updater: the update round (:mod:`appliance.updates.updater`) only sees callables
and small protocols, so the tests run it against real processes or cheap stand-ins; this is the one
place that knows how a kiosk reaches each part.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from appliance.common.tls import companion_ssl_context
from appliance.config import Config
from appliance.updates.fetcher import CompanionFetcher
from appliance.updates.finder import Release, ReleaseFinder
from appliance.updates.health import check_health
from appliance.updates.hold import DaemonHold
from appliance.updates.install import Installer
from appliance.updates.layout import Layout
from appliance.updates.progress import Progress
from appliance.updates.service import KioskService, SystemdService
from appliance.updates.updater import UpdaterParts
from appliance.uplink.client import CompanionClient

log = logging.getLogger(__name__)


class CompanionLink:
    """The companion, as the updater uses it: the repository, the assignment, the heartbeat."""

    def __init__(self, config: Config, trusted_root: bytes) -> None:
        self.config = config
        self.device_key = config.read_device_key()
        self.ssl_context = companion_ssl_context(config)
        self.finder = ReleaseFinder(f"{config.companion.url.rstrip('/')}/updates", config.kiosk.state_dir,
                                    trusted_root, CompanionFetcher(self.device_key, self.ssl_context))

    def _client(self) -> CompanionClient:
        return CompanionClient(self.config.companion.url, self.device_key, self.config.kiosk.id,
                               timeout_s=self.config.companion.timeout_s, ssl_context=self.ssl_context)

    def find(self, installed: str, wanted: str | None, skip: frozenset[str]) -> Release | None:
        return self.finder.find(installed, wanted, skip)

    def assignment(self) -> tuple[bool, str | None]:
        async def ask() -> tuple[bool, str | None]:
            client = self._client()
            try:
                return await client.update_assignment()
            finally:
                await client.aclose()

        return asyncio.run(ask())

    def report(self, progress: Progress, version: str) -> None:
        """A heartbeat with the update's state, marked as the updater's (only these fields: the companion
        keeps what the daemon last reported for the rest)."""
        body = {"updater": True, "version": version, "update_state": progress.state, "update_error": progress.error}

        async def send() -> None:
            client = self._client()
            try:
                await client.heartbeat(body)
            finally:
                await client.aclose()

        asyncio.run(send())


def kiosk_parts(config: Config, *, service: KioskService | None = None, python: str = sys.executable,
                extra_site: tuple[Path, ...] = ()) -> UpdaterParts:
    """Everything an update round needs on this kiosk (``service``, ``python`` and ``extra_site`` for tests)."""
    settings = config.updates
    layout = Layout(settings.prefix)
    link = CompanionLink(config, settings.trusted_root.read_bytes())
    service = service or SystemdService()
    socket_path = config.kiosk.control_socket
    config_path = Path(config.source)

    def health(version: str) -> None:
        check_health(service, socket_path, version, layout.venv_bin(layout.current) / "python", config_path,
                     settings.health_timeout_s)

    return UpdaterParts(layout=layout, state_dir=config.kiosk.state_dir, find=link.find,
                        assignment=link.assignment, installer=Installer(layout, python, extra_site),
                        service=service, hold=DaemonHold(socket_path), health=health, report=link.report,
                        hold_bound_s=config.lesson.max_minutes * 60 + 120)
