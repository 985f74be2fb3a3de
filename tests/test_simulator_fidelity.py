"""The simulator held to OpenAI's standard: calls freed when clients vanish, CORS for browser pages,
the whole session echoed, barge-in truncation, rate limits, the models endpoint and retired models."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from openai.types import Model
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from appliance.audio.wav import ScriptedMicrophone
from appliance.call import events
from appliance.simulator.server import RealtimeSimulator, SimulatorConfig, parse_retirements
from tests.harness import API_KEY, espeak
from tests.simulator_helpers import GA_SESSION, Client, mint

SERVER = TypeAdapter(RealtimeServerEvent)
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
async def make_sim(tmp_path: Path):
    started: list[RealtimeSimulator] = []

    async def make(**options) -> RealtimeSimulator:
        sim = RealtimeSimulator(SimulatorConfig(api_keys=frozenset({API_KEY}), event_log=tmp_path / "events.jsonl",
                                                phrases=("my favourite food is pizza",), **options))
        await sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        await sim.stop()


async def raw_call(sim: RealtimeSimulator) -> tuple[RTCPeerConnection, str]:
    """A bare aiortc client (no kiosk code): offer, answer, connected."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("oai-events")
    pc.addTransceiver("audio")
    connected = asyncio.Event()
    pc.on("connectionstatechange", lambda: connected.set() if pc.connectionState == "connected" else None)
    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{sim.base_url}/v1/realtime/calls", headers={**AUTH, "Content-Type": "application/sdp"},
                            content=pc.localDescription.sdp)
    assert r.status_code == 201, r.text
    await pc.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))
    await asyncio.wait_for(connected.wait(), 10)
    return pc, r.headers["location"].rsplit("/", 1)[1]


async def test_vanished_client_frees_the_call(make_sim) -> None:
    """A client that drops its peer connection without hanging up: the call used to cancel the task
    running its own close(), so it stayed listed (and counted by GET /) forever."""
    sim = await make_sim()
    pc, call_id = await raw_call(sim)
    sim_call = sim.calls[call_id]
    await pc.close()  # no POST .../hangup
    await asyncio.wait_for(sim_call.ended.wait(), 10)
    assert call_id not in sim.calls and call_id in sim.ended_calls
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{sim.base_url}/")).json()["calls"] == 0


async def test_stop_ends_every_call(make_sim) -> None:
    sim = await make_sim()
    pc, call_id = await raw_call(sim)
    sim_call = sim.calls[call_id]
    await sim.stop()
    await pc.close()
    assert sim_call.ended.is_set() and not sim.calls


