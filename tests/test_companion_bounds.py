"""Nothing one client sends locks others out or breaks a page for everyone: wrong keys counted per address
without locking out right ones, X-Forwarded-For believed only from a named proxy, dates and metrics
bounded, NaN and Infinity refused, error pages with the console's security headers. Each runs on SQLite
and on a private PostgreSQL, over real HTTP."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.companion.console import queries
from appliance.companion.edge import trusted_proxies
from tests.console_helpers import (
    ADMIN,
    ADMIN_PASSWORD,
    KEYS,
    ConsoleStack,
    console_stack,
    lesson_record,
    signed_in,
)

RIGHT = {"Authorization": f"Bearer {KEYS['kiosk-a']}"}


@pytest.fixture(params=["sqlite", "postgres"])
def db_spec(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    return tmp_path / "c.db" if request.param == "sqlite" else request.getfixturevalue("postgres_dsn")


@pytest.fixture
async def stack(db_spec: Path | str) -> AsyncIterator[ConsoleStack]:
    async with console_stack(db_spec, auth_failures=3) as s:
        yield s


def strict_json(text: str) -> Any:
    """JSON as the standard has it: NaN and Infinity are not JSON."""
    def refuse(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


# -- wrong keys behind one address -------------------------------------------------------------------
async def test_a_right_key_is_never_locked_out_by_wrong_ones_from_its_address(stack: ConsoleStack) -> None:
    """A student laptop behind the school's NAT sends requests without a key: that address gets 429 for
    wrong keys, but every kiosk behind it with its right key keeps working, and right keys do not count."""
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        codes = [(await http.post("/api/planner", json={})).status_code for _ in range(5)]
        assert codes == [401, 401, 401, 429, 429]
        token = await http.post("/api/realtime-token", json={}, headers=RIGHT)
        assert token.status_code == 200, token.text
        assert (await http.get("/api/sessions", headers=RIGHT)).status_code == 200
        wrong = await http.post("/api/planner", json={}, headers={"Authorization": "Bearer wrong-key-00000000"})
        assert wrong.status_code == 429 and "Retry-After" in wrong.headers
        # Right keys never fill the address's bucket.
        await stack.db.execute("DELETE FROM rate_events WHERE bucket LIKE ?", ("authfail:%",))
        for _ in range(10):
            assert (await http.get("/api/sessions", headers=RIGHT)).status_code == 200
        assert (await http.post("/api/planner", json={})).status_code == 401


# -- which address is the client's -------------------------------------------------------------------
async def wrong_key_codes(stack: ConsoleStack, forwarded: list[str]) -> list[int]:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        return [(await http.post("/api/planner", json={}, headers={"X-Forwarded-For": f})).status_code
                for f in forwarded]


@pytest.mark.parametrize(("trust_proxy", "counted_apart"), [
    (False, False), (("10.9.9.9",), False), ("127.0.0.1", True), (True, True)])
async def test_forwarded_for_is_believed_only_from_the_named_proxy(db_spec: Path | str, trust_proxy: Any,
                                                                   counted_apart: bool) -> None:
    """X-Forwarded-For names the client only when the peer is a proxy trust_proxy names (true: one on this
    machine); otherwise a client rotating the header would escape the per-address limit."""
    rotating = [f"198.51.100.{i}" for i in range(5)]
    async with console_stack(db_spec, auth_failures=3, trust_proxy=trust_proxy) as s:
        codes = await wrong_key_codes(s, rotating)
    assert codes == ([401] * 5 if counted_apart else [401, 401, 401, 429, 429])


async def test_console_login_throttling_ignores_forwarded_for_unless_the_proxy_is_named(stack: ConsoleStack) -> None:
    """A local or ssh-tunnel user (peer 127.0.0.1) rotating X-Forwarded-For still meets the address limit
    when trust_proxy names no proxy."""
    from appliance.companion.console import accounts
    from tests.console_helpers import TEACHER, TEACHER_PASSWORD, Browser, csrf_of

    browser = Browser(stack.base_url)
    try:
        for i in range(accounts.MAX_FAILURES_PER_ADDRESS):
            page = await browser.get("/console/login")
            wrong = await browser.post("/console/login", {"csrf": csrf_of(page.text), "username": f"x{i}",
                                                          "password": "wrong-password-x"},
                                       headers={"X-Forwarded-For": f"198.51.100.{i}"})
            assert wrong.status_code == 401
        page = await browser.get("/console/login")
        answer = await browser.post("/console/login", {"csrf": csrf_of(page.text), "username": TEACHER,
                                                       "password": TEACHER_PASSWORD},
                                    headers={"X-Forwarded-For": "198.51.100.250"})
        assert answer.status_code == 429
    finally:
        await browser.aclose()


@given(st.one_of(st.text(max_size=40), st.lists(st.text(max_size=20), max_size=3), st.integers(), st.none()))
def test_trust_proxy_is_a_bool_or_addresses_or_a_clear_error(value: Any) -> None:
    try:
        proxies = trusted_proxies(value)
    except ValueError as exc:
        assert "trust_proxy" in str(exc)
    else:
        assert all(isinstance(p, str) for p in proxies)


# -- dates -------------------------------------------------------------------------------------------
SECURITY = ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options")


def assert_console_headers(response: httpx.Response) -> None:
    for name in SECURITY:
        assert name in response.headers, (response.status_code, name)
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("path", ["/console/lessons", "/console/usage", "/console/lessons.csv"])
async def test_the_last_and_first_days_of_the_calendar_are_filters_like_any_other(stack: ConsoleStack,
                                                                                 path: str) -> None:
    """``to=9999-12-31`` was an OverflowError (500); the day after the last day is no day at all."""
    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as browser:
        for params in ({"to": "9999-12-31"}, {"from": "0001-01-01", "to": "9999-12-31"}, {"from": "9999-12-31"}):
            response = await browser.get(path, params=params)
            assert response.status_code == 200, (params, response.text[:300])
            assert_console_headers(response)


async def test_an_unexpected_error_page_carries_the_security_headers(stack: ConsoleStack,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever goes wrong, the 500 page is the console's own: CSP, no-store, no traceback."""
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as browser:
        monkeypatch.setattr(queries, "lessons", broken)
        response = await browser.get("/console/lessons")
    assert response.status_code == 500
    assert_console_headers(response)
    assert "secret internals" not in response.text and "Traceback" not in response.text


