"""One WebRTC call to the Realtime API (GA): SDP offer over HTTP, mic track up, tutor audio and
events down, clean hang-up.

The call reports everything through callbacks that run on the event loop; it owns no lesson state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from appliance.audio.tracks import FrameSupplier, PacedAudioTrack
from appliance.realtime import events
from appliance.realtime.events import ServerEvent
from appliance.realtime.ice_consent import ice_connections, install_consent_fix
from appliance.tls import describe_tls_error, ssl_context

log = logging.getLogger(__name__)

CALLS_PATH = "/v1/realtime/calls"


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
    must be drained); ``on_closed`` a reason when the call ends by itself (network, server).
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
    ) -> None:
        self._url = base_url.rstrip("/") + CALLS_PATH
        self._token = token
        self._on_event = on_event
        self._on_remote_track = on_remote_track
        self._on_closed = on_closed
        self._consent_fix = consent_fix
        self._http_timeout_s = http_timeout_s
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
        self.remote_is_lite = False

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

        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)  # gathers all candidates: no trickle needed
        if self._consent_fix:
            for connection in ice_connections(pc):
                install_consent_fix(connection)
        offer_ms = (time.monotonic() - started) * 1000

        answer_sdp = await self._post_offer(pc.localDescription.sdp)
        self.remote_is_lite = "a=ice-lite" in answer_sdp
        answer_ms = (time.monotonic() - started) * 1000
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        await self._channel_open.wait()
        self.timings = CallTimings(offer_ms, answer_ms, (time.monotonic() - started) * 1000)
        log.info("call %s connected (offer %.0f ms, answer %.0f ms, channel open %.0f ms, ice-lite=%s)",
                 self.call_id, offer_ms, answer_ms, self.timings.channel_open_ms, self.remote_is_lite)

    async def _post_offer(self, sdp: str) -> str:
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": "application/sdp"}
        try:
            async with httpx.AsyncClient(timeout=self._http_timeout_s, verify=ssl_context()) as client:
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
        return True

    async def close(self) -> None:
        """Hang up: close the data channel first (an immediate SCTP reset for the peer), then the PC."""
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(Exception):
            if self._channel is not None and self._channel.readyState in ("connecting", "open"):
                self._channel.close()
        self._mic_track.stop()
        with contextlib.suppress(Exception):
            await self._pc.close()

    # -- callbacks from aiortc (on the loop) ------------------------------------------------

    def _handle_message(self, message: str | bytes) -> None:
        event = events.parse_server_event(message)
        if event is not None:
            self._on_event(event)

    def _handle_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._on_remote_track(track)

    def _handle_connection_state(self) -> None:
        state = self._pc.connectionState
        log.debug("peer connection state: %s", state)
        if state in ("failed", "closed"):
            self._report_closed(f"connection {state}")

    def _report_closed(self, reason: str) -> None:
        if self._closing or self._closed_reported or not self._channel_open.is_set():
            return
        self._closed_reported = True
        self._on_closed(reason)


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
