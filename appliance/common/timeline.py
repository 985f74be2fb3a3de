"""Where the time between a button press and the tutor's first sound goes, stage by stage.

Why stamps and not one number: "press → connected" and "press → first tutor audio" alone cannot say
whether the companion, the offer, the HTTP round trip, ICE, DTLS, SCTP, the jitter buffer or the
speaker path is slow. Each stage is one monotonic instant, stamped once by the part that sees it
(the kiosk, the call, the speaker pump), so a benchmark or a lesson record can show every gap.

Stage names are stable (benchmarks and lesson records use them); a stage that did not happen
(a call that failed, a server that sent no audio) is simply missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

PRESSED = "pressed"
"""The button press that started the lesson (the origin of every other figure)."""
MATERIALS_READY = "materials_ready"
"""Plan and ephemeral token in hand (prefetched: at once; otherwise after the companion's answers)."""
OFFER_BUILT = "offer_built"
"""The SDP offer is complete (tracks, data channel, gathered ICE candidates); made ahead when idle."""
ANSWER_RECEIVED = "answer_received"
"""The POST of the offer to /v1/realtime/calls was answered with SDP."""
ICE_CONNECTED = "ice_connected"
"""ICE found a working candidate pair."""
DTLS_CONNECTED = "dtls_connected"
"""DTLS finished its handshake (the peer connection is "connected")."""
CHANNEL_OPEN = "channel_open"
"""The ``oai-events`` data channel is open: the kiosk shows "connected"."""
GREETING_SENT = "greeting_sent"
"""The kiosk asked for the tutor's greeting (``response.create``, after ``session.updated``)."""
SERVER_AUDIO_STARTED = "server_audio_started"
"""The server said its audio started (``output_audio_buffer.started``): its own time to speak ends here."""
FIRST_RTP = "first_rtp"
"""The first RTP packet from the server reached the kiosk (before aiortc's jitter buffer); servers that
send silence while idle (the simulator, by default) send it before any speech."""
FIRST_FRAME = "first_frame"
"""The first decoded tutor frame was handed to the speaker sink (silence or not)."""
FIRST_AUDIBLE = "first_audible"
"""The first audible tutor frame will leave the speaker (sink backlog included): "first tutor audio"."""

STAGES = (PRESSED, MATERIALS_READY, OFFER_BUILT, ANSWER_RECEIVED, ICE_CONNECTED, DTLS_CONNECTED,
          CHANNEL_OPEN, GREETING_SENT, SERVER_AUDIO_STARTED, FIRST_RTP, FIRST_FRAME, FIRST_AUDIBLE)
"""Every stage in the order a healthy call passes them."""


class CallTimeline:
    """Monotonic stamps of one call's stages; the first stamp of each stage wins.

    Why first-wins: a stage seen again (a second ICE check, a later frame) says nothing new about
    the start of the call, and callers need not track whether they already stamped.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.stamps: dict[str, float] = {}

    def mark(self, stage: str, at: float | None = None) -> None:
        """Stamp ``stage`` now (or at ``at``, a reading of the same clock) unless already stamped."""
        if stage not in STAGES:
            raise ValueError(f"unknown call stage {stage!r}; known: {', '.join(STAGES)}")
        self.stamps.setdefault(stage, self._clock() if at is None else at)

    def ms_since(self, origin: str = PRESSED) -> dict[str, float]:
        """Every stamped stage as ms after ``origin`` (empty when ``origin`` was never stamped)."""
        start = self.stamps.get(origin)
        if start is None:
            return {}
        return {stage: round((self.stamps[stage] - start) * 1000, 1) for stage in STAGES if stage in self.stamps}