day_text = st.one_of(st.dates().map(date.isoformat), st.text(max_size=20),
                     st.sampled_from(["9999-12-31", "0001-01-01", "10000-01-01", "2026-02-30", "-2026-01-01"]))


@given(day_from=st.none() | day_text, day_to=st.none() | day_text)
def test_any_date_filter_is_a_query_or_a_clear_error(day_from: str | None, day_to: str | None) -> None:
    query = {k: v for k, v in (("from", day_from), ("to", day_to)) if v is not None}
    try:
        flt = queries.LessonFilter.parse(query)
    except queries.FilterError as exc:
        assert str(exc).split(":")[0] in ("from", "to")
        return
    sql, args = flt.where()
    assert sql.count("?") == len(args) and all(isinstance(a, str) for a in args)


# -- metrics -----------------------------------------------------------------------------------------
async def batch(stack: ConsoleStack, records: list[dict[str, Any]]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        return await http.post("/api/sessions/batch", json={"sessions": records}, headers=RIGHT)


@pytest.mark.parametrize(("key", "value"), [
    ("est_cost_usd", 1e308), ("duration_s", 1.7e308), ("duration_s", 86400.5), ("learner_turns", 1e300),
    ("learner_audio_s", 1e12), ("first_audio_ms", 1e15)])
async def test_absurd_metrics_are_refused_by_name_and_the_rest_of_the_batch_is_stored(
        stack: ConsoleStack, key: str, value: float) -> None:
    """One absurd record does not sink its batch on any retry: it is refused with invalid_record naming the
    field (the kiosk parks it), the good ones beside it are stored, and the pages still add up."""
    good, bad, also_good = lesson_record(), lesson_record(), lesson_record()
    bad["metrics"][key] = value
    for _ in range(2):  # sent twice, as a kiosk retrying would
        response = await batch(stack, [good, bad, also_good])
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r.get("stored") for r in results] == [True, None, True]
        assert results[1]["error"]["code"] == "invalid_record" and f"metrics.{key}" in results[1]["error"]["message"]
    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as browser:
        for path in ("/console/usage", "/console/lessons", "/console/lessons.csv", "/console/fleet"):
            assert (await browser.get(path, params={"from": "2026-11-24"} if "fleet" not in path else {})
                    ).status_code == 200, path


