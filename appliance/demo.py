"""`stella-kiosk demo`: a whole lesson on simulated parts, end to end, ending by itself.

It starts the Realtime simulator and the companion on 127.0.0.1 as child processes, then runs the
real kiosk code with gpiozero mock pins, a scripted learner (espeak-ng WAV clips) as microphone
and a WAV file as speaker. The learner: listens to the greeting, says a sentence, types a question
(as a teacher would with `stella-kiosk say`), then says "stop"; if the simulator did not hear
"stop", the demo presses the button a second time.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import sys
import time
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from appliance.config import Config, config_from_dict
from appliance.core.state import State
from appliance.core.transcript import Turn
from appliance.daemon.services import ChildServer, ServiceError

# Package data, not a file beside the source tree: the demo must also run from an installed kiosk.
DEMO_CONFIG = resources.files("appliance").joinpath("data/demo.toml")
LEARNER_LINES = ["Hello! My name is Anna. I like to eat apples.", "Stop."]
TYPED_LINE = "How do I say 'manzana' in English?"
# Ample on a PC or a Pi 4/5; slower machines (an emulated arm64 root, a Pi Zero) pass --deadline.
DEMO_DEADLINE_S = 120.0
TUTOR_DONE_QUIET_S = 0.8


def run_demo(output: Path, quiet: bool = False, deadline_s: float = DEMO_DEADLINE_S) -> int:
    try:
        return asyncio.run(_demo(output.resolve(), quiet, deadline_s))
    except KeyboardInterrupt:
        return 130
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1


class DemoError(Exception):
    pass


def make_clip(text: str, path: Path) -> Path:
    """Speak ``text`` into a WAV file with espeak-ng (the demo learner's voice)."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise DemoError("espeak-ng is not installed (run scripts/setup.sh, or apt-get install espeak-ng)")
    subprocess.run([espeak, "-v", "en-us", "-s", "150", "-w", str(path), text], check=True,
                   capture_output=True)
    return path


def demo_config(output: Path, companion_url: str, realtime_url: str, deadline_s: float = DEMO_DEADLINE_S) -> Config:
    """The packaged demo.toml with the URLs of the servers just started and paths inside ``output``.

    On a machine slow enough to need a longer ``deadline_s`` the lesson's own time limit grows with it,
    so the lesson ends by the learner's stop word rather than by a limit sized for a fast machine.
    """
    data = tomllib.loads(DEMO_CONFIG.read_text(encoding="utf-8"))
    data["companion"]["url"] = companion_url
    data["realtime"]["base_url"] = realtime_url
    data["lesson"]["max_minutes"] = min(60.0, max(float(data["lesson"]["max_minutes"]), deadline_s / 60))
    config = config_from_dict(data, source="demo.toml (package data)", base_dir=output)
    return config


class Printer:
    """Prints what a person standing at the kiosk would see and hear."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.t0 = time.monotonic()

    def __call__(self, text: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.t0:6.2f}s] {text}", flush=True)


class DemoLearner:
    """Kiosk observer that plays the learner's part, one step after each finished tutor turn."""

    def __init__(self, kiosk: Any, mic: Any, clips: list[Path], press: Any, say: Any, out: Printer) -> None:
        self.kiosk = kiosk
        self.mic = mic
        self.clips = clips
        self.press = press
        self.say = say
        self.out = out
        self.steps = [self._speak_first, self._type_question, self._speak_stop, self._press_to_end]
        self.step = 0
        self.saved: asyncio.Future[tuple[dict[str, Any], bool]] = asyncio.get_running_loop().create_future()
        self._tutor_turn_done = False
        self._audible = False
        self._quiet_timer: asyncio.TimerHandle | None = None

    # KioskObserver ------------------------------------------------------------------------
    def state_changed(self, state: State, detail: str) -> None:
        leds = self.kiosk.parts.lights
        lit = ""
        if hasattr(leds, "pin_for"):
            pin = leds.pin_for(state)
            lit = f" (LED on GPIO{pin}{' blinking' if state in (State.CONNECTING, State.ERROR) else ''})"
        self.out(f"state {state.value:<12}{lit} {detail}")

    def turn(self, turn: Turn) -> None:
        who = "learner" if turn.role == "learner" else "tutor  "
        how = " (typed)" if turn.source == "text" else ""
        self.out(f"{who}: {turn.text}{how}")
        if turn.role == "tutor":
            self._tutor_turn_done = True
            self._maybe_next()

    def tutor_audible(self, audible: bool) -> None:
        self._audible = audible
        if audible:
            if self._quiet_timer:
                self._quiet_timer.cancel()
                self._quiet_timer = None
        else:
            self._maybe_next()

    def lesson_saved(self, record: dict[str, Any], synced: bool) -> None:
        if not self.saved.done():
            self.saved.set_result((record, synced))

    # the script ---------------------------------------------------------------------------
    def _maybe_next(self) -> None:
        """Act once the tutor finished a turn and has been quiet for a moment."""
        if not self._tutor_turn_done or self._audible or self.kiosk.state is not State.CONNECTED:
            return
        if self._quiet_timer:
            self._quiet_timer.cancel()
        self._quiet_timer = asyncio.get_running_loop().call_later(TUTOR_DONE_QUIET_S, self._next)

    def _next(self) -> None:
        self._quiet_timer = None
        if self._audible or self.step >= len(self.steps) or self.kiosk.state is not State.CONNECTED:
            return
        self._tutor_turn_done = False
        step = self.steps[self.step]
        self.step += 1
        step()

    def _speak_first(self) -> None:
        self.out(f"learner speaks into the microphone: {LEARNER_LINES[0]!r}")
        self.mic.say(self.clips[0])

    def _type_question(self) -> None:
        self.out(f"teacher types: {TYPED_LINE!r}")
        self.say(TYPED_LINE)

    def _speak_stop(self) -> None:
        self.out(f"learner speaks into the microphone: {LEARNER_LINES[1]!r}")
        self.mic.say(self.clips[1])
        # If the stop word is not recognised, the tutor answers and the next step presses.

    def _press_to_end(self) -> None:
        self.out("learner presses the button to end the lesson")
        self.press()


async def _demo(output: Path, quiet: bool, deadline_s: float = DEMO_DEADLINE_S) -> int:
    from gpiozero import Device

    from appliance.common.net import enable_loopback_candidates
    from appliance.common.tls import companion_ssl_context
    from appliance.daemon.assemble import build_kiosk
    from appliance.daemon.parts import build_microphone, build_speaker, select_pin_factory
    from appliance.daemon.preflight import write_key_file
    from appliance.hardware.button import ButtonBridge
    from appliance.hardware.leds import make_status_leds
    from appliance.store.sessions import SessionStore
    from appliance.uplink.client import CompanionClient

    out = Printer(quiet)
    if output.exists():
        for stale in ("state", "tutor.wav", "events.jsonl", "companion.db", "transcript.txt", "session.json"):
            target = output / stale
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    clips = [make_clip(text, output / f"learner-{i + 1}.wav") for i, text in enumerate(LEARNER_LINES)]

    device_key = secrets.token_urlsafe(24)
    write_key_file(output / "device.key", device_key)
    provision_file = output / "provision.txt"  # keys never on a command line (ps shows it to every user)
    write_key_file(provision_file, f"demo-kiosk={device_key}")
    api_key = "sk-demo-" + secrets.token_hex(8)
    phrases = [arg for line in LEARNER_LINES for arg in ("--phrase", line)]
    simulator = ChildServer("simulator", ["simulator", "--port", "0", "--api-key", api_key,
                                          "--event-log", str(output / "events.jsonl"), *phrases],
                            output / "simulator.log")
    companion = ChildServer("companion", ["companion", "serve", "--port", "0",
                                          "--db", str(output / "companion.db"),
                                          "--provision-file", str(provision_file)],
                            output / "companion.log", env={"OPENAI_API_KEY": api_key})
    try:
        out("starting the Realtime simulator and the companion on 127.0.0.1 …")
        try:
            # A machine slow enough to need a longer deadline also starts its servers slowly.
            start_s = max(30.0, deadline_s / 4)
            realtime_url = await simulator.start(timeout_s=start_s)
            companion.args += ["--openai-base-url", realtime_url]
            companion_url = await companion.start(timeout_s=start_s)
        except ServiceError as exc:
            raise DemoError(str(exc)) from None
        out(f"simulator {realtime_url}   companion {companion_url}")
        config = demo_config(output, companion_url, realtime_url, deadline_s)
        enable_loopback_candidates()
        select_pin_factory(config)
        leds = make_status_leds(config.leds)
        mic = build_microphone(config)
        speaker = build_speaker(config)
        store = SessionStore(config.kiosk.state_dir)
        client = CompanionClient(config.companion.url, config.read_device_key(), config.kiosk.id,
                                 timeout_s=config.companion.timeout_s, ssl_context=companion_ssl_context(config))
        kiosk = build_kiosk(config, companion=client, store=store, mic=mic, speaker=speaker, leds=leds)
        loop = asyncio.get_running_loop()
        button_pin = Device.pin_factory.pin(config.button.pin)

        def press() -> None:
            button_pin.drive_low()
            button_pin.drive_high()

        learner = DemoLearner(kiosk, mic, clips, press, kiosk.say, out)
        kiosk.observer = learner
        ready = asyncio.Event()
        runner = asyncio.create_task(kiosk.run(ready))
        await ready.wait()
        button = ButtonBridge(config.button, loop, kiosk.press, kiosk.release)
        out("learner presses the button")
        press()
        try:
            record, synced = await asyncio.wait_for(asyncio.shield(learner.saved), deadline_s)
        except TimeoutError:
            raise DemoError(f"the lesson did not finish within {deadline_s:g} s (a slow machine: try --deadline) "
                            f"(state {kiosk.state.value}); see {output}/*.log") from None
        finally:
            kiosk.shutdown()
            await runner
            button.close()
            leds.close()
            await kiosk.aclose()
            store.close()
        return _report(output, config, record, synced, out)
    finally:
        await companion.stop()
        await simulator.stop()


def _report(output: Path, config: Config, record: dict[str, Any], synced: bool, out: Printer) -> int:
    from appliance.audio.wav import read_wav

    metrics = record["metrics"]
    (output / "session.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    lines = [f"{t['role']:>7}: {t['text']}" for t in record["turns"]]
    (output / "transcript.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    samples, rate = read_wav(config.audio.output_wav)
    tutor_s = len(samples) / rate if rate else 0.0
    print()
    print("Lesson finished:", record["end_reason"], f"({metrics['duration_s']:.1f} s,",
          f"{metrics['learner_turns']} learner / {metrics['tutor_turns']} tutor turns)")
    print(f"  press → connected:           {metrics['connect_ms']:.0f} ms")
    first = metrics.get("first_audio_ms")
    print(f"  press → first tutor audio:   {first:.0f} ms" if first is not None else
          "  press → first tutor audio:   (none heard)")
    print(f"  estimated cost at OpenAI:    ${metrics['est_cost_usd']:.4f}")
    print(f"  transcript:                  {output / 'transcript.txt'}")
    print(f"  tutor audio ({tutor_s:.1f} s):       {config.audio.output_wav}")
    print(f"  session record:              {output / 'session.json'}")
    print(f"  kiosk store (tinydb):        {config.kiosk.state_dir / 'sessions.json'}")
    print(f"  companion database:          {output / 'companion.db'} ({'received' if synced else 'NOT synced'})")
    print(f"  simulator event log:         {output / 'events.jsonl'}")
    problems = []
    if not synced:
        problems.append("the companion did not receive the lesson")
    if first is None or tutor_s < 0.5:
        problems.append("no tutor audio reached the speaker")
    if metrics["learner_turns"] < 1 or metrics["tutor_turns"] < 2:
        problems.append("the lesson has fewer turns than expected")
    if problems:
        print("demo FAILED: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


