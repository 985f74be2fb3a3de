"""Hostile input at every edge never escapes as an exception: server events, control socket lines,
companion answers. Property-based (hypothesis) over random and adversarial values."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.call import events
from appliance.common.safe_text import clean_json, clean_text
from appliance.daemon.control import ControlServer
from appliance.uplink.client import CompanionClient, CompanionError
from tests.daemon_helpers import FakeKiosk
from tests.hostile_helpers import deep, event_like, json_values

SURROGATE = "\ud800"


@settings(max_examples=400, deadline=None)
@given(message=st.one_of(st.text(), st.binary(), json_values.map(json.dumps), event_like.map(json.dumps),
                         st.integers(2, 50_000).map(deep), st.sampled_from([deep(5000), '{"type":' * 3000])))
def test_parse_server_event_never_raises(message: str | bytes) -> None:
    """Guards the crash where a 5,000-deep event raised RecursionError out of the parser and killed
    the DTLS transport; any other message must also give None or an event, never an exception."""
    event = events.parse_server_event(message)
    if event is not None:
        assert isinstance(event.type, str)
        # What the parser hands on can always be written as UTF-8 (it goes to disk and logs).
        json.dumps(event.data, ensure_ascii=False).encode("utf-8")


def test_deeply_nested_event_is_dropped_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    assert events.parse_server_event(deep(5000)) is None
    assert events.parse_server_event('{"type": "x", "a": ' + deep(100) + "}") is None
    assert "nested too deeply" in caplog.text


def test_lone_surrogates_are_replaced_at_the_edge() -> None:
    """A JSON event can carry "\\ud800"; before, it reached the store and failed the save."""
    raw = json.dumps({"type": "response.output_audio_transcript.done", "transcript": f"Hi {SURROGATE}there",
                      f"k{SURROGATE}": [f"x{SURROGATE}"]})
    event = events.parse_server_event(raw)
    assert event is not None
    assert event.get("transcript") == "Hi \ufffdthere"
    assert event.get("k\ufffd") == ["x\ufffd"]


@given(value=json_values)
def test_clean_json_output_is_always_encodable(value: Any) -> None:
    cleaned = clean_json(value)
    json.dumps(cleaned, ensure_ascii=False).encode("utf-8")
    if isinstance(value, str):
        assert clean_text(cleaned) == cleaned


@settings(max_examples=300, deadline=None)
@given(line=st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
                      st.fixed_dictionaries({"command": st.sampled_from(["say", "press", "stop", "status"]) | st.text(),
                                             "text": json_values}).map(lambda v: json.dumps(v).encode())))
def test_control_lines_always_get_a_reply(line: bytes) -> None:
    """Any line on the control socket gets one JSON reply with ok true/false, never an exception."""
    kiosk = FakeKiosk()
    reply = ControlServer(None, kiosk).handle(line)  # type: ignore[arg-type]
    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool)
    json.dumps(reply)
    for name, value in kiosk.calls:
        if name == "say":
            assert isinstance(value, str) and value.strip() and len(value) <= 2000


async def test_control_socket_survives_garbage_connections(tmp_path) -> None:
    """Real socket: garbage, an over-long line and a silent client, then a normal status request."""
    from appliance.daemon.control import send_command

    kiosk = FakeKiosk()
    server = ControlServer(tmp_path / "c.sock", kiosk)
    await server.start()
    try:
        for payload in (b"\x00\xff garbage\n", b"x" * 100_000 + b"\n", json.dumps(deep(3000)).encode() + b"\n"):
            reader, writer = await asyncio.open_unix_connection(str(tmp_path / "c.sock"))
            writer.write(payload)
            await writer.drain()
            reply = await asyncio.wait_for(reader.readline(), 10)
            writer.close()
            assert json.loads(reply)["ok"] is False
        assert (await send_command(tmp_path / "c.sock", {"command": "status"}))["status"] == {"state": "idle"}
    finally:
        await server.stop()


class _Scripted(BaseHTTPRequestHandler):
    """Answers every request with the status and body the test set last."""

    status = 200
    body = b"{}"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(type(self).body)))
        self.end_headers()
        self.wfile.write(type(self).body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def scripted_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


companion_bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({}, optional={"token": json_values, "expires_at": json_values, "plan_id": json_values,
                                        "targets": json_values, "results": json_values, "model": json_values,
                                        "activeTargets": json_values, "error": json_values}
                          ).map(lambda v: json.dumps(v).encode()),
    st.sampled_from([deep(5000).encode(), b'{"error": ' + deep(4000).encode() + b"}",
                     json.dumps({"token": f"ek_{SURROGATE}", "expires_at": 1e12}).encode()]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(status=st.sampled_from([200, 201, 400, 401, 429, 500, 503]), body=companion_bodies)
def test_companion_answers_give_values_or_companion_error(scripted_server: str, status: int, body: bytes) -> None:
    """Whatever a (broken or hostile) companion answers, the kiosk's client returns well-formed values
    or raises CompanionError; nothing else escapes into the kiosk."""
    _Scripted.status, _Scripted.body = status, body

    async def exercise() -> None:
        client = CompanionClient(scripted_server, "device-key", "kiosk-1", timeout_s=5)
        try:
            for call in (client.plan, client.token, lambda: client.send_batch([{"session_id": "x"}])):
                try:
                    result = await call()
                except CompanionError as exc:
                    assert isinstance(exc.message, str)
                    exc.message.encode("utf-8")
                    continue
                if isinstance(result, list):
                    assert all(isinstance(r, dict) for r in result)
                else:
                    for value in vars(result).values() if hasattr(result, "__dict__") else []:
                        if isinstance(value, str):
                            value.encode("utf-8")
        finally:
            await client.aclose()

    asyncio.run(exercise())
