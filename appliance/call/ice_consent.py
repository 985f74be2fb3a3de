"""ICE consent freshness that an ICE-lite peer (OpenAI's Realtime server) actually answers.

aioice sends RFC 7675 consent checks every ~5 s *without* USE-CANDIDATE and closes the connection
after six unanswered ones. OpenAI's ICE-lite server reportedly ignores checks that do not nominate,
so an aiortc call dies after ~30 s. Browsers (libwebrtc) always nominate, which is why they are fine.
The fix: toward an ICE-lite peer, while we are the controlling agent, consent checks on the
nominated pair carry USE-CANDIDATE. Re-nominating the already nominated pair is harmless (RFC 8445
§7.3.1.5): the peer just confirms the selected pair.

This relies on aioice internals (``Connection.query_consent``, ``_nominated``, ``build_request``,
``remote_password``), checked against aioice 0.9–0.13; pyproject pins aioice below 0.14 for it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import types

import aioice.ice
from aioice import stun
from aiortc import RTCPeerConnection

log = logging.getLogger(__name__)


async def _query_consent_nominating(self: aioice.ice.Connection) -> None:
    """aioice's ``query_consent``, except that checks nominate toward an ICE-lite peer."""
    failures = 0
    while True:
        interval = aioice.ice.CONSENT_INTERVAL
        await asyncio.sleep(interval * (0.8 + 0.4 * random.random()))
        nominate = bool(self.ice_controlling and self.remote_is_lite)
        for pair in list(self._nominated.values()):
            request = self.build_request(pair, nominate=nominate)
            password = self.remote_password
            assert password is not None  # known before any pair could be nominated
            try:
                await pair.protocol.request(
                    request,
                    pair.remote_addr,
                    integrity_key=password.encode("utf8"),
                    retransmissions=0,
                )
                failures = 0
            except stun.TransactionError:
                failures += 1
            if failures >= aioice.ice.CONSENT_FAILURES:
                log.warning("ICE: consent to send expired (peer stopped answering)")
                self._query_consent_task = None
                await self.close()
                return


def install_consent_fix(connection: aioice.ice.Connection) -> None:
    """Replace this connection's consent loop (instance-level, nothing global changes)."""
    # mypy refuses assigning to a method; replacing it on this one instance is the point.
    connection.query_consent = types.MethodType(_query_consent_nominating, connection)  # type: ignore[method-assign]


def ice_connections(pc: RTCPeerConnection) -> list[aioice.ice.Connection]:
    """The aioice connections behind an aiortc RTCPeerConnection (one with BUNDLE)."""
    found: list[aioice.ice.Connection] = []
    transports = [t.sender.transport for t in pc.getTransceivers() if t.sender.transport is not None]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    for dtls in transports:
        connection = dtls.transport._connection
        if connection not in found:
            found.append(connection)
    return found
