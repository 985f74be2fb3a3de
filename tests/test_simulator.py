"""The Realtime simulator as a faithful stand-in: HTTP contract, GA events, audio, consent emulation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from appliance.audio.wav import ScriptedMicrophone
from appliance.call import events
from appliance.simulator.server import RealtimeSimulator, SimulatorConfig
from tests.harness import API_KEY, espeak
from tests.simulator_helpers import GA_SESSION, Client, mint

SERVER = TypeAdapter(RealtimeServerEvent)


@pytest.fixture
async def simulator(tmp_path: Path):
    sim = RealtimeSimulator(SimulatorConfig(api_keys=frozenset({API_KEY}), event_log=tmp_path / "events.jsonl",
                                            phrases=("stop", "my favourite food is pizza")))
    await sim.start()
    yield sim
    await sim.stop()


async def test_http_contract_errors(simulator: RealtimeSimulator) -> None:
    base = simulator.base_url
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{base}/v1/realtime/client_secrets", json={"session": GA_SESSION})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = await http.post(f"{base}/v1/realtime/client_secrets", headers={"Authorization": "Bearer sk-wrong"},
                            json={"session": GA_SESSION})
        assert r.status_code == 401
        auth = {"Authorization": f"Bearer {API_KEY}"}
        beta = {"model": "gpt-realtime-mini", "modalities": ["text", "audio"], "voice": "alloy"}
        r = await http.post(f"{base}/v1/realtime/sessions", headers=auth, json=beta)
        assert r.status_code == 400 and r.json()["error"]["code"] == "beta_api_shape_disabled"
        r = await http.post(f"{base}/v1/realtime/client_secrets", headers={**auth, "OpenAI-Beta": "realtime=v1"},
                            json={"session": GA_SESSION})
        assert r.json()["error"]["code"] == "beta_api_shape_disabled"
        r = await http.post(f"{base}/v1/realtime/client_secrets", headers=auth,
                            json={"session": {"type": "realtime", "modalities": ["audio"]}})
        assert r.json()["error"]["code"] == "beta_api_shape_disabled"
        r = await http.post(f"{base}/v1/realtime/client_secrets", headers=auth,
                            json={"session": {**GA_SESSION, "output_modalities": ["audio", "text"]}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "session.output_modalities"
        r = await http.post(f"{base}/v1/realtime/client_secrets", headers=auth,
                            json={"expires_after": {"anchor": "created_at", "seconds": 5}, "session": GA_SESSION})
        assert r.status_code == 400
        token = await mint(simulator)
        r = await http.post(f"{base}/v1/realtime/calls", headers={"Authorization": f"Bearer {token}",
                                                                  "Content-Type": "application/sdp"}, content=b"hello")
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_offer"
        r = await http.post(f"{base}/v1/realtime/calls", headers={"Authorization": "Bearer ek_nope",
                                                                  "Content-Type": "application/sdp"}, content=b"v=0")
        assert r.status_code == 401
        r = await http.post(f"{base}/v1/realtime/calls/rtc_missing/hangup", headers=auth)
        assert r.status_code == 404
        r = await http.post(f"{base}/v1/chat/completions", headers=auth,
                            json={"model": "gpt-5-nano", "messages": [{"role": "user", "content": "plan"}],
                                  "response_format": {"type": "json_object"}})
        pack = json.loads(r.json()["choices"][0]["message"]["content"])
        assert pack["title"] and len(pack["targets"]) == 3


async def test_lesson_events_audio_and_schema(simulator: RealtimeSimulator, tmp_path: Path) -> None:
    mic = ScriptedMicrophone()
    await mic.start()
    client = Client(simulator, await mint(simulator), mic)
    await client.call.open(10)
    try:
        assert client.call.remote_is_lite and client.call.call_id in simulator.calls
        await client.until("session.created")
        client.call.send(events.user_text("I like pizza"))
        client.call.send(events.response_create())
        done = await client.until("response.done")
        assert done.data["response"]["status"] == "completed"
        assert done.data["response"]["usage"]["output_token_details"]["audio_tokens"] > 0
        transcript = await client.until("response.output_audio_transcript.done")
        assert "pizza" in transcript.data["transcript"]
        await client.until("output_audio_buffer.stopped")
        assert sum(level > -40 for level in client.levels) > 25  # > 0.5 s of clearly audible speech
        # A spoken utterance: VAD, transcription (a known phrase), an automatic answer.
        mic.say(espeak("My favourite food is pizza", tmp_path / "pizza.wav"))
        await client.until("input_audio_buffer.speech_started")
        await client.until("input_audio_buffer.speech_stopped")
        heard = await client.until("conversation.item.input_audio_transcription.completed")
        assert heard.data["transcript"] == "my favourite food is pizza"
        await client.until("response.done", 2)
        # Barge-in while the tutor speaks: cancel (the response is already generated) and clear.
        await client.until("output_audio_buffer.started", 2)
        client.call.send(events.response_cancel())
        client.call.send(events.output_audio_buffer_clear())
        await client.until("output_audio_buffer.cleared")
        # Manual turns: a commit right after a clear (under 100 ms of audio) is an error naming the event.
        client.call.send(events.manual_turns_update())
        await client.until("session.updated")
        commit = events.input_audio_buffer_commit()
        client.call.send(events.input_audio_buffer_clear())
        client.call.send(commit)
        error = await client.first(lambda e: e.type == "error" and e.data["error"]["event_id"] == commit["event_id"])
        assert error.data["error"]["code"] == "input_audio_buffer_commit_empty"
        client.call.send({"type": "no.such.event"})
        await client.first(lambda e: e.type == "error" and "no.such.event" in e.data["error"]["message"])
    finally:
        await client.close()
    sim_call = simulator.calls.get(client.call.call_id) or simulator.ended_calls[client.call.call_id]
    for event in sim_call.sent:
        SERVER.validate_python(event)
    types = [e["type"] for e in sim_call.sent]
    assert types[0] == "session.created"
    logged = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    received = [entry["event"]["type"] for entry in logged if entry["direction"] == "client"]
    assert received[:2] == ["conversation.item.create", "response.create"]
    # Server events are in the log too, in the order they were sent.
    server_ids = [entry["event"]["event_id"] for entry in logged if entry["direction"] == "server"]
    assert server_ids == [e["event_id"] for e in sim_call.sent]


async def test_multipart_offer_is_accepted(simulator: RealtimeSimulator) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("oai-events")
    pc.addTransceiver("audio")
    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{simulator.base_url}/v1/realtime/calls", headers={"Authorization": f"Bearer {API_KEY}"},
                            files={"sdp": (None, pc.localDescription.sdp),
                                   "session": (None, json.dumps({"type": "realtime", "model": "gpt-realtime"}))})
    await pc.close()
    assert r.status_code == 201 and r.headers["content-type"].startswith("application/sdp")
    assert r.headers["location"].startswith("/v1/realtime/calls/rtc_") and "a=ice-lite" in r.text
    call_id = r.headers["location"].rsplit("/", 1)[1]
    async with httpx.AsyncClient() as http:
        auth = {"Authorization": f"Bearer {API_KEY}"}
        hangup = f"{simulator.base_url}/v1/realtime/calls/{call_id}/hangup"
        assert (await http.post(hangup, headers=auth)).status_code == 200
        assert (await http.post(hangup, headers=auth)).status_code == 404


def test_phrase_recognizer_rejects_unknown_speech(tmp_path: Path) -> None:
    from appliance.audio.dsp import resample
    from appliance.audio.wav import read_wav
    from appliance.simulator.asr import PhraseRecognizer

    recognizer = PhraseRecognizer(["stop", "my favourite food is pizza"])
    samples, rate = read_wav(espeak("The weather is very nice today", tmp_path / "w.wav"))
    text = asyncio.run(recognizer.transcribe(resample(samples, rate, 48000)))
    assert text.startswith("(speech, ")
    samples, rate = read_wav(espeak("Stop!", tmp_path / "s.wav"))
    assert asyncio.run(recognizer.transcribe(resample(samples, rate, 48000))) == "stop"
    # The clip the recognizer heard is real speech, not silence (espeak-ng wrote something).
    assert samples.dtype == np.int16 and np.abs(samples.astype(np.int32)).max() > 3000
