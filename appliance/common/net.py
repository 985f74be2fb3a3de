"""Network helpers shared by the kiosk, the simulator and the tests.

aioice leaves 127.0.0.1 out of its host candidates, so two aiortc peers on a machine whose only
interface is ``lo`` (a CI sandbox, ``unshare -n``) cannot find each other. Local stand-ins (the
simulator, the demo, the tests) opt in to loopback candidates explicitly with
:func:`enable_loopback_candidates`; the real kiosk never does unless its config asks for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import aioice.ice

log = logging.getLogger(__name__)

_original_get_host_addresses: Callable[[bool, bool], list[str]] | None = None


def enable_loopback_candidates() -> None:
    """Make aioice offer 127.0.0.1 as a host candidate too (idempotent, process-wide).

    Why process-wide: aioice looks the function up in its module on every gather, and offers no
    per-connection hook. Only loopback is added; real interfaces stay as they were.
    """
    global _original_get_host_addresses
    if _original_get_host_addresses is not None:
        return
    original = aioice.ice.get_host_addresses
    _original_get_host_addresses = original

    def get_host_addresses_with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = list(original(use_ipv4, use_ipv6))
        if use_ipv4 and "127.0.0.1" not in addresses:
            addresses.append("127.0.0.1")
        return addresses

    aioice.ice.get_host_addresses = get_host_addresses_with_loopback
    log.info("ICE: loopback host candidates enabled (local simulator mode)")


def loopback_candidates_enabled() -> bool:
    """Whether :func:`enable_loopback_candidates` has been applied in this process."""
    return _original_get_host_addresses is not None
