"""A real lesson stack for tests: simulator + companion on 127.0.0.1 and a kiosk on mock pins.

Everything is real (HTTP servers, aiortc WebRTC over loopback, files); only the pins are gpiozero's
MockFactory and the microphone/speaker are the WAV stand-ins.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin

from appliance.audio.wav import ScriptedMicrophone, WavFileSink
from appliance.common.net import enable_loopback_candidates
from appliance.common.tls import companion_ssl_context
from appliance.companion.server import CompanionConfig, CompanionServer
from appliance.config import Config, LedSettings, config_from_dict
from appliance.core.kiosk import Kiosk
from appliance.core.observer import NullObserver
from appliance.core.state import State
from appliance.core.transcript import Turn
from appliance.daemon.assemble import build_kiosk
from appliance.daemon.preflight import write_key_file
from appliance.hardware.button import ButtonBridge
from appliance.hardware.leds import make_status_leds
from appliance.simulator.asr import DEFAULT_PHRASES
from appliance.simulator.server import RealtimeSimulator, SimulatorConfig
from appliance.store.sessions import SessionStore
from appliance.uplink.client import CompanionClient

API_KEY = "sk-test-" + "0" * 16
LED_PINS = LedSettings()
"""The status LEDs' default pins (idle 22, connecting 23, connected 24, error 25)."""
KIOSK_ID = "kiosk-test"


def espeak(text: str, path: Path) -> Path:
    """Speak ``text`` to a WAV file (the test learner's voice)."""
    assert shutil.which("espeak-ng"), "espeak-ng is required (scripts/setup.sh installs it)"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), text], check=True,
                   capture_output=True)
    return path


async def mint_token(base_url: str, model: str = "gpt-realtime-2.1-mini") -> str:
    """An ephemeral token from a simulator at ``base_url`` (what the companion would hand a kiosk)."""
    import httpx

    async with httpx.AsyncClient() as http:
        response = await http.post(f"{base_url}/v1/realtime/client_secrets",
                                   headers={"Authorization": f"Bearer {API_KEY}"},
                                   json={"session": {"type": "realtime", "model": model}})
    response.raise_for_status()
    return response.json()["value"]


