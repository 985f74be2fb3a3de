"""The companion's update repository: serving it to kiosks and keeping its timestamp fresh.

Why the companion re-signs on a schedule: a kiosk refuses a timestamp past its expiry (one day), which
is what stops a frozen or replayed repository; so a companion that serves updates must re-sign well
before that, hourly checks re-signing once half the day is gone.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web

from appliance.companion.edge import json_error
from appliance.releases.keys import KeyFileError
from appliance.releases.repository import ReleaseError, open_repository

log = logging.getLogger(__name__)

REFRESH_INTERVAL_S = 3600.0


class UpdateService:
    """``GET /updates/metadata/<name>`` and ``GET /updates/targets/<sha256>.<name>`` for kiosks."""

    def __init__(self, directory: Path) -> None:
        try:
            self.repository = open_repository(directory)
        except KeyFileError as exc:
            raise ReleaseError(f"updates: {exc} (make one with `stella-kiosk release online-key`)") from None

    def file_response(self, kind: str, name: str) -> web.StreamResponse:
        path = self.repository.file_for(kind, name)
        if path is None:
            return json_error(404, "not_found", f"no {kind} file {name}")
        response = web.FileResponse(path)
        response.headers["Cache-Control"] = "no-store" if kind == "metadata" else "max-age=31536000, immutable"
        return response

    async def keep_fresh(self) -> None:
        """Hourly: re-sign the timestamp once half its life is gone (never let kiosks see it expire)."""
        while True:
            try:
                if await asyncio.to_thread(self.repository.refresh_timestamp):
                    log.info("updates: timestamp re-signed")
            except Exception as exc:  # a full disk must not end the rounds; the log says what to fix
                log.error("updates: could not re-sign the timestamp (kiosks refuse it after expiry): %s", exc)
            await asyncio.sleep(REFRESH_INTERVAL_S)
