"""One WebRTC call to the Realtime API (GA): SDP offer over HTTP, mic track up, tutor audio and
events down, clean hang-up, and a liveness monitor that notices a server that went silent.

The call reports everything through callbacks that run on the event loop; it owns no lesson state.

Why a liveness monitor: a server that freezes or a network that partitions mid-call produces no
error at all. ICE consent only gives up after ~30 s, so the kiosk would show "connected" to a dead
call for half a minute. The monitor watches inbound traffic (RTP packets and data channel
messages); after ``liveness_probe_s`` of silence it sends a probe every GA server answers
(``session.update`` carrying only ``{"type": "realtime"}``, answered by ``session.updated``), and after
``liveness_dead_s`` without anything inbound it reports the call closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from appliance.call import events
from appliance.call.events import ServerEvent
from appliance.common import timeline as stages
from appliance.common.timeline import CallTimeline
from appliance.common.tls import describe_tls_error, shared_ssl_context

if TYPE_CHECKING:  # aiortc and PyAV take ~0.5 s to import: not before the daemon is READY (see warm_up)
    from aiortc.mediastreams import MediaStreamTrack

    from appliance.audio.tracks import FrameSupplier

log = logging.getLogger(__name__)

CALLS_PATH = "/v1/realtime/calls"

#: Defaults of the liveness monitor: a probe after 1.5 s of inbound silence, dead after 4 s, so
#: the kiosk knows within 5 s that the server stopped answering.
LIVENESS_PROBE_S = 1.5
LIVENESS_DEAD_S = 4.0
#: A monitor tick this much later than due means the kiosk's own loop stalled: not the server's fault.
STALL_GRACE_S = 1.0
#: How long ``close()`` may take before it gives up on aiortc's own close.
CLOSE_TIMEOUT_S = 3.0
#: session.update events whose answer is still due (a bound, in case a server never answers).
MAX_UPDATES_IN_FLIGHT = 32


def warm_up() -> None:
    """Import the call stack (aiortc, PyAV) and load the TLS trust store, ahead of the first press.

    Why: together they cost ~0.5–1.5 s of CPU (measured); the daemon tells systemd it is READY
    without them and runs this in a worker thread right after, so neither the start nor the first
    press waits for it (a press during the warm-up simply waits for the import to finish).
    """
    import aiortc  # noqa: F401

    import appliance.audio.speaker
    import appliance.audio.tracks  # noqa: F401

    shared_ssl_context()


class CallError(Exception):
    """The call could not be opened or broke; ``retryable`` tells whether pressing again may help."""

    def __init__(self, message: str, code: str = "call_failed", retryable: bool = True,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retryable = retryable
        self.status = status


@dataclass(frozen=True)
class CallTimings:
    """Milestones of opening a call, in ms since ``open()`` began."""

    offer_ms: float = 0.0
    answer_ms: float = 0.0
    channel_open_ms: float = 0.0


class RealtimeCall:
    """A Realtime call over aiortc.

    ``on_event`` gets every parsed server event; ``on_remote_track`` the tutor's audio track (it
    must be drained); ``on_closed`` a reason when the call ends by itself (network, server, or no
    inbound traffic for ``liveness_dead_s``), at most once and never after ``close()``.

    Liveness probes are invisible to ``on_event``: the ``session.updated`` answering a probe (matched
    in order with the session.update events this call sent) and an ``error`` naming a probe's
    ``event_id`` are not forwarded. A ``session.updated`` answering the owner's own ``session.update``
    still is. ``liveness_probe_s=0`` sends no probes; ``liveness_dead_s=0`` never declares the call dead.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        mic: FrameSupplier,
        *,
        on_event: Callable[[ServerEvent], None],
        on_remote_track: Callable[[MediaStreamTrack], None],
        on_closed: Callable[[str], None],
        ice_servers: list[str] | None = None,
        consent_fix: bool = True,
        mic_sample_rate: int = 48000,
        http_timeout_s: float = 10.0,
        liveness_probe_s: float = LIVENESS_PROBE_S,
        liveness_dead_s: float = LIVENESS_DEAD_S,
        close_timeout_s: float = CLOSE_TIMEOUT_S,
        timeline: CallTimeline | None = None,
    ) -> None:
        if liveness_probe_s < 0 or liveness_dead_s < 0 or close_timeout_s <= 0:
            raise ValueError("liveness_probe_s and liveness_dead_s must be >= 0, close_timeout_s > 0")
        self._url = base_url.rstrip("/") + CALLS_PATH
        self._token = token
        self._on_event = on_event
        self._on_remote_track = on_remote_track
        self._on_closed = on_closed
        self._consent_fix = consent_fix
        self._http_timeout_s = http_timeout_s
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

        from appliance.audio.tracks import PacedAudioTrack

        servers = [RTCIceServer(urls=url) for url in (ice_servers or [])]
        # iceServers=[] explicitly: aiortc's default STUN server costs ~5 s when unreachable.
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self._mic_track = PacedAudioTrack(mic, sample_rate=mic_sample_rate)
        self._channel: Any = None
        self._channel_open = asyncio.Event()
        self._closing = False
        self._closed_reported = False
        self.call_id: str | None = None
        self.timings = CallTimings()
        #: Stage stamps of opening this call (the kiosk passes the lesson's, so press → … is one timeline).
        self.timeline = timeline if timeline is not None else CallTimeline()
        self.remote_is_lite = False
        self._probe_after_s = liveness_probe_s
        self._dead_after_s = liveness_dead_s
        self._close_timeout_s = close_timeout_s
        self._last_inbound = time.monotonic()
        self._rtp_packets = 0
        self._probe_sent_at: float | None = None
        self._probes: set[str] = set()
        self._updates_in_flight: deque[str] = deque()
        self._monitor: asyncio.Task[None] | None = None
        self.probes_sent = 0

    @property
    def connected(self) -> bool:
        return self._channel_open.is_set() and not self._closing

    async def open(self, timeout_s: float) -> None:
        """Offer, POST it, apply the answer and wait until ``oai-events`` is open.

        Raises CallError (never a bare aiortc/httpx exception) and leaves nothing running.
        """
        try:
            await asyncio.wait_for(self._open(), timeout_s)
        except TimeoutError:
            await self.close()
            raise CallError(f"the Realtime call did not connect within {timeout_s:g} s",
                            code="connect_timeout") from None
        except CallError:
            await self.close()
            raise
        except Exception as exc:  # aiortc raises assorted errors on a bad answer
            await self.close()
            raise CallError(f"the Realtime call failed: {exc}") from exc

    async def _open(self) -> None:
        started = time.monotonic()
        pc = self._pc
        pc.addTrack(self._mic_track)
        self._channel = pc.createDataChannel("oai-events")
        self._channel.on("open", self._channel_open.set)
        self._channel.on("message", self._handle_message)
        self._channel.on("close", lambda: self._report_closed("data channel closed"))
        pc.on("track", self._handle_track)
        pc.on("connectionstatechange", self._handle_connection_state)
        pc.on("iceconnectionstatechange", self._handle_ice_state)

        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)  # gathers all candidates: no trickle needed
        if self._consent_fix:
            from appliance.call.ice_consent import ice_connections, install_consent_fix

            for connection in ice_connections(pc):
                install_consent_fix(connection)
        for receiver in pc.getReceivers():
            _stamp_first_rtp(receiver, self.timeline)
        self.timeline.mark(stages.OFFER_BUILT)
        offer_ms = (time.monotonic() - started) * 1000

        answer_sdp = await self._post_offer(pc.localDescription.sdp)
        self.timeline.mark(stages.ANSWER_RECEIVED)
        self.remote_is_lite = "a=ice-lite" in answer_sdp
        answer_ms = (time.monotonic() - started) * 1000
        from aiortc import RTCSessionDescription

        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        await self._channel_open.wait()
        self.timeline.mark(stages.CHANNEL_OPEN)
        self._note_inbound()
        if self._probe_after_s > 0 or self._dead_after_s > 0:
            self._monitor = asyncio.create_task(self._watch_liveness(), name="realtime-liveness")
        self.timings = CallTimings(offer_ms, answer_ms, (time.monotonic() - started) * 1000)
        log.info("call %s connected (offer %.0f ms, answer %.0f ms, channel open %.0f ms, ice-lite=%s)",
                 self.call_id, offer_ms, answer_ms, self.timings.channel_open_ms, self.remote_is_lite)

    async def _post_offer(self, sdp: str) -> str:
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": "application/sdp"}
        try:
            async with httpx.AsyncClient(timeout=self._http_timeout_s, verify=shared_ssl_context()) as client:
                response = await client.post(self._url, content=sdp.encode(), headers=headers)
        except httpx.TimeoutException:
            raise CallError(f"no answer from {self._url} (timeout)", code="http_timeout") from None
        except httpx.HTTPError as exc:
            words = describe_tls_error(exc, httpx.URL(self._url).host, ca_setting=None) or str(exc)
            raise CallError(f"cannot reach {self._url}: {words}", code="network") from None
        if response.status_code != 201:
            raise _http_error(response)
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("application/sdp") or "v=0" not in response.text:
            kind = content_type or "no type"
            raise CallError(f"the Realtime server answered 201 but not with SDP ({kind})",
                            code="bad_answer", retryable=False)
        location = response.headers.get("location", "")
        self.call_id = location.rstrip("/").rsplit("/", 1)[-1] or None
        return response.text

    def send(self, event: dict[str, Any]) -> bool:
        """Send a client event; False (logged) when the channel is not open."""
        if self._channel is None or self._channel.readyState != "open":
            log.warning("not sent (data channel not open): %s", event.get("type"))
            return False
        self._channel.send(events.encode(event))
        if event.get("type") == "session.update":
            self._expect_update(str(event.get("event_id") or ""))
        return True

    async def close(self) -> None:
        """Hang up: close the data channel first (an immediate SCTP reset for the peer), then the PC.

        Bounded by ``close_timeout_s``: aiortc's close waits on transports that a dead peer never
        answers, and a hang-up must never hold the kiosk (it logs and moves on instead).
        """
        if self._closing:
            return
        self._closing = True
        if self._monitor is not None:
            self._monitor.cancel()
        # Only on a live transport: closing the channel of a call that already dropped makes aiortc
        # start a stream reset that fails ("not connected") in a task nobody awaits — a traceback in
        # the journal for nothing. The peer connection's close below tidies up either way.
        with contextlib.suppress(Exception):
            if (self._channel is not None and self._channel.readyState in ("connecting", "open")
                    and self._pc.connectionState == "connected"):
                self._channel.close()
        self._mic_track.stop()
        try:
            async with asyncio.timeout(self._close_timeout_s):
                await self._pc.close()
        except TimeoutError:
            log.warning("call %s: the peer connection did not close within %g s; left behind",
                        self.call_id, self._close_timeout_s)
        except Exception as exc:  # aiortc's close can trip over half-built transports
            log.debug("call %s: error while closing the peer connection: %s", self.call_id, exc)

    # -- liveness ---------------------------------------------------------------------------

    def _note_inbound(self) -> None:
        self._last_inbound = time.monotonic()

    async def _watch_liveness(self) -> None:
        """Probe a silent server, and report the call closed when it stays silent.

        Inbound RTP is read from the receivers' statistics (aiortc's public ``getStats``) rather
        than by wrapping the track handed to ``on_remote_track``: the stats count packets as they
        arrive from the network, whether or not (or how fast) the owner drains the track, and the
        owner keeps the real track object.
        """
        limits = [s for s in (self._probe_after_s, self._dead_after_s) if s > 0]
        tick = min(0.25, min(limits) / 4)
        last_tick = time.monotonic()
        try:
            self._rtp_packets = await self._inbound_rtp_packets()
            while not self._closing:
                await asyncio.sleep(tick)
                packets = await self._inbound_rtp_packets()
                now = time.monotonic()
                if now - last_tick > tick + STALL_GRACE_S:
                    # Our own loop was blocked: what the server sent meanwhile is not read yet.
                    log.warning("call %s: event loop stalled for %.1f s", self.call_id, now - last_tick)
                    self._note_inbound()
                last_tick = now
                if packets != self._rtp_packets:
                    self._rtp_packets = packets
                    self._note_inbound()
                silent_s = time.monotonic() - self._last_inbound
                if 0 < self._dead_after_s <= silent_s:
                    log.warning("call %s: nothing from the Realtime server for %.1f s", self.call_id, silent_s)
                    self._report_closed(f"no answer from the Realtime server for {self._dead_after_s:g} s")
                    return
                if 0 < self._probe_after_s <= silent_s and (
                        self._probe_sent_at is None or self._probe_sent_at < self._last_inbound):
                    self._send_probe()
        except Exception:  # a bug here must be visible, not a silently unwatched call
            log.exception("call %s: the liveness monitor failed; the call is no longer watched", self.call_id)

    async def _inbound_rtp_packets(self) -> int:
        total = 0
        for receiver in self._pc.getReceivers():
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
        if self._channel is None or self._channel.readyState != "open":
            return
        probe = events.session_update()
        self._channel.send(events.encode(probe))
        self._probes.add(probe["event_id"])
        self._expect_update(probe["event_id"])
        self._probe_sent_at = time.monotonic()
        self.probes_sent += 1
        log.debug("call %s: liveness probe %s", self.call_id, probe["event_id"])

    def _expect_update(self, event_id: str) -> None:
        if len(self._updates_in_flight) >= MAX_UPDATES_IN_FLIGHT:
            self._probes.discard(self._updates_in_flight.popleft())
        self._updates_in_flight.append(event_id)

    def _is_probe_answer(self, event: ServerEvent) -> bool:
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

    # -- callbacks from aiortc (on the loop) ------------------------------------------------

    def _handle_message(self, message: str | bytes) -> None:
        self._note_inbound()  # any message, even a malformed one, shows the server is alive
        event = events.parse_server_event(message)
        if event is not None and not self._is_probe_answer(event):
            self._on_event(event)

    def _handle_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._on_remote_track(track)

    def _handle_ice_state(self) -> None:
        if self._pc.iceConnectionState in ("connected", "completed"):
            self.timeline.mark(stages.ICE_CONNECTED)

    def _handle_connection_state(self) -> None:
        state = self._pc.connectionState
        log.debug("peer connection state: %s", state)
        if state == "connected":  # aiortc: every DTLS transport finished its handshake
            self.timeline.mark(stages.DTLS_CONNECTED)
        if state in ("failed", "closed"):
            self._report_closed(f"connection {state}")

    def _report_closed(self, reason: str) -> None:
        if self._closing or self._closed_reported or not self._channel_open.is_set():
            return
        self._closed_reported = True
        self._on_closed(reason)


