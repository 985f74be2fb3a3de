"""ICE-level behaviour of the simulated server: OpenAI's consent quirk, and a network partition on demand.

OpenAI's ICE-lite server reportedly ignores consent checks lacking USE-CANDIDATE.

Once ICE has completed, STUN binding requests without USE-CANDIDATE get no answer, so an aiortc
client without the kiosk's consent fix loses consent after ~30 s, exactly as against OpenAI.
This wraps one aioice ``Connection`` instance's ``request_received`` (aioice internals, checked
against aioice 0.9–0.13); nothing global changes.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import aioice.ice
from aioice import stun


def ignore_non_nominating_consent(connection: aioice.ice.Connection) -> None:
    original = connection.request_received

    def request_received(self: aioice.ice.Connection, message: stun.Message, addr: tuple[str, int],
                         protocol: aioice.ice.StunProtocol) -> None:
        if self._nominated and "USE-CANDIDATE" not in message.attributes:
            return
        original(message, addr, protocol)

    # mypy refuses assigning to a method; replacing it on this one instance is the point.
    connection.request_received = types.MethodType(request_received, connection)  # type: ignore[method-assign]


def partition(connection: aioice.ice.Connection, is_cut: Callable[[], bool],
              is_deaf: Callable[[], bool] | None = None) -> None:
    """While ``is_cut()`` holds, drop every datagram this connection sends; while ``is_deaf()`` holds
    (default: ``is_cut``), every datagram it receives. Both: a network partition.

    Nothing at all gets through (RTP, RTCP, DTLS/SCTP, ICE consent answers), exactly what a kiosk
    sees when the server's host freezes or the network between them breaks. Sending cut alone is a
    server that stalls but still takes in what the client sends (its hang-up, for one). The host
    sockets' protocols are wrapped per instance (aioice internals, as above); call after ICE gathering.
    """
    for protocol in connection._protocols:
        _cut_protocol(protocol, is_cut, is_deaf or is_cut)


def _cut_protocol(protocol: Any, is_cut: Callable[[], bool], is_deaf: Callable[[], bool]) -> None:
    received, send_data, send_stun = protocol.datagram_received, protocol.send_data, protocol.send_stun

    def datagram_received(data: Any, addr: Any) -> None:
        if not is_deaf():
            received(data, addr)

    async def send_data_unless_cut(data: bytes, addr: Any) -> None:
        if not is_cut():
            await send_data(data, addr)

    def send_stun_unless_cut(message: Any, addr: Any) -> None:
        if not is_cut():
            send_stun(message, addr)

    protocol.datagram_received = datagram_received
    protocol.send_data = send_data_unless_cut
    protocol.send_stun = send_stun_unless_cut
