"""Speaking to the Realtime simulator as a client does: a GA session, minting a token, and a kiosk-side
call that keeps every event and the level of the audio it receives. Shared by tests/test_simulator.py and
tests/test_simulator_fidelity.py."""

from __future__ import annotations

import asyncio

import httpx

from appliance.audio.dsp import rms_dbfs
from appliance.audio.tracks import frame_to_mono
from appliance.audio.wav import ScriptedMicrophone
from appliance.call.events import ServerEvent
from appliance.call.webrtc import RealtimeCall
from appliance.simulator.server import RealtimeSimulator
from tests.harness import API_KEY

GA_SESSION = {"type": "realtime", "model": "gpt-realtime-2.1-mini", "instructions": "Be Stella.",
              "output_modalities": ["audio"],
              "audio": {"output": {"voice": "marin"},
                        "input": {"transcription": {"model": "gpt-transcribe"},
                                  "turn_detection": {"type": "server_vad", "silence_duration_ms": 400}}}}


async def mint(sim: RealtimeSimulator, session: dict | None = None) -> str:
    """An ephemeral token for ``session`` (the GA session above by default), checked for its GA shape."""
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{sim.base_url}/v1/realtime/client_secrets",
                            headers={"Authorization": f"Bearer {API_KEY}"},
                            json={"expires_after": {"anchor": "created_at", "seconds": 60},
                                  "session": session or GA_SESSION})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["value"].startswith("ek_") and body["expires_at"] > 0
    return body["value"]


class Client:
    """A kiosk-side call plus everything it received."""

    def __init__(self, sim: RealtimeSimulator, token: str, mic: ScriptedMicrophone) -> None:
        self.events: list[ServerEvent] = []
        self.changed = asyncio.Event()
        self.levels: list[float] = []
        self.tasks: list[asyncio.Task] = []
        self.call = RealtimeCall(sim.base_url, token, mic.read, on_event=self._event,
                                 on_remote_track=self._track, on_closed=lambda r: None)

    def _event(self, event: ServerEvent) -> None:
        self.events.append(event)
        self.changed.set()

    def _track(self, track) -> None:
        async def drain() -> None:
            while True:
                frame = await track.recv()
                self.levels.append(rms_dbfs(frame_to_mono(frame)))
        self.tasks.append(asyncio.ensure_future(drain()))

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    async def until(self, event_type: str, count: int = 1, timeout: float = 15) -> ServerEvent:
        async with asyncio.timeout(timeout):
            while self.types().count(event_type) < count:
                self.changed.clear()
                await self.changed.wait()
        return [e for e in self.events if e.type == event_type][count - 1]

    async def first(self, predicate, timeout: float = 15) -> ServerEvent:
        """The first event (already received or still to come) that satisfies ``predicate``."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                self.changed.clear()
                await self.changed.wait()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.call.close()
