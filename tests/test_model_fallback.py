"""Model fallback under load, against the real simulator over real HTTP: the model that failed is the one
skipped, skips expire, every concurrent kiosk gets the fallback on the day a model retires, a lesson
starts without input transcription when no transcription model is left, and ``/api/health`` says when no
realtime model works. On SQLite and on a private PostgreSQL (tokens take their rate-limit slot there)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from openai.types.realtime import RealtimeClientEvent
from pydantic import TypeAdapter

from appliance.call.events import ServerEvent
from appliance.common.httpserve import start_http
from appliance.companion.cli import build_config
from appliance.companion.models import DEFAULT_MODELS, ModelChoice
from appliance.companion.server import CompanionConfig, CompanionServer
from appliance.core.state import State
from appliance.core.transcript import AUDIO_ONLY, Transcript
from appliance.daemon.services import ChildServer
from appliance.simulator.server import RealtimeSimulator, SimulatorConfig
from appliance.uplink.client import CompanionClient
from tests.harness import API_KEY, LEARNER_LINES, espeak, lesson_stack, tutor_quiet_after

KEY = "key-a-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
PAST = "2026-01-01"
FIRST, SECOND = "gpt-realtime-2.1-mini", "gpt-realtime-2"
LIVE, BATCH = "gpt-live-transcribe", "gpt-transcribe"
SECRETS = ("POST", "/v1/realtime/client_secrets")


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "c.db") if request.param == "sqlite" else request.getfixturevalue("postgres_dsn")


class Ticker:
    """The companion's monotonic clock, moved by the test (a skip expires without waiting)."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


class SecretsGate:
    """A real HTTP hop between the companion and the simulator that holds ``client_secrets`` requests
    until ``count`` of them are waiting, so they are all in flight upstream when the first answer comes
    back (as on the morning a model is switched off under a school's class change)."""

    def __init__(self, target: str, count: int) -> None:
        self.target = target
        self.count = count
        self.waiting = 0
        self.release = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.forward)
        self.runner: web.AppRunner | None = None
        self.http: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> str:
        self.runner, port = await start_http(self.app, "127.0.0.1", 0)
        self.http = aiohttp.ClientSession()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.runner is not None:
            await self.runner.cleanup()

    async def forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        if (request.method, request.path) == SECRETS:
            self.waiting += 1
            if self.waiting >= self.count:
                self.release.set()
            await asyncio.wait_for(self.release.wait(), 15)
        assert self.http is not None
        headers = {k: v for k, v in request.headers.items() if k in ("Authorization", "Content-Type")}
        async with self.http.request(request.method, self.target + request.path_qs, data=body,
                                     headers=headers) as reply:
            return web.Response(status=reply.status, body=await reply.read(), content_type=reply.content_type)


@asynccontextmanager
async def stack(db: str, *, gate: int = 0, sim: RealtimeSimulator | None = None, clock: Ticker | None = None,
                **options: Any) -> AsyncIterator[tuple[RealtimeSimulator, CompanionServer]]:
    """The simulator (unless given), optionally behind a gate of ``gate`` secrets, and a companion with two
    realtime and two transcription models, its first model check done."""
    own = sim is None
    simulator = sim or RealtimeSimulator(SimulatorConfig(api_keys=frozenset({API_KEY})))
    if own:
        await simulator.start()
    hop = SecretsGate(simulator.base_url, gate) if gate else None
    url = await hop.start() if hop else simulator.base_url
    config = CompanionConfig(db_path=db, openai_base_url=url, openai_api_key=API_KEY,
                             realtime_model=(FIRST, SECOND), transcription_model=(LIVE, BATCH),
                             planner_model=("gpt-5.4-mini",), **options)
    server = CompanionServer(config, monotonic=clock) if clock else CompanionServer(config)
    try:
        await server.start()
        await server.provision("kiosk-a", KEY)
        await asyncio.wait_for(server.models_checked.wait(), 10)
        yield simulator, server
    finally:
        await server.stop()
        if hop:
            await hop.stop()
        if own:
            await simulator.stop()