class Recorder(NullObserver):
    """Kiosk observer that turns callbacks into awaitable conditions."""

    def __init__(self) -> None:
        self.states: list[State] = []
        self.turns: list[Turn] = []
        self.audible: list[bool] = []
        self.saved: list[tuple[dict[str, Any], bool]] = []
        self.timeline: list[tuple[float, State | str]] = []
        """(monotonic time, state) for every state change, and "audible"/"quiet" for the tutor's audio."""
        self._changed = asyncio.Event()

    def _poke(self) -> None:
        self._changed.set()

    def state_changed(self, state: State, detail: str) -> None:
        self.states.append(state)
        self.timeline.append((time.monotonic(), state))
        self._poke()

    def turn(self, turn: Turn) -> None:
        self.turns.append(turn)
        self._poke()

    def tutor_audible(self, audible: bool) -> None:
        self.audible.append(audible)
        self.timeline.append((time.monotonic(), "audible" if audible else "quiet"))
        self._poke()

    def lesson_saved(self, record: dict[str, Any], synced: bool) -> None:
        self.saved.append((record, synced))
        self._poke()

    async def until(self, predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
        """Wait until ``predicate()`` holds, re-checking on every observed event."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            turns = [(t.role, t.text) for t in self.turns]
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; states {self.states}, "
                                 f"audible {self.audible[-6:]}, turns {turns}") from None

    def tutor_turns(self) -> list[Turn]:
        return [t for t in self.turns if t.role == "tutor"]

    def learner_turns(self) -> list[Turn]:
        return [t for t in self.turns if t.role == "learner"]


@dataclass
class Stack:
    simulator: RealtimeSimulator
    companion: CompanionServer
    device_key: str
    tmp: Path
    kiosks: list[Kiosk] = field(default_factory=list)
    pins: MockFactory | None = None
    """The mock pins of the last kiosk started (drive its button, read its LEDs)."""
    released_at: float = float("-inf")
    """When the test last released the button (a press within the debounce window after it is bounce)."""
    button: ButtonBridge | None = None
    """The button wiring of a kiosk started with ``hardware=True``, as `stella-kiosk run` wires it."""

    def config(self, **sections: dict[str, Any]) -> Config:
        data: dict[str, Any] = {
            "kiosk": {"id": KIOSK_ID, "state_dir": str(self.tmp / "state")},
            "companion": {"url": self.companion.base_url, "device_key_file": str(self.tmp / "device.key")},
            "realtime": {"base_url": self.simulator.base_url, "allow_loopback_ice": True},
            "audio": {"input": "wav", "output": "wav", "output_wav": str(self.tmp / "tutor.wav"), "cues": False},
            "gpio": {"pin_factory": "mock"},
        }
        for name, values in sections.items():
            data.setdefault(name, {}).update(values)
        write_key_file(self.tmp / "device.key", self.device_key)
        return config_from_dict(data, source="test")

    @asynccontextmanager
    async def kiosk(self, config: Config | None = None, mic: Any = None, speaker: Any = None,
                    hardware: bool = False, store: SessionStore | None = None,
                    call_factory: Any = None, warm: Callable[[], None] | None = None,
                    ) -> AsyncIterator[tuple[Kiosk, Recorder, Any]]:
        """A running kiosk. ``hardware``: the status LEDs and the button on the mock pins (``self.pins``),
        wired as the daemon wires them; ``store``/``call_factory``/``warm`` (the call stack's warm-up)
        replace those parts."""
        config = config or self.config()
        self.pins = MockFactory(pin_class=MockPWMPin)
        Device.pin_factory = self.pins
        mic = mic or ScriptedMicrophone(sample_rate=config.audio.sample_rate)
        speaker = speaker or WavFileSink(config.audio.output_wav, sample_rate=config.audio.sample_rate)
        store = SessionStore(config.kiosk.state_dir) if store is None else store
        client = CompanionClient(config.companion.url, config.read_device_key(), config.kiosk.id,
                                 timeout_s=config.companion.timeout_s, ssl_context=companion_ssl_context(config))
        recorder = Recorder()
        leds = make_status_leds(config.leds) if hardware else None
        kiosk = build_kiosk(config, companion=client, store=store, mic=mic, speaker=speaker, observer=recorder,
                            leds=leds, **({"call_factory": call_factory} if call_factory else {}),
                            **({"warm": warm} if warm else {}))
        ready = asyncio.Event()
        runner = asyncio.create_task(kiosk.run(ready))
        await asyncio.wait_for(ready.wait(), 10)
        if hardware:
            self.button = ButtonBridge(config.button, asyncio.get_running_loop(), kiosk.press, kiosk.release)
        try:
            yield kiosk, recorder, mic
        finally:
            if self.button is not None:
                self.button.close()
                self.button = None
            kiosk.shutdown()
            await asyncio.wait_for(runner, 20)
            await kiosk.aclose()
            store.close()
            if leds is not None:
                leds.close()


LEARNER_LINES = ("Hello, my name is Anna. I like to eat apples.", "Stop.")


@asynccontextmanager
async def lesson_stack(tmp: Path, **simulator_options: Any) -> AsyncIterator[Stack]:
    enable_loopback_candidates()
    simulator_options.setdefault("phrases", (*DEFAULT_PHRASES, *LEARNER_LINES))
    simulator = RealtimeSimulator(SimulatorConfig(api_keys=frozenset({API_KEY}),
                                                  event_log=tmp / "events.jsonl", **simulator_options))
    await simulator.start()
    companion = CompanionServer(CompanionConfig(db_path=tmp / "companion.db",
                                                openai_base_url=simulator.base_url, openai_api_key=API_KEY))
    await companion.start()
    device_key = secrets.token_urlsafe(24)
    await companion.provision(KIOSK_ID, device_key)
    try:
        yield Stack(simulator, companion, device_key, tmp)
    finally:
        await companion.stop()
        await simulator.stop()


# -- the live call, seen from the simulator's side ---------------------------------------------------


def tutor_quiet_after(rec: Recorder, turns: int) -> bool:
    """The tutor finished ``turns`` turns and has gone quiet after each (one spoken stretch per turn)."""
    return (len(rec.tutor_turns()) >= turns and rec.audible.count(False) >= turns
            and rec.audible[-1] is False)


def simulated_call(stack: Stack) -> Any:
    calls = list(stack.simulator.calls.values())
    assert calls, "no call at the simulator"
    return calls[-1]  # the newest: the previous lesson's call may still be winding down


def inject(stack: Stack, raw: str | bytes) -> None:
    """Send a raw data-channel message from the simulator's side of the live call."""
    if isinstance(raw, str):
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            raw = raw.encode("utf-8", "surrogatepass")  # invalid UTF-8 on the wire, as a broken server sends
    simulated_call(stack).channel.send(raw)


# -- finished lessons the companion accepts ------------------------------------------------------------


def earlier_lesson(session_id: str) -> dict[str, Any]:
    """A finished lesson from before the test's own lessons (one the companion accepts)."""
    return {"schema": 1, "session_id": session_id, "kiosk_id": KIOSK_ID,
            "started_at": "2026-11-24T10:00:00.000Z", "ended_at": "2026-11-24T10:00:30.000Z",
            "end_reason": "button", "plan_id": None, "targets": [],
            "turns": [{"role": "learner", "text": "from before", "at": "2026-11-24T10:00:01.000Z",
                       "source": "text"}], "metrics": {"duration_s": 30.0}, "errors": []}


def numbered_lesson(i: int) -> dict[str, Any]:
    """The ``i``-th of a series of finished lessons (a fresh session id, minute ``i`` of the day, text
    "lesson i"), for tests that fill an outbox."""
    return {"schema": 1, "session_id": str(uuid.uuid4()), "kiosk_id": KIOSK_ID,
            "started_at": f"2026-11-24T10:{i:02d}:00.000Z", "ended_at": f"2026-11-24T10:{i:02d}:30.000Z",
            "end_reason": "button", "plan_id": None, "targets": [],
            "turns": [{"role": "learner", "text": f"lesson {i}", "at": f"2026-11-24T10:{i:02d}:01.000Z",
                       "source": "text"}], "metrics": {"duration_s": 30.0}, "errors": []}


def logged_events(tmp: Path, direction: str) -> list[tuple[float, dict[str, Any]]]:
    """(wall time, event) of every event the simulator logged in ``direction`` ("client" or "server")."""
    path = tmp / "events.jsonl"
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(entry["ts"], entry["event"]) for entry in entries if entry["direction"] == direction]


async def eventually(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Wait until ``predicate()`` is truthy (checked every 20 ms) and return its value: for conditions no
    observer reports, such as what the simulator has sent or received."""
    try:
        async with asyncio.timeout(timeout):
            while not (value := predicate()):
                await asyncio.sleep(0.02)
            return value
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from None


class PinTape:
    """Every change of the LED pins of a mock factory from now on, with absolute monotonic times."""

    def __init__(self, pins: MockFactory) -> None:
        self.pins = pins
        self.started: dict[int, float] = {}
        for number in (LED_PINS.idle, LED_PINS.connecting, LED_PINS.connected, LED_PINS.error):
            pins.pin(number).clear_states()
            self.started[number] = time.monotonic()

    def changes(self, number: int) -> list[tuple[float, float]]:
        at, out = self.started[number], []
        for state in list(self.pins.pin(number).states):
            at += state.timestamp  # a mock pin stores the time since its previous change
            out.append((at, float(state.state)))
        return out

    def value_at(self, number: int, at: float) -> float:
        value = 0.0
        for t, v in self.changes(number):
            if t > at:
                break
            value = v
        return value
