"""One WebRTC call to the Realtime API (GA): SDP offer over HTTP, mic track up, tutor audio and
events down, clean hang-up, and a liveness monitor that notices a server that went silent.

The call reports everything through callbacks that run on the event loop; it owns no lesson state.
The HTTP exchange of the offer and its errors live in ``offer`` (CallError is raised from there and
re-exported here), the liveness monitor, and why the call needs one, in ``liveness``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from appliance.call import events
from appliance.call.events import ServerEvent
from appliance.call.liveness import LIVENESS_DEAD_S, LIVENESS_PROBE_S, LivenessMonitor
from appliance.call.offer import CALLS_PATH, CallError, post_offer
from appliance.common import timeline as stages
from appliance.common.timeline import CallTimeline
from appliance.common.tls import shared_ssl_context

if TYPE_CHECKING:  # aiortc and PyAV take ~0.5 s to import: not before the daemon is READY (see warm_up)
    from aiortc.mediastreams import MediaStreamTrack

    from appliance.audio.tracks import FrameSupplier

__all__ = ["CallError", "CallTimings", "RealtimeCall", "warm_up"]

log = logging.getLogger(__name__)

#: How long ``close()`` may take before it gives up on aiortc's own close.
CLOSE_TIMEOUT_S = 3.0


def warm_up() -> None:
    """Import the call stack (aiortc, PyAV) and load the TLS trust store, ahead of the first press.

    Why: together they cost ~0.5–1.5 s of CPU (measured); the daemon tells systemd it is READY
    without them and runs this in a worker thread right after, so neither the start nor the first
    press waits for it (a press during the warm-up simply waits for the import to finish).
    """
    import aiortc  # noqa: F401

    # What a first call would otherwise import on its way to connect: the certificate's and DTLS's
    # cryptography modules, ICE consent (~5 ms here, 20–50 ms of a Pi core, at call start).
    import cryptography.hazmat.backends.openssl
    import cryptography.hazmat.primitives.serialization  # noqa: F401

    import appliance.audio.speaker
    import appliance.audio.tracks
    import appliance.call.ice_consent  # noqa: F401

    shared_ssl_context()


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

        from appliance.audio.tracks import microphone_track

        servers = [RTCIceServer(urls=url) for url in (ice_servers or [])]
        # iceServers=[] explicitly: aiortc's default STUN server costs ~5 s when unreachable.
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self._mic_track = microphone_track(mic, mic_sample_rate)
        self._channel: Any = None
        self._channel_open = asyncio.Event()
        self._closing = False
        self._closed_reported = False
        self.call_id: str | None = None
        self.timings = CallTimings()
        #: Stage stamps of opening this call (the kiosk passes the lesson's, so press → … is one timeline).
        self.timeline = timeline if timeline is not None else CallTimeline()
        self.remote_is_lite = False
        self._close_timeout_s = close_timeout_s
        self._liveness = LivenessMonitor(liveness_probe_s, liveness_dead_s, send=self._send_on_channel,
                                         receivers=self._pc.getReceivers, on_dead=self._report_closed)

    @property
    def probes_sent(self) -> int:
        """Liveness probes sent so far on this call."""
        return self._liveness.probes_sent

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

        answer_sdp, self.call_id = await post_offer(self._url, self._token, pc.localDescription.sdp,
                                                    self._http_timeout_s)
        self.timeline.mark(stages.ANSWER_RECEIVED)
        self.remote_is_lite = "a=ice-lite" in answer_sdp
        answer_ms = (time.monotonic() - started) * 1000
        from aiortc import RTCSessionDescription

        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        await self._channel_open.wait()
        self.timeline.mark(stages.CHANNEL_OPEN)
        self._liveness.start(self.call_id)
        self.timings = CallTimings(offer_ms, answer_ms, (time.monotonic() - started) * 1000)
        log.info("call %s connected (offer %.0f ms, answer %.0f ms, channel open %.0f ms, ice-lite=%s)",
                 self.call_id, offer_ms, answer_ms, self.timings.channel_open_ms, self.remote_is_lite)

    def send(self, event: dict[str, Any]) -> bool:
        """Send a client event; False (logged) when the channel is not open."""
        if not self._send_on_channel(event):
            log.warning("not sent (data channel not open): %s", event.get("type"))
            return False
        if event.get("type") == "session.update":
            self._liveness.expect_update(str(event.get("event_id") or ""))
        return True

    def _send_on_channel(self, event: dict[str, Any]) -> bool:
        """Put ``event`` on the data channel; False when it is not open (the liveness probes use this too)."""
        if self._channel is None or self._channel.readyState != "open":
            return False
        self._channel.send(events.encode(event))
        return True

    async def close(self) -> None:
        """Hang up: close the data channel first (an immediate SCTP reset for the peer), then the PC.

        Bounded by ``close_timeout_s``: aiortc's close waits on transports that a dead peer never
        answers, and a hang-up must never hold the kiosk (it logs and moves on instead).
        """
        if self._closing:
            return
        self._closing = True
        self._liveness.stop()
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

    # -- callbacks from aiortc (on the loop) ------------------------------------------------

    def _handle_message(self, message: str | bytes) -> None:
        self._liveness.note_inbound()  # any message, even a malformed one, shows the server is alive
        event = events.parse_server_event(message)
        if event is not None and not self._liveness.is_probe_answer(event):
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