async def tokens(server: CompanionServer, count: int) -> list[httpx.Response]:
    """``count`` token requests at once, each on its own connection."""
    async def one() -> httpx.Response:
        async with httpx.AsyncClient(timeout=20) as http:
            return await http.post(f"{server.base_url}/api/realtime-token", json={}, headers=AUTH)
    return list(await asyncio.gather(*(one() for _ in range(count))))


async def health(server: CompanionServer) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(f"{server.base_url}/api/health")


# -- the model that failed is the one skipped, under concurrency -----------------------------------------


async def test_six_tokens_in_flight_when_the_model_retires_all_get_the_fallback(
        db: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with stack(db, gate=6) as (sim, server):
        sim.model_shutdowns[FIRST] = PAST  # switched off after the companion's morning check
        answers = await tokens(server, 6)
        assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers if a.status_code != 200]
        assert {a.json()["model"] for a in answers} == {SECOND}
        assert sim.requests.count(SECRETS) == 12  # six refused for the retired model, six minted on the fallback
        # The fallback is not the one skipped: the next kiosk gets it at the first try.
        [answer] = await tokens(server, 1)
        assert answer.status_code == 200 and answer.json()["model"] == SECOND
        assert sim.requests.count(SECRETS) == 13
        warnings = (await health(server)).json()["warnings"]
    assert [w for w in warnings if "failed" in w] == [
        f"realtime model {FIRST} failed with model_not_found; using {SECOND} instead"]
    logged = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(logged) == 1 and logged[0].startswith(f"realtime model {FIRST} is unavailable (")
    assert f"using {SECOND} instead" in logged[0]


async def test_a_skipped_model_is_tried_again_after_model_retry_s(db: str) -> None:
    clock = Ticker()
    async with stack(db, clock=clock, model_retry_s=600.0) as (sim, server):
        sim.model_shutdowns[FIRST] = PAST
        assert (await tokens(server, 1))[0].json()["model"] == SECOND
        sim.model_shutdowns[FIRST] = None  # the provider brought it back (or it was a passing fault)
        clock.now += 599
        assert (await tokens(server, 1))[0].json()["model"] == SECOND  # still skipped: no request for it
        assert sim.requests.count(SECRETS) == 3
        clock.now += 2
        assert (await tokens(server, 1))[0].json()["model"] == FIRST
        assert not [w for w in (await health(server)).json()["warnings"] if "failed" in w]
        # Retired again: one kiosk pays one refused request, then the fallback is used again.
        sim.model_shutdowns[FIRST] = PAST
        clock.now += 601
        answers = await tokens(server, 3)
        assert {a.json()["model"] for a in answers} == {SECOND}


# -- transcription: the next model, then none --------------------------------------------------------------


async def test_lessons_start_without_transcription_when_every_transcription_model_is_retired(db: str) -> None:
    async with stack(db) as (sim, server):
        sim.model_shutdowns[LIVE] = PAST
        [answer] = await tokens(server, 1)
        assert answer.status_code == 200 and answer.json()["transcription_model"] == BATCH
        sim.model_shutdowns[BATCH] = PAST
        answers = await tokens(server, 4)
        assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
        for answer in answers:
            data = answer.json()
            assert data["model"] == FIRST and data["transcription_model"] is None
            session = sim._secrets[data["token"]].session  # what the minted token's session holds
            assert "transcription" not in session["audio"]["input"]
        body = (await health(server)).json()
        assert body["ok"] is True  # lessons run: the learner's words are just not written down
        assert any("without input transcription" in w for w in body["warnings"]), body["warnings"]


# -- health -----------------------------------------------------------------------------------------------


