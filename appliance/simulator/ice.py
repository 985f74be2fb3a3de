"""Emulate OpenAI's ICE-lite server, which reportedly ignores consent checks lacking USE-CANDIDATE.

Once ICE has completed, STUN binding requests without USE-CANDIDATE get no answer, so an aiortc
client without the kiosk's consent fix loses consent after ~30 s, exactly as against OpenAI.
This wraps one aioice ``Connection`` instance's ``request_received`` (aioice internals, checked
against aioice 0.9–0.13); nothing global changes.
"""

from __future__ import annotations

import types
from typing import Any

import aioice.ice


def ignore_non_nominating_consent(connection: aioice.ice.Connection) -> None:
    original = connection.request_received

    def request_received(self: aioice.ice.Connection, message: Any, addr: Any, protocol: Any) -> None:
        if self._nominated and "USE-CANDIDATE" not in message.attributes:
            self.ignored_consent_checks = getattr(self, "ignored_consent_checks", 0) + 1
            return
        original(message, addr, protocol)

    connection.request_received = types.MethodType(request_received, connection)  # type: ignore[method-assign]
