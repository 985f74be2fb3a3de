"""The simulator's switches for server behaviours admins try a kiosk against: answers queued behind
the one playing and truncates checked as OpenAI checks them, third-party servers (no audio-buffer or
item events, answers streamed sentence by sentence), a session limit, revoked tokens, a stalled server
that still hears its client, and answers failing several times in a row."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from appliance.audio.dsp import rms_dbfs
from appliance.audio.speaker import AUDIBLE_DBFS
from appliance.audio.tracks import frame_to_mono
from appliance.audio.wav import ScriptedMicrophone
from appliance.call import events
from appliance.call.events import ServerEvent
from appliance.call.webrtc import CallError, RealtimeCall
from appliance.common.net import enable_loopback_candidates
from appliance.simulator.server import RealtimeSimulator, SimulatorConfig, main
from tests.harness import API_KEY, eventually, mint_token

SCHEMA = TypeAdapter(RealtimeServerEvent)
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@asynccontextmanager
async def simulator(tmp: Path, **options: Any) -> AsyncIterator[RealtimeSimulator]:
    enable_loopback_candidates()
    sim = RealtimeSimulator(SimulatorConfig(api_keys=frozenset({API_KEY}), event_log=tmp / "events.jsonl", **options))
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


class Client:
    """The kiosk's own call class on its own: every event received, and the level of every audio frame."""

    def __init__(self, sim: RealtimeSimulator, token: str) -> None:
        self.events: list[ServerEvent] = []
        self.levels: list[tuple[float, float]] = []
        """(monotonic time, dBFS) of each 20 ms frame of the tutor's audio as it arrives."""
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.mic = ScriptedMicrophone()
        self.call = RealtimeCall(sim.base_url, token, self.mic.read, on_event=self._event,
                                 on_remote_track=self._track, on_closed=lambda reason: None)

    def _event(self, event: ServerEvent) -> None:
        self.events.append(event)
        self._changed.set()

    def _track(self, track: Any) -> None:
        async def drain() -> None:
            while True:
                frame = await track.recv()
                self.levels.append((time.monotonic(), rms_dbfs(frame_to_mono(frame))))
        self._tasks.append(asyncio.ensure_future(drain()))

    def of_type(self, *types: str) -> list[ServerEvent]:
        return [e for e in self.events if e.type in types]

    async def until(self, predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
        async with asyncio.timeout(timeout):
            while not (value := predicate()):
                self._changed.clear()
                await self._changed.wait()
            return value

    async def answer(self, text: str) -> str:
        """Type ``text`` and ask for an answer; returns the response id once created."""
        before = len(self.of_type("response.created"))
        self.call.send(events.user_text(text))
        self.call.send(events.response_create())
        created = await self.until(lambda: self.of_type("response.created")[before:])
        return str(created[0].data["response"]["id"])

    def done(self, response_id: str) -> ServerEvent | None:
        return next((e for e in self.of_type("response.done") if e.data["response"]["id"] == response_id), None)

    def errors(self) -> list[dict[str, Any]]:
        return [e.data["error"] for e in self.of_type("error")]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.call.close()


@asynccontextmanager
async def connected(sim: RealtimeSimulator) -> AsyncIterator[Client]:
    client = Client(sim, await mint_token(sim.base_url))
    await client.call.open(10)
    try:
        await client.until(lambda: client.of_type("session.created"))
        yield client
    finally:
        await client.close()


def item_of(client: Client, response_id: str) -> str:
    return next(str(e.data["item_id"]) for e in client.of_type("response.content_part.added")
                if e.data["response_id"] == response_id)


async def test_answers_queue_behind_the_one_playing_and_truncates_are_checked(tmp_path: Path) -> None:
    """A second answer's audio waits until the first has played; a truncate is refused (invalid_value)
    for an unknown item, for an item not played yet, and beyond the audio played so far; within it,
    the item is truncated."""
    async with simulator(tmp_path) as sim, connected(sim) as client:
        first = await client.answer("I like pizza")
        await client.until(lambda: client.done(first))
        second = await client.answer("I like apples")
        await client.until(lambda: client.done(second))
        call = next(iter(sim.calls.values()))
        assert call.speaking and item_of(client, second) not in call.played_ms  # still waiting its turn
        played = call.played_ms[item_of(client, first)]
        for item_id, end_ms in (("item_unknown", 0), (item_of(client, second), 0),
                                (item_of(client, first), int(played) + 1500)):
            refusals = len(client.errors())
            client.call.send(events.item_truncate(item_id, end_ms))
            await client.until(lambda n=refusals: len(client.errors()) > n)
            assert client.errors()[-1]["code"] == "invalid_value", client.errors()[-1]
        await eventually(lambda: call.played_ms[item_of(client, first)] >= 300, what="300 ms played")
        client.call.send(events.item_truncate(item_of(client, first), 200))
        truncated = await client.until(lambda: client.of_type("conversation.item.truncated"))
        assert truncated[0].data["item_id"] == item_of(client, first) and truncated[0].data["audio_end_ms"] == 200
        started = await client.until(lambda: [e for e in client.of_type("output_audio_buffer.started")
                                              if e.data["response_id"] == second])
        order = [e.type for e in client.events]
        stopped_first = next(i for i, e in enumerate(client.events) if e.type == "output_audio_buffer.stopped"
                             and e.data["response_id"] == first)
        assert stopped_first < client.events.index(started[0]), order


async def test_a_third_party_server_streams_sentences_without_buffer_or_item_events(tmp_path: Path) -> None:
    """No output_audio_buffer.* and no response.output_item.* / tutor conversation.item.* events; the
    answer comes sentence by sentence with a pause between them, and response.done only after the last
    sentence began, so the response is active during the pauses. Every event still fits OpenAI's schema."""
    async with simulator(tmp_path, audio_buffer_events=False, item_events=False, sentence_pause_s=0.8) as sim, \
            connected(sim) as client:
        rid = await client.answer("I like pizza")  # "You said: I like pizza. Very good! <question>?"
        await client.until(lambda: client.done(rid), timeout=30)
        done_at = time.monotonic()
        await asyncio.sleep(0.2)  # the last frames still on their way
    types = {e.type for e in client.events}
    assert not {t for t in types if t.startswith(("output_audio_buffer.", "response.output_item."))}, types
    assert not [e for e in client.of_type("conversation.item.added", "conversation.item.done")
                if e.data["item"].get("role") == "assistant"]
    for event in client.events:
        SCHEMA.validate_python(event.data)
    loud = [t for t, level in client.levels if level > -45]
    gaps = [b - a for a, b in itertools.pairwise(loud) if b - a >= 0.6]
    assert len(gaps) >= 2, gaps  # two pauses: three sentences
    assert done_at > loud[0] + 2 * 0.6  # still active through the pauses
    assert client.done(rid).data["response"]["status"] == "completed"  # type: ignore[union-attr]


async def test_a_session_limit_refuses_new_calls_until_a_slot_is_released(tmp_path: Path) -> None:
    """With max_sessions=1 a second call gets 503 session_limit_reached (OpenAI's error shape); the slot
    of a call that ended is free slot_release_s later, and a new call then opens."""
    async with simulator(tmp_path, max_sessions=1, slot_release_s=0.5) as sim:
        async with connected(sim):
            with pytest.raises(CallError) as refused:
                await Client(sim, await mint_token(sim.base_url)).call.open(10)
            assert refused.value.status == 503 and refused.value.code == "session_limit_reached"
            assert refused.value.retryable
        ended_at = time.monotonic()
        async with httpx.AsyncClient() as http:
            r = await http.post(f"{sim.base_url}/v1/realtime/calls", content=b"v=0\r\nm=audio\r\n",
                                headers={"Authorization": f"Bearer {await mint_token(sim.base_url)}",
                                         "Content-Type": "application/sdp"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "session_limit_reached", r.text
        assert set(r.json()["error"]) == {"message", "type", "code", "param"}
        await eventually(lambda: sim.sessions_in_use() == 0, what="the slot released")
        assert time.monotonic() - ended_at >= 0.4
        async with connected(sim):
            assert len(sim.calls) == 1
        assert len(sim.limit_refusals) == 2


async def test_revoked_tokens_are_refused_and_running_calls_go_on(tmp_path: Path) -> None:
    async with simulator(tmp_path) as sim, connected(sim) as running:
        stale = await mint_token(sim.base_url)
        async with httpx.AsyncClient() as http:
            r = await http.post(f"{sim.base_url}/simulator/revoke-tokens", headers=AUTH)
        assert r.status_code == 200 and r.json() == {"revoked": 2}
        with pytest.raises(CallError) as refused:
            await Client(sim, stale).call.open(10)
        assert refused.value.status == 401
        async with connected(sim):
            pass  # a fresh token opens a call
        rid = await running.answer("I like pizza")
        await running.until(lambda: running.done(rid))


async def test_a_stalled_server_still_hears_the_hang_up(tmp_path: Path) -> None:
    """freeze with hear_client: nothing reaches the client, but its hang-up ends the call here; a body
    that is not {"hear_client": bool} is refused with 400."""
    async with simulator(tmp_path) as sim, httpx.AsyncClient() as http:
        bad = await http.post(f"{sim.base_url}/simulator/freeze", headers=AUTH, json={"hear_client": "yes"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "hear_client"
        async with connected(sim) as client:
            call = next(iter(sim.calls.values()))
            r = await http.post(f"{sim.base_url}/simulator/freeze", headers=AUTH, json={"hear_client": True})
            assert r.json() == {"frozen": [call.call_id]}
            heard = len(client.events)
            client.call.send(events.user_text("I like pizza"))
            await eventually(lambda: call.received[-1:] and call.received[-1]["type"] == "conversation.item.create",
                             what="the client's event received while stalled")
        await asyncio.wait_for(call.ended.wait(), 5)
    assert len(client.events) == heard  # nothing came back while stalled


async def test_a_fault_can_fail_several_answers_in_a_row(tmp_path: Path) -> None:
    async with simulator(tmp_path) as sim, connected(sim) as client:
        sim.faults.fail_next_response = {"status": "failed", "times": 2}
        statuses = []
        for text in ("one", "two", "three"):
            rid = await client.answer(text)
            done = await client.until(lambda r=rid: client.done(r))
            statuses.append(done.data["response"]["status"])
    assert statuses == ["failed", "failed", "completed"]
    assert sim.faults.fail_next_response is None


@pytest.mark.parametrize("args", [["--max-sessions", "0"], ["--sentence-pause", "-1"], ["--slot-release", "-0.1"]])
def test_simulator_cli_refuses_bad_switch_values(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert args[0] in capsys.readouterr().err


async def test_each_calls_microphone_arrival_is_reported(tmp_path: Path) -> None:
    """``GET /simulator/audio-arrival``: the key is required; the running call and, once it has ended, the
    same call with the frames the simulator heard from the client's microphone."""
    async with simulator(tmp_path) as sim:
        async with connected(sim), httpx.AsyncClient() as http:
            assert (await http.get(f"{sim.base_url}/simulator/audio-arrival")).status_code == 401
            (call,) = sim.calls.values()
            await eventually(lambda: call.mic_arrival.frames >= 25, what="a half second of microphone audio")
            running = (await http.get(f"{sim.base_url}/simulator/audio-arrival", headers=AUTH)).json()["calls"]
            assert [c["call_id"] for c in running] == [call.call_id] and running[0]["frames"] >= 25
            assert set(running[0]) == {"call_id", "frames", "late_frames", "p99_gap_ms", "max_gap_ms", "lost_share",
                                       "late", "tutor_audible_sent_at"}
        await eventually(lambda: not sim.calls, what="the call ended")
        async with httpx.AsyncClient() as http:
            ended = (await http.get(f"{sim.base_url}/simulator/audio-arrival", headers=AUTH)).json()["calls"]
        assert [c["call_id"] for c in ended] == [call.call_id] and ended[0]["frames"] >= running[0]["frames"]


async def test_the_simulator_says_when_each_answers_first_audible_frame_was_sent(tmp_path: Path) -> None:
    """Speech starts quietly (espeak's first 20 ms are under the audibility threshold), so the server's own
    time to speak ends at its first *audible* frame, not at ``output_audio_buffer.started``: a client's
    figure measured from that stamp is what transport, jitter buffer and decoding add (~80–100 ms)."""
    async with simulator(tmp_path) as sim, connected(sim) as client, httpx.AsyncClient() as http:
        first = await client.answer("I like pizza")
        await client.until(lambda: client.done(first))
        await eventually(lambda: any(db > AUDIBLE_DBFS for _, db in client.levels), what="the answer heard")
        heard = next(t for t, db in client.levels if db > AUDIBLE_DBFS)
        (call,) = (await http.get(f"{sim.base_url}/simulator/audio-arrival", headers=AUTH)).json()["calls"]
    (sent,) = call["tutor_audible_sent_at"]  # one spoken item
    assert 0.06 <= heard - sent <= 0.3, heard - sent  # aiortc's jitter buffer alone holds 80 ms
