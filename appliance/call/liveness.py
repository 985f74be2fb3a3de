"""Noticing a Realtime server that went silent mid-call: the call's liveness monitor.

Why a liveness monitor: a server that freezes or a network that partitions mid-call produces no
error at all. ICE consent only gives up after ~30 s, so the kiosk would show "connected" to a dead
call for half a minute. The monitor watches inbound traffic (RTP packets and data channel
messages); after ``probe_after_s`` of silence it sends a probe every GA server answers
(``session.update`` carrying only ``{"type": "realtime"}``, answered by ``session.updated``), and after
``dead_after_s`` without anything inbound it reports the call closed.

Why apart from the call: it owns its own clock of inbound traffic and the bookkeeping that keeps
probes invisible to the call's owner (which ``session.updated`` answers a probe), and it reaches the
call only through three callables: send an event, list the receivers, report the call dead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from appliance.call import events
from appliance.call.events import ServerEvent

log = logging.getLogger(__name__)

#: Defaults of the liveness monitor: a probe after 1.5 s of inbound silence, dead after 4 s, so
#: the kiosk knows within 5 s that the server stopped answering.
LIVENESS_PROBE_S = 1.5
LIVENESS_DEAD_S = 4.0
#: A monitor tick this much later than due means the kiosk's own loop stalled: not the server's fault.
STALL_GRACE_S = 1.0
#: session.update events whose answer is still due (a bound, in case a server never answers).
MAX_UPDATES_IN_FLIGHT = 32


class LivenessMonitor:
    """Watches one call's inbound traffic, probes a silent server and reports a dead one.

    ``send`` puts a client event on the data channel (False when it is not open), ``receivers``
    lists the peer connection's RTP receivers, ``on_dead`` gets the reason once the server stayed
    silent for ``dead_after_s``. ``probe_after_s=0`` sends no probes; ``dead_after_s=0`` never
    declares the call dead; with both 0 nothing is watched, but updates are still matched.
    """

    def __init__(self, probe_after_s: float, dead_after_s: float, *,
                 send: Callable[[dict[str, Any]], bool], receivers: Callable[[], Iterable[Any]],
                 on_dead: Callable[[str], None]) -> None:
        self._probe_after_s = probe_after_s
        self._dead_after_s = dead_after_s
        self._send = send
        self._receivers = receivers
        self._on_dead = on_dead
        self.call_id: str | None = None
        """For log lines: the call this watches, once the server named it."""
        self._last_inbound = time.monotonic()
        self._rtp_packets = 0
        self._probe_sent_at: float | None = None
        self._probes: set[str] = set()
        self._updates_in_flight: deque[str] = deque()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.probes_sent = 0

    def start(self, call_id: str | None) -> None:
        """The data channel just opened: that counts as inbound, and watching begins (if asked for)."""
        self.call_id = call_id
        self.note_inbound()
        if self._probe_after_s > 0 or self._dead_after_s > 0:
            self._task = asyncio.create_task(self._watch(), name="realtime-liveness")

    def stop(self) -> None:
        """The call is closing: stop watching (nothing is reported after this)."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()

    def note_inbound(self) -> None:
        self._last_inbound = time.monotonic()

    async def _watch(self) -> None:
        """Probe a silent server, and report the call closed when it stays silent.

        Inbound RTP is read from the receivers' statistics (aiortc's public ``getStats``) rather
        than by wrapping the track handed to ``on_remote_track``: the stats count packets as they
        arrive from the network, whether or not (or how fast) the owner drains the track, and the
        owner keeps the real track object. They are read only when the data channel has been quiet
        for a tick: while the tutor talks its events show the server is alive, and a statistics
        report (every transport and stream, ~0.1 ms here, up to 1 ms on a board) four times a
        second would be spent for nothing.
        """
        limits = [s for s in (self._probe_after_s, self._dead_after_s) if s > 0]
        tick = min(0.25, min(limits) / 4)
        last_tick = time.monotonic()
        try:
            self._rtp_packets = await self._inbound_rtp_packets()
            while not self._stopped:
                await asyncio.sleep(tick)
                now = time.monotonic()
                if now - last_tick > tick + STALL_GRACE_S:
                    # Our own loop was blocked: what the server sent meanwhile is not read yet.
                    log.warning("call %s: event loop stalled for %.1f s", self.call_id, now - last_tick)
                    self.note_inbound()
                last_tick = now
                if now - self._last_inbound >= tick:  # the data channel said nothing for a tick: ask RTP
                    packets = await self._inbound_rtp_packets()
                    if packets != self._rtp_packets:
                        self._rtp_packets = packets
                        self.note_inbound()
                silent_s = time.monotonic() - self._last_inbound
                if 0 < self._dead_after_s <= silent_s:
                    log.warning("call %s: nothing from the Realtime server for %.1f s", self.call_id, silent_s)
                    self._on_dead(f"no answer from the Realtime server for {self._dead_after_s:g} s")
                    return
                if 0 < self._probe_after_s <= silent_s and (
                        self._probe_sent_at is None or self._probe_sent_at < self._last_inbound):
                    self._send_probe()
        except Exception:  # a bug here must be visible, not a silently unwatched call
            log.exception("call %s: the liveness monitor failed; the call is no longer watched", self.call_id)

    async def _inbound_rtp_packets(self) -> int:
        total = 0
        for receiver in self._receivers():
            try:
                report = await receiver.getStats()
            except Exception as exc:  # stats are a hint; a failure must not stop the monitor
                log.debug("receiver stats unavailable: %s", exc)
                continue
            total += sum(getattr(stats, "packetsReceived", 0) for stats in report.values()
                         if getattr(stats, "type", "") == "inbound-rtp")
        return total

    def _send_probe(self) -> None:
        """One ``session.update`` that changes nothing; any GA server answers ``session.updated``."""
        probe = events.session_update()
        if not self._send(probe):  # the data channel is not open
            return
        self._probes.add(probe["event_id"])
        self.expect_update(probe["event_id"])
        self._probe_sent_at = time.monotonic()
        self.probes_sent += 1
        log.debug("call %s: liveness probe %s", self.call_id, probe["event_id"])

    def expect_update(self, event_id: str) -> None:
        """A ``session.update`` went out (a probe or the owner's): its answer comes in order."""
        if len(self._updates_in_flight) >= MAX_UPDATES_IN_FLIGHT:
            self._probes.discard(self._updates_in_flight.popleft())
        self._updates_in_flight.append(event_id)

    def is_probe_answer(self, event: ServerEvent) -> bool:
        """Whether ``event`` answers a liveness probe (then it is not the owner's business)."""
        if event.type == "session.updated" and self._updates_in_flight:
            answered = self._updates_in_flight.popleft()  # the server answers session.update in order
            if answered in self._probes:
                self._probes.discard(answered)
                return True
        elif event.type == "error":
            error = event.get("error")
            failed = error.get("event_id") if isinstance(error, dict) else None
            if isinstance(failed, str) and failed in self._updates_in_flight:
                self._updates_in_flight.remove(failed)
                if failed in self._probes:
                    self._probes.discard(failed)
                    log.warning("call %s: the Realtime server refused a liveness probe: %s",
                                self.call_id, error.get("message"))
                    return True
        return False