async def test_cors_is_opt_in_and_exposes_location(make_sim) -> None:
    """Without CORS a browser page cannot POST its offer (the preflight got 405)."""
    plain = await make_sim()
    preflight = {"Origin": "https://tutor.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    async with httpx.AsyncClient() as http:
        r = await http.options(f"{plain.base_url}/v1/realtime/calls", headers=preflight)
        assert r.status_code == 405 and "access-control-allow-origin" not in r.headers
    sim = await make_sim(cors_origin="https://tutor.example")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("oai-events")
    pc.addTransceiver("audio")
    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient() as http:
        r = await http.options(f"{sim.base_url}/v1/realtime/calls", headers=preflight)
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == "https://tutor.example"
        assert "POST" in r.headers["access-control-allow-methods"]
        assert {"authorization", "content-type"} <= {h.strip().lower() for h in
                                                     r.headers["access-control-allow-headers"].split(",")}
        r = await http.post(f"{sim.base_url}/v1/realtime/calls",
                            headers={**AUTH, "Origin": "https://tutor.example", "Content-Type": "application/sdp"},
                            content=pc.localDescription.sdp)
        assert r.status_code == 201
        assert r.headers["access-control-allow-origin"] == "https://tutor.example"
        assert r.headers["access-control-expose-headers"] == "Location" and r.headers["location"]
        r = await http.post(f"{sim.base_url}/v1/realtime/client_secrets", headers={"Origin": "https://tutor.example"},
                            json={"session": GA_SESSION})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "https://tutor.example"
    await pc.close()


async def test_models_endpoint_and_retired_models(make_sim) -> None:
    soon = (date.today() + timedelta(days=30)).isoformat()
    sim = await make_sim(model_shutdowns={"gpt-realtime-2": "2026-01-01", "gpt-transcribe": soon,
                                          "old-transcribe": "2020-01-01"})
    async with httpx.AsyncClient(base_url=sim.base_url, headers=AUTH) as http:
        listed = (await http.get("/v1/models")).json()
        assert listed["object"] == "list"
        models = {m["id"]: Model.model_validate(m) for m in listed["data"]}
        assert models["gpt-transcribe"].shutdown_date == soon and models["gpt-realtime-2.1-mini"].shutdown_date is None
        one = (await http.get("/v1/models/gpt-realtime-2")).json()
        assert Model.model_validate(one).shutdown_date == "2026-01-01" and one["object"] == "model"
        r = await http.get("/v1/models/no-such-model")
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert (await http.get("/v1/models", headers={"Authorization": "Bearer nope"})).status_code == 401
        body = {"session": {**GA_SESSION, "model": "gpt-realtime-2"}}
        r = await http.post("/v1/realtime/client_secrets", json=body)
        assert r.status_code == 404 and r.json()["error"] == {
            "code": "model_not_found", "param": "session.model", "type": "invalid_request_error",
            "message": r.json()["error"]["message"]}
        audio = {"input": {"transcription": {"model": "old-transcribe"}}}
        r = await http.post("/v1/realtime/client_secrets", json={"session": {**GA_SESSION, "audio": audio}})
        assert r.json()["error"]["param"] == "session.audio.input.transcription.model"
        # Retiring soon is not retired: tokens are still minted.
        audio = {"input": {"transcription": {"model": "gpt-transcribe"}}}
        r = await http.post("/v1/realtime/client_secrets", json={"session": {**GA_SESSION, "audio": audio}})
        assert r.status_code == 200
        sim.model_shutdowns["gpt-5.4-mini"] = "2026-01-02"
        r = await http.post("/v1/chat/completions", json={"model": "gpt-5.4-mini", "messages": [
            {"role": "user", "content": "plan"}]})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_retire_option_is_checked() -> None:
    assert parse_retirements(["gpt-realtime=2026-01-20"]) == {"gpt-realtime": "2026-01-20"}
    for bad in ("gpt-realtime", "=2026-01-20", "gpt-realtime=soon"):
        with pytest.raises(ValueError, match="MODEL=YYYY-MM-DD"):
            parse_retirements([bad])


async def test_session_echo_no_unasked_transcription_and_rate_limits(make_sim, tmp_path: Path) -> None:
    """The session echo used to be only what the client sent; transcription events came even when
    the session asked for none; conversation.item.done lost previous_item_id."""
    sim = await make_sim()
    session = {"type": "realtime", "model": "gpt-realtime-2.1-mini", "instructions": "Be Stella.",
               "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 400}}}}
    mic = ScriptedMicrophone()
    await mic.start()
    client = Client(sim, await mint(sim, session), mic)
    await client.call.open(10)
    try:
        created = (await client.until("session.created")).data["session"]
        assert created["output_modalities"] == ["audio"] and created["model"] == "gpt-realtime-2.1-mini"
        assert created["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert created["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert created["audio"]["input"]["transcription"] is None and created["tools"] == []
        detection = created["audio"]["input"]["turn_detection"]
        assert detection["silence_duration_ms"] == 400 and detection["interrupt_response"] is True
        client.call.send({"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief."}})
        updated = (await client.until("session.updated")).data["session"]
        assert updated["instructions"] == "Be brief." and updated["audio"]["input"]["turn_detection"] == detection
        mic.say(espeak("My favourite food is pizza", tmp_path / "pizza.wav"))
        done = await client.until("response.done")
        assert done.data["response"]["status"] == "completed"
        limits = await client.until("rate_limits.updated")
        assert {r["name"] for r in limits.data["rate_limits"]} == {"requests", "tokens"}
        assert not [e for e in client.types() if e.startswith("conversation.item.input_audio_transcription")]
    finally:
        await client.close()
    sim_call = sim.calls.get(client.call.call_id) or sim.ended_calls[client.call.call_id]
    added = {e["item"]["id"]: e["previous_item_id"] for e in sim_call.sent if e["type"] == "conversation.item.added"}
    finished = [e for e in sim_call.sent if e["type"] == "conversation.item.done"]
    assert finished and all(e["previous_item_id"] == added[e["item"]["id"]] for e in finished)
    assert any(e["previous_item_id"] is not None for e in finished)
    types = [e["type"] for e in sim_call.sent]
    assert types.index("rate_limits.updated") > types.index("response.done")
    for event in sim_call.sent:
        SERVER.validate_python(event)


async def test_barge_in_truncates_the_played_item(make_sim, tmp_path: Path) -> None:
    """Learner speech over the tutor cuts the item where it was heard (conversation.item.truncated)."""
    sim = await make_sim()
    mic = ScriptedMicrophone()
    await mic.start()
    client = Client(sim, await mint(sim), mic)
    await client.call.open(10)
    try:
        client.call.send(events.user_text("I like pizza"))
        client.call.send(events.response_create())
        started = await client.until("output_audio_buffer.started")
        mic.say(espeak("My favourite food is pizza", tmp_path / "pizza.wav"))
        truncated = await client.until("conversation.item.truncated")
        cleared = await client.until("output_audio_buffer.cleared")
        assert cleared.data["response_id"] == started.data["response_id"]
        sim_call = sim.calls[client.call.call_id]
        spoken = next(e for e in sim_call.sent if e["type"] == "response.output_item.done")["item"]
        assert truncated.data["item_id"] == spoken["id"]
        assert 0 < truncated.data["audio_end_ms"] < 60_000
        await client.until("response.done", 2)  # the learner's turn is answered
    finally:
        await client.close()
    for event in sim_call.sent:
        SERVER.validate_python(event)


async def test_barge_in_cancels_a_response_in_progress(make_sim, tmp_path: Path) -> None:
    """Learner speech while a response is still being made cancels it with reason turn_detected."""
    sim = await make_sim(response_delay_s=4.0)
    mic = ScriptedMicrophone()
    await mic.start()
    client = Client(sim, await mint(sim), mic)
    await client.call.open(10)
    try:
        client.call.send(events.response_create())
        created = await client.until("response.created")
        mic.say(espeak("My favourite food is pizza", tmp_path / "pizza.wav"))
        await client.until("input_audio_buffer.speech_started")
        done = await client.until("response.done")
        response = done.data["response"]
        assert response["id"] == created.data["response"]["id"] and response["status"] == "cancelled"
        assert response["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    finally:
        await client.close()
    sim_call = sim.ended_calls.get(client.call.call_id) or sim.calls[client.call.call_id]
    for event in sim_call.sent:
        SERVER.validate_python(event)
    assert all(e.get("response_id") != "none" for e in sim_call.sent)