def _stamp_first_rtp(receiver: Any, timeline: CallTimeline) -> None:
    """Stamp FIRST_RTP when ``receiver`` gets its first RTP packet, then step out of the way.

    Why wrap aiortc's (private) packet handler on this one instance: nothing public fires per
    packet, and the decoded frame comes only after the jitter buffer (~80 ms later), which is the
    very delay this stage separates out. The wrapper removes itself after the first packet, so the
    audio path pays nothing afterwards; if aiortc renames the handler the stage is just missing.
    """
    original = getattr(receiver, "_handle_rtp_packet", None)
    if original is None or not callable(original):
        return

    async def first_packet(packet: Any, arrival_time_ms: int) -> None:
        timeline.mark(stages.FIRST_RTP)
        with contextlib.suppress(AttributeError):
            del receiver._handle_rtp_packet  # back to the class's own method
        await original(packet, arrival_time_ms=arrival_time_ms)

    receiver._handle_rtp_packet = first_packet


def _http_error(response: httpx.Response) -> CallError:
    """Turn an error answer into a CallError with the server's own message when it gave one."""
    status = response.status_code
    code, message = f"http_{status}", response.reason_phrase
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        error = response.json()["error"]
        code = str(error.get("code") or error.get("type") or code)
        message = str(error.get("message") or message)
    retryable = status >= 500 or status in (408, 429)
    if status == 401:
        message = f"the Realtime server refused the token ({message})"
    return CallError(f"Realtime call refused: HTTP {status} {code}: {message}", code=code,
                     retryable=retryable, status=status)
