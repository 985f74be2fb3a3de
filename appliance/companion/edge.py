"""What the companion decides about a request before any handler reads it: its body, and who sent it.

Why here, first: aiohttp inflates a ``Content-Encoding: gzip`` body on the event loop as it arrives, and
after a handler answers without reading a body it drains the rest ("lingering") for up to 10 s, inflating
as it goes. One client sending a megabyte that inflates to a gigabyte then stalled every kiosk's token
request. Kiosks and browsers never send encoded request bodies, so they are refused (415) before a byte is
read, and a body too big to drain cheaply is never drained: the answer is written and the connection closed.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

MAX_BODY = 1024 * 1024
"""The largest request body any route reads."""
DRAIN_LIMIT = 4 * MAX_BODY
"""A refused body up to this size is still read to its end (milliseconds), so the client reads our answer
before the connection closes; a larger one, an encoded one or one of unknown length is not."""
LOOPBACK_PROXIES = frozenset({"127.0.0.1", "::1"})
"""What ``trust_proxy = true`` has always meant: a reverse proxy on this machine."""


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON answer in standard JSON only: a NaN that slipped into stored data must fail here, loudly,
    rather than reach a client whose parser refuses it."""
    return web.json_response(data, status=status, dumps=functools.partial(json.dumps, allow_nan=False))


def json_error(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status=status)


async def _answer_and_close(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Write ``response`` now and close the connection, so aiohttp does not drain (and inflate) the unread
    body on the event loop after it."""
    response.force_close()
    with contextlib.suppress(ConnectionError):  # a bomb's sender may be gone already: nothing to tell it
        await response.prepare(request)
        await response.write_eof()
    request.protocol.force_close()
    return response


def _encoded(request: web.Request) -> bool:
    return request.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")


@web.middleware
async def bounded_bodies(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse encoded bodies (415) and bodies declared too large (413) before reading them; after any
    answer, close instead of draining a body that was left unread and may be large."""
    if _encoded(request):
        return await _answer_and_close(request, json_error(
            415, "unsupported_encoding", "request bodies must not be compressed (send them without "
                                         "Content-Encoding)"))
    length = request.content_length
    if length is not None and length > MAX_BODY:
        too_large = json_error(413, "too_large", f"request bodies are limited to {MAX_BODY} bytes")
        # A few megabytes are drained as usual (the client then reads the 413 rather than a reset).
        return too_large if length <= DRAIN_LIMIT else await _answer_and_close(request, too_large)
    response = await handler(request)
    if not request.content.is_eof() and (length is None or length > DRAIN_LIMIT) and not response.prepared:
        return await _answer_and_close(request, response)
    return response


# -- who is knocking -------------------------------------------------------------------------------
def trusted_proxies(value: Any) -> frozenset[str]:
    """The ``trust_proxy`` setting as the proxy addresses whose X-Forwarded-For is believed.

    ``false`` (the default): none. ``true``: a proxy on this machine (127.0.0.1 and ::1), as before. An
    address or a list of addresses: exactly those. ValueError says what is wrong."""
    if value is False or value is None:
        return frozenset()
    if value is True:
        return LOOPBACK_PROXIES
    items: Iterable[Any] = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple | frozenset | set):
        raise ValueError(f"trust_proxy must be true, false, or the proxy's address(es), got {value!r}")
    found = set()
    for item in items:
        try:
            found.add(str(ipaddress.ip_address(str(item).strip())))
        except ValueError:
            raise ValueError(f"trust_proxy: {item!r} is not an IP address (name the reverse proxy's address, "
                             "e.g. \"127.0.0.1\")") from None
    return frozenset(found)


def client_address(request: web.Request, proxies: frozenset[str]) -> str:
    """The address limits count: the peer, unless the peer is one of our own reverse proxies, whose last
    X-Forwarded-For entry (the one it appended itself) names the client. Anyone else could pick their own
    address with that header, so it is read from the named proxies only."""
    peer = request.remote or "unknown"
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    # On a dual-stack socket an IPv4 peer shows as ::ffff:a.b.c.d: the same peer, named as configured.
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    peer_ip = str(mapped or address)
    if peer_ip not in proxies:
        return peer_ip
    last = request.headers.get("X-Forwarded-For", "").rsplit(",", 1)[-1].strip()[:64]
    return last or peer_ip
