"""The scripted learner of `stella-kiosk run` (``audio.input_wavs``) across a resumed lesson: a real
daemon process against the simulator, driven through its control socket."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from appliance.daemon.control import send_command
from appliance.simulator.asr import DEFAULT_PHRASES
from appliance.simulator.call import SimulatedCall
from appliance.store.sessions import SessionStore
from tests.daemon_helpers import write_daemon_config
from tests.harness import LEARNER_LINES, Stack, espeak, lesson_stack

ROOT = Path(__file__).resolve().parent.parent
SECOND_LINE = "I like to play football with my friends."
LINES = (LEARNER_LINES[0], SECOND_LINE, LEARNER_LINES[1])  # the last one, "Stop.", ends the lesson


def daemon_config(stack: Stack, tmp: Path, clips: list[Path]) -> Path:
    """A kiosk.toml for `stella-kiosk run` against the stack: mock pins, no speaker, the clips as the mic."""
    stack.config()  # writes the device key file
    return write_daemon_config(tmp / "kiosk.toml", stack, tmp / "state", tmp / "control.sock", clips)


@asynccontextmanager
async def daemon(toml: Path, tmp: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """`stella-kiosk run` until READY=1 (read from a NOTIFY_SOCKET); killed on the way out if still running.
    Its stderr is drained all along (a full pipe would stall it) and checked for tracebacks at the end."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp / "notify.sock"))
    notify.setblocking(False)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp / "notify.sock"), "PYTHONPATH": str(ROOT)}
    env.pop("WATCHDOG_USEC", None)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "appliance.cli", "run", "--config", str(toml),
                                                env=env, stderr=asyncio.subprocess.PIPE)
    stderr = bytearray()

    async def drain() -> None:
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(65536):
            stderr.extend(chunk)

    reader = asyncio.create_task(drain())
    try:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(30):
            while b"READY=1" not in await loop.sock_recv(notify, 4096):
                pass
        yield proc
        assert "Traceback" not in stderr.decode(errors="replace"), stderr.decode(errors="replace")
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await asyncio.wait_for(reader, 10)
        notify.close()


async def status(sock: Path) -> dict[str, Any]:
    reply = await send_command(sock, {"command": "status"})
    assert reply.get("ok"), reply
    return reply["status"]


async def until_status(sock: Path, predicate: Any, timeout: float, what: str) -> dict[str, Any]:
    """Ask the kiosk for its status every 50 ms until ``predicate(status)`` holds."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate(current := await status(sock)):
                await asyncio.sleep(0.05)
            return current
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from None


def heard(call: SimulatedCall) -> list[str]:
    """What the server recognised of the learner on one call, in order."""
    return [e["transcript"] for e in call.sent if e["type"] == "conversation.item.input_audio_transcription.completed"]


async def test_a_resumed_lesson_continues_the_script_with_the_next_clip(tmp_path: Path) -> None:
    """Before: when a lesson was resumed on a new call, the scripted learner took the resume for a new
    lesson (it went connected → error → connecting) and started its clips again from the first one.
    Now a resume goes connected → disconnected → connected and the script continues with the next clip:
    the new call hears the second and third clips, and the lesson record has each clip once, in order."""
    clips = [espeak(line, tmp_path / f"clip{i}.wav") for i, line in enumerate(LINES)]
    # The model takes 1.5 s before each answer: time to cut the call off after the learner's first turn
    # reached the kiosk and before the tutor's answer does.
    async with lesson_stack(tmp_path, phrases=(*DEFAULT_PHRASES, *LINES), response_delay_s=1.5) as stack:
        toml = daemon_config(stack, tmp_path, clips)
        sock = tmp_path / "control.sock"
        async with daemon(toml, tmp_path) as proc:
            assert (await send_command(sock, {"command": "press"})).get("ok")
            await until_status(sock, lambda s: s["state"] == "connected" and s["lesson"]["turns"] >= 2, 30,
                               "the first clip heard")
            first = list(stack.simulator.calls.values())
            assert len(first) == 1 and heard(first[0]) == [LINES[0]]
            stack.simulator.freeze_calls()
            await until_status(sock, lambda s: s["state"] == "disconnected", 10, "the drop shown")
            done = await until_status(sock, lambda s: s["state"] == "idle" and s["recent_lessons"], 60,
                                      "the lesson over")
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        resumed = [c for c in stack.simulator.calls.values() if c is not first[0]]
        resumed += [c for c in stack.simulator.ended_calls.values() if c is not first[0]]
    assert len(resumed) == 1 and heard(resumed[0]) == list(LINES[1:]), [heard(c) for c in resumed]
    assert done["recent_lessons"][0]["end_reason"] == "voice_stop"
    records = list(SessionStore(tmp_path / "state").records())
    assert len(records) == 1
    assert [t["text"] for t in records[0]["turns"] if t["role"] == "learner"] == list(LINES)