async def test_absurd_numbers_already_stored_do_not_break_the_pages(stack: ConsoleStack) -> None:
    """A database written before metrics were bounded may hold 1e308: the console's sums stay finite."""
    for _ in range(2):
        record = lesson_record(cost=0.05)
        assert (await batch(stack, [record])).status_code == 200
        record["metrics"].update(est_cost_usd=1e308, duration_s=1e308)
        await stack.db.execute("UPDATE sessions SET cost_usd = ?, duration_s = ?, record = ? WHERE session_id = ?",
                               (1e308, 1e308, json.dumps(record), record["session_id"]))
    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as browser:
        for path in ("/console/usage", "/console/lessons", "/console/lessons.csv"):
            response = await browser.get(path, params={"from": "2026-11-24"})
            assert response.status_code == 200, path
            assert "inf" not in response.text.lower().replace("info", ""), path


# -- NaN and Infinity --------------------------------------------------------------------------------
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
async def test_nan_and_infinity_are_refused_anywhere_in_a_body(stack: ConsoleStack, constant: str) -> None:
    """Refused where they are, naming the field: a lesson holding one gets 400 (in a batch: that lesson's
    invalid_record, which the kiosk parks, while the good lessons beside it are stored, so the batch cannot
    fail on every retry); any other body holding one gets 400. Nothing of it is stored."""
    bad = json.dumps(lesson_record()).replace('"errors": []', f'"errors": [], "extra": {{"x": {constant}}}')
    good = lesson_record()
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        async def post(path: str, body: str) -> httpx.Response:
            return await http.post(path, content=body, headers={**RIGHT, "Content-Type": "application/json"})

        alone = await post("/api/summarize", bad)
        assert alone.status_code == 400, alone.text
        assert f"extra.x: {constant} is not a JSON number" in alone.json()["error"]["message"]
        in_batch = await post("/api/sessions/batch", f'{{"sessions": [{bad}, {json.dumps(good)}]}}')
        assert in_batch.status_code == 200, in_batch.text
        refused, stored = in_batch.json()["results"]
        assert refused["error"]["code"] == "invalid_record" and f"extra.x: {constant}" in refused["error"]["message"]
        assert stored == {"session_id": good["session_id"], "stored": True, "duplicate": False}
        for path, body in (("/api/sessions/batch", f'{{"sessions": [], "note": {constant}}}'),
                           ("/api/heartbeat", f'{{"state": "idle", "disk_free_mb": {constant}}}'),
                           ("/api/planner", f'{{"learner": {{"level": "A2", "age": {constant}}}}}')):
            whole = await post(path, body)
            assert whole.status_code == 400 and constant in whole.json()["error"]["message"], (path, whole.text)
        listed = await http.get("/api/sessions", headers=RIGHT)
        assert listed.status_code == 200
        assert [s["session_id"] for s in strict_json(listed.text)["sessions"]] == [good["session_id"]]


async def test_records_stored_with_nan_are_served_as_standard_json(stack: ConsoleStack) -> None:
    """A record an older companion stored with NaN in it comes back as null, never as non-standard JSON."""
    record = lesson_record()
    assert (await batch(stack, [record])).status_code == 200
    text = json.dumps({**record, "metrics": {**record["metrics"], "odd": math.nan, "big": math.inf}})
    await stack.db.execute("UPDATE sessions SET record = ? WHERE session_id = ?", (text, record["session_id"]))
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        listed = await http.get("/api/sessions", headers=RIGHT)
    assert listed.status_code == 200
    [served] = strict_json(listed.text)["sessions"]
    assert served["metrics"]["odd"] is None and served["metrics"]["big"] is None


printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=8)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | printable |
                           st.floats(allow_nan=False, allow_infinity=False),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(printable, inner,
                                                                                       max_size=4), max_leaves=20)


@given(value=json_values, constant=st.sampled_from(["NaN", "Infinity", "-Infinity"]), data=st.data())
def test_a_constant_anywhere_is_refused_with_its_path(value: Any, constant: str, data: st.DataObject) -> None:
    """Standard JSON parses as before; NaN or Infinity placed anywhere is refused, naming where it is."""
    from appliance.common.safe_text import UnsafeJSON, loads_clean

    assert loads_clean(json.dumps(value), allow_nan=False) == value
    marker = "\"__the_constant__\""  # longer than any generated string
    holder = {"a": [value, "__the_constant__"]} if data.draw(st.booleans()) else \
        {"b": {"c": "__the_constant__"}, "d": value}
    text = json.dumps(holder).replace(marker, constant, 1)
    with pytest.raises(UnsafeJSON) as refused:
        loads_clean(text, allow_nan=False)
    path = "a[1]" if "a" in holder else "b.c"
    assert str(refused.value).startswith(f"{path}: {constant} is not a JSON number"), str(refused.value)