async def test_health_is_not_ok_when_every_realtime_model_failed(db: str) -> None:
    clock = Ticker()
    async with stack(db, clock=clock) as (sim, server):
        assert (await health(server)).json()["ok"] is True
        sim.model_shutdowns.update({FIRST: PAST, SECOND: PAST})
        answers = await tokens(server, 3)
        assert {a.status_code for a in answers} == {502}
        reply = await health(server)
        assert reply.status_code == 503
        body = reply.json()
        assert body["ok"] is False
        assert body["reason"] == body["error"]["message"]
        assert body["error"]["code"] == "no_realtime_model"
        assert FIRST in body["reason"] and SECOND in body["reason"] and "realtime_model" in body["reason"]
        # Back (or the config fixed): the next try after the skip expires works and health is ok again.
        sim.model_shutdowns.update({FIRST: None, SECOND: None})
        clock.now += server.config.model_retry_s + 1
        assert (await health(server)).status_code == 200
        assert (await tokens(server, 1))[0].json()["model"] == FIRST


@asynccontextmanager
async def simulator_process(tmp: Path, *args: str) -> AsyncIterator[str]:
    """``stella-kiosk simulator`` as its own process; yields its URL once it says it listens."""
    server = ChildServer("simulator", ["simulator", "--port", "0", "--api-key", API_KEY, *args], tmp / "sim.log")
    try:
        yield await server.start()
    finally:
        await server.stop()


async def test_health_is_not_ok_when_the_check_finds_every_realtime_model_retired(db: str, tmp_path: Path) -> None:
    """Found by the start-up check (``GET /v1/models/{id}``), before any kiosk asked for a token."""
    async with simulator_process(tmp_path, "--retire", f"{FIRST}={PAST}", "--retire", f"{SECOND}={PAST}") as url:
        config = CompanionConfig(db_path=db, openai_base_url=url, openai_api_key=API_KEY,
                                 realtime_model=(FIRST, SECOND))
        server = CompanionServer(config)
        await server.start()
        try:
            await asyncio.wait_for(server.models_checked.wait(), 10)
            reply = await health(server)
        finally:
            await server.stop()
    assert reply.status_code == 503 and reply.json()["ok"] is False
    assert reply.json()["reason"].startswith("no realtime model works: ")
    assert f"{FIRST} was shut down on {PAST}" in reply.json()["reason"]


# -- the kiosk side: a lesson without input transcription ------------------------------------------------


async def test_kiosk_keeps_the_learners_turns_as_audio_only_without_transcription(tmp_path: Path) -> None:
    """Every transcription model retired: the lesson starts, the learner is heard and answered, and the
    record keeps each spoken learner turn as an audio-only placeholder (the words were never written)."""
    clip = espeak(LEARNER_LINES[0], tmp_path / "learner.wav")
    retired = dict.fromkeys(DEFAULT_MODELS["transcription"], PAST)
    async with lesson_stack(tmp_path, model_shutdowns=retired) as stack, stack.kiosk() as (kiosk, rec, mic):
        await asyncio.wait_for(stack.companion.models_checked.wait(), 10)
        kiosk.press()
        await rec.until(lambda: State.CONNECTED in rec.states, what="connected")
        await rec.until(lambda: tutor_quiet_after(rec, 1), what="greeting")
        mic.say(clip)
        await rec.until(lambda: any(t.source == "voice" for t in rec.learner_turns()), what="learner turn")
        await rec.until(lambda: tutor_quiet_after(rec, 2), what="spoken answer")
        kiosk.press()
        await rec.until(lambda: bool(rec.saved), what="saved")
        [call] = [*stack.simulator.calls.values(), *stack.simulator.ended_calls.values()]
        session = call.session
    assert not session["audio"]["input"].get("transcription")  # the call really ran without it
    record, synced = rec.saved[0]
    assert synced
    learner = [t for t in record["turns"] if t["role"] == "learner"]
    assert [(t["text"], t["source"]) for t in learner] == [(AUDIO_ONLY, "voice")]
    assert record["metrics"]["learner_turns"] == 1 and record["metrics"]["learner_words"] == 0
    # The kiosk said "no transcription" again in its session.update, in a shape the GA API accepts.
    logged = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    sent = [e["event"] for e in logged if e["direction"] == "client"]
    updates = [e for e in sent if e["type"] == "session.update" and "audio" in e["session"]]
    assert updates and all(u["session"]["audio"]["input"]["transcription"] is None for u in updates)
    adapter = TypeAdapter(RealtimeClientEvent)
    for sent_event in sent:
        adapter.validate_python(sent_event)


# -- the choice itself: picks, failures and time, in any order ------------------------------------------


RETRY_S = 100.0
ORDER = {"planner": ("p1",), "realtime": ("r1", "r2", "r3"), "transcription": ("t1", "t2")}


class ChoiceMachine(RuleBasedStateMachine):
    """Requests pick models, some of them fail later (in any order, as concurrent requests do), time
    passes. Against a plain record of when each model last failed: the choice is always the first model
    whose failure is older than ``retry_s``; only the model a failed request used is skipped; a mark says
    whether the failed request has something else to try."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Ticker()
        self.choice = ModelChoice(ORDER, retry_s=RETRY_S, clock=self.clock)
        self.failed_at: dict[tuple[str, str], float] = {}
        self.in_flight: list[tuple[str, str | None]] = []

    def expected(self, role: str) -> str | None:
        for model in ORDER[role]:
            at = self.failed_at.get((role, model))
            if at is None or self.clock.now - at >= RETRY_S:
                return model
        return None if role == "transcription" else ORDER[role][-1]

    @rule(role=st.sampled_from(sorted(ORDER)))
    def pick(self, role: str) -> None:
        self.in_flight.append((role, self.choice.choose(role)))

    @precondition(lambda self: bool(self.in_flight))
    @rule(index=st.integers(0, 50), fails=st.booleans())
    def answer(self, index: int, fails: bool) -> None:
        role, model = self.in_flight.pop(index % len(self.in_flight))
        if not fails or model is None:
            return
        again = self.choice.mark_failed(role, model, "gone")
        self.failed_at[(role, model)] = self.clock.now
        assert again == (self.choice.choose(role) != model)

    @rule(seconds=st.floats(0, 2.5 * RETRY_S))
    def wait(self, seconds: float) -> None:
        self.clock.now += seconds

    @invariant()
    def choice_follows_the_failures(self) -> None:
        for role in ORDER:
            assert self.choice.choose(role) == self.expected(role)

    @invariant()
    def health_and_warnings_agree(self) -> None:
        nothing = all(self.clock.now - self.failed_at.get(("realtime", m), -1e9) < RETRY_S for m in ORDER["realtime"])
        assert (self.choice.no_realtime_reason() is not None) == nothing
        named = {w.split()[2] for w in self.choice.warnings() if "failed with model_not_found" in w}
        assert named == {m for (_, m), at in self.failed_at.items() if self.clock.now - at < RETRY_S}
        for warning in self.choice.warnings():  # never "X failed …; using X"
            if "failed with model_not_found; using " in warning:
                assert warning.split()[2] != warning.split()[-2]


def test_the_choice_follows_picks_failures_and_time() -> None:
    run_state_machine_as_test(ChoiceMachine, settings=settings(max_examples=200, stateful_step_count=40,
                                                               deadline=None))


# -- model_retry_s in the companion's TOML -----------------------------------------------------------------


def config_args(path: Path) -> argparse.Namespace:
    names = ("host", "port", "db", "openai_base_url", "model", "transcription_model", "planner_model", "voice",
             "tokens_per_hour", "daily_minutes")
    return argparse.Namespace(config=str(path), **dict.fromkeys(names))


@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6)))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_model_retry_s_is_a_bounded_number_of_seconds(tmp_path: Path, value: float) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"model_retry_s = {value!r}\n")  # TOML spells numbers, inf and nan as Python's repr does
    if 10 <= value <= 86400:
        assert build_config(config_args(path), API_KEY).model_retry_s == value
    else:
        with pytest.raises(ValueError, match=r"^model_retry_s: .* must be 10 to 86400 seconds"):
            build_config(config_args(path), API_KEY)


def test_model_retry_s_defaults_and_refuses_text(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("")
    assert build_config(config_args(path), API_KEY).model_retry_s == 900.0
    path.write_text('model_retry_s = "15 minutes"\n')
    with pytest.raises(ValueError, match="model_retry_s: '15 minutes' must be a float"):
        build_config(config_args(path), API_KEY)


def event(type_: str, **data: Any) -> ServerEvent:
    return ServerEvent(type_, {"type": type_, **data})


def test_an_untranscribed_call_keeps_each_utterance_once_and_takes_late_words() -> None:
    now = [100.0]
    transcript = Transcript(clock=lambda: now[0])
    transcript.transcribed = False
    transcript.handle(event("input_audio_buffer.speech_started", item_id="item_1"))
    now[0] = 103.0
    turn = transcript.handle(event("input_audio_buffer.committed", item_id="item_1"))
    assert turn is not None and (turn.role, turn.text, turn.source, turn.at) == ("learner", AUDIO_ONLY, "voice", 100.0)
    assert transcript.handle(event("input_audio_buffer.committed", item_id="item_1")) is None  # once per item
    # A server that transcribes after all: its words replace the placeholder, still one turn.
    transcript.handle(event("conversation.item.input_audio_transcription.completed", item_id="item_1",
                            transcript="I like apples."))
    assert [(t.text, t.at) for t in transcript.turns] == [("I like apples.", 100.0)]
    # A transcribed call makes no placeholder: the words come with the transcription events.
    transcribed = Transcript(clock=lambda: now[0])
    assert transcribed.handle(event("input_audio_buffer.committed", item_id="item_2")) is None
    assert transcribed.turns == []


async def test_the_token_says_whether_the_session_is_transcribed(tmp_path: Path) -> None:
    """null from this companion: no transcription; absent (an older companion): unknown, kept as before."""
    answers = iter([{"transcription_model": None}, {}, {"transcription_model": BATCH}])

    async def token(request: web.Request) -> web.Response:
        return web.json_response({"token": "ek_x", "expires_at": 2_000_000_000, "model": FIRST, "voice": "marin",
                                  **next(answers)})

    app = web.Application()
    app.router.add_post("/api/realtime-token", token)
    runner, port = await start_http(app, "127.0.0.1", 0)
    client = CompanionClient(f"http://127.0.0.1:{port}", KEY, "kiosk-a")
    try:
        assert [(await client.token()).transcription_model for _ in range(3)] == [None, "", BATCH]
    finally:
        await client.aclose()
        await runner.cleanup()


async def test_an_error_without_param_blames_the_model_its_message_names(tmp_path: Path) -> None:
    """A proxy (or a future API) that answers model_not_found without ``param``: the model the message
    names is the one skipped, not the realtime model by default."""
    minted: list[dict[str, Any]] = []

    async def secrets(request: web.Request) -> web.Response:
        session = (await request.json())["session"]
        transcription = session["audio"]["input"].get("transcription", {}).get("model")
        if transcription == LIVE:
            return web.json_response({"error": {"code": "model_not_found", "type": "invalid_request_error",
                                                "message": f"The model '{LIVE}' does not exist."}}, status=404)
        minted.append(session)
        return web.json_response({"value": "ek_test", "expires_at": 2_000_000_000})

    app = web.Application()
    app.router.add_post("/v1/realtime/client_secrets", secrets)
    runner, port = await start_http(app, "127.0.0.1", 0)
    config = CompanionConfig(db_path=tmp_path / "c.db", openai_base_url=f"http://127.0.0.1:{port}",
                             openai_api_key=API_KEY, realtime_model=(FIRST, SECOND), transcription_model=(LIVE, BATCH))
    server = CompanionServer(config)
    try:
        await server.start()
        await server.provision("kiosk-a", KEY)
        answers = await tokens(server, 2)
    finally:
        await server.stop()
        await runner.cleanup()
    assert [(a.status_code, a.json()["model"], a.json()["transcription_model"]) for a in answers] == [
        (200, FIRST, BATCH)] * 2
    assert [s["model"] for s in minted] == [FIRST, FIRST]
