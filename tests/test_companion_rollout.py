"""Staged rollout on the companion, over real HTTP on SQLite and on a private PostgreSQL: which release
``GET /api/updates/assignment`` names for each kiosk (share stable and monotonic, groups first, paused,
rolled back), the checks on every rollout change, and the update state kiosks report in heartbeats."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.companion import rollout
from appliance.companion.console import groups
from appliance.companion.db import open_database
from appliance.companion.heartbeat import InvalidHeartbeat, validate_heartbeat
from appliance.companion.migrations import steps
from appliance.companion.rollout import Channel, RolloutError, in_share, parse_share
from appliance.companion.server import CompanionConfig, CompanionServer
from appliance.companion.storage import hash_key
from appliance.contract.updates import MAX_UPDATE_ERROR, UPDATE_STATES
from tests.companion_helpers import SK

RELEASES = ["1.2.0", "1.3.0", "1.4.0", "1.10.0"]
ADMIN = "ada"
KIOSKS = [f"room-{n:02d}" for n in range(40)]


def key(kiosk: str) -> dict[str, str]:
    return {"Authorization": f"Bearer key-{kiosk}-0123456789abcdef"}


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "c.db") if request.param == "sqlite" else request.getfixturevalue("postgres_dsn")


@pytest.fixture
async def companion(db: str) -> AsyncIterator[CompanionServer]:
    server = CompanionServer(CompanionConfig(db_path=db, openai_base_url="http://127.0.0.1:9", openai_api_key=SK))
    await server.start()
    try:
        for kiosk in KIOSKS:
            await server.provision(kiosk, key(kiosk)["Authorization"].removeprefix("Bearer "))
        yield server
    finally:
        await server.stop()


async def assigned(server: CompanionServer, kiosks: list[str] = KIOSKS) -> dict[str, Any]:
    """Each kiosk's answer from ``GET /api/updates/assignment``, asked with its own device key."""
    answers = {}
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        for kiosk in kiosks:
            response = await http.get("/api/updates/assignment", headers=key(kiosk))
            assert response.status_code == 200, response.text
            answers[kiosk] = response.json()
    return answers


def taking(answers: dict[str, Any]) -> dict[str, str]:
    return {kiosk: a["version"] for kiosk, a in answers.items() if a["version"] is not None}


async def test_nothing_published_assigns_nothing_and_needs_a_device_key(companion: CompanionServer) -> None:
    answers = await assigned(companion, KIOSKS[:3])
    for answer in answers.values():
        assert answer["version"] is None and answer["channel"] == "stable"
        assert rollout.CHECK_AFTER_S <= answer["check_after_s"] <= rollout.CHECK_AFTER_S + rollout.CHECK_JITTER_S
    async with httpx.AsyncClient(base_url=companion.base_url) as http:
        response = await http.get("/api/updates/assignment", headers={"Authorization": "Bearer wrong-0123456789"})
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"


async def test_the_share_is_stable_and_raising_it_keeps_the_first_kiosks_in(companion: CompanionServer) -> None:
    db = companion.storage.db
    await rollout.publish(db, "stable", "1.4.0", 10, ADMIN, RELEASES)
    first = taking(await assigned(companion))
    assert first == {k: "1.4.0" for k in KIOSKS if in_share(k, 10)}
    assert 0 < len(first) < len(KIOSKS) // 2
    assert taking(await assigned(companion)) == first  # asked again: the same kiosks
    await rollout.set_rollout(db, "stable", 50, [], ADMIN)
    half = taking(await assigned(companion))
    assert set(first) < set(half) < set(KIOSKS)  # the first 10 % stay in, more join
    await rollout.set_rollout(db, "stable", 100, [], ADMIN)
    assert taking(await assigned(companion)) == {k: "1.4.0" for k in KIOSKS}
    # A newer release starts from the same kiosks again.
    await rollout.publish(db, "stable", "1.10.0", 10, ADMIN, RELEASES)
    assert taking(await assigned(companion)) == {k: "1.10.0" for k in first}


async def test_groups_take_the_release_first_and_canary_kiosks_follow_their_channel(
        companion: CompanionServer) -> None:
    db = companion.storage.db
    pilot = await groups.add_group(db, "Pilot school")
    outside = [k for k in KIOSKS if not in_share(k, 10)]
    in_pilot, canary = outside[:3], outside[3]
    for kiosk in in_pilot:
        await groups.assign_kiosk(db, kiosk, pilot)
    await rollout.publish(db, "stable", "1.4.0", 0, ADMIN, RELEASES)
    assert taking(await assigned(companion)) == {}  # share 0, no groups yet: nobody
    await rollout.set_rollout(db, "stable", 0, [pilot], ADMIN)
    assert taking(await assigned(companion)) == {k: "1.4.0" for k in in_pilot}
    await rollout.set_rollout(db, "stable", 10, [pilot], ADMIN)
    assert taking(await assigned(companion)) == {k: "1.4.0" for k in KIOSKS if k in in_pilot or in_share(k, 10)}
    # A canary kiosk follows the canary channel, whatever stable says.
    await rollout.set_kiosk_channel(db, canary, "canary", ADMIN)
    [answer] = (await assigned(companion, [canary])).values()
    assert answer["channel"] == "canary" and answer["version"] is None
    await rollout.publish(db, "canary", "1.10.0", 100, ADMIN, RELEASES)
    assert (await assigned(companion, [canary]))[canary]["version"] == "1.10.0"


async def test_a_paused_rollout_assigns_nothing_until_resumed(companion: CompanionServer) -> None:
    db = companion.storage.db
    await rollout.publish(db, "stable", "1.4.0", 100, ADMIN, RELEASES)
    await rollout.set_paused(db, "stable", True, ADMIN)
    assert taking(await assigned(companion)) == {}
    await rollout.set_paused(db, "stable", False, ADMIN)
    assert taking(await assigned(companion)) == {k: "1.4.0" for k in KIOSKS}


async def test_rolling_back_names_the_earlier_release_for_every_kiosk(companion: CompanionServer) -> None:
    db = companion.storage.db
    await rollout.publish(db, "stable", "1.3.0", 100, ADMIN, RELEASES)
    await rollout.publish(db, "stable", "1.4.0", 10, ADMIN, RELEASES)
    await rollout.set_paused(db, "stable", True, ADMIN)  # the admin stops it first, then rolls back
    assert await rollout.roll_back(db, "stable", "1.3.0", ADMIN, RELEASES) == "1.4.0"
    assert taking(await assigned(companion)) == {k: "1.3.0" for k in KIOSKS}
    rows = await db.fetchall("SELECT username, action, subject FROM access_log ORDER BY id")
    assert rows == [(ADMIN, "publish-release", "1.3.0 to stable at 100%"),
                    (ADMIN, "publish-release", "1.4.0 to stable at 10%"),
                    (ADMIN, "pause-rollout", "stable (1.4.0)"),
                    (ADMIN, "rollback-channel", "stable from 1.4.0 to 1.3.0")]


async def test_every_rollout_change_is_checked_and_a_refused_one_changes_nothing(companion: CompanionServer) -> None:
    db = companion.storage.db
    await rollout.publish(db, "stable", "1.4.0", 20, ADMIN, RELEASES)
    refused = [
        (rollout.publish(db, "stable", "9.9.9", 10, ADMIN, RELEASES), "not a release in the signed repository"),
        (rollout.publish(db, "stable", "1.3.0", 10, ADMIN, RELEASES), "not newer than 1.4.0"),
        (rollout.publish(db, "stable", "1.4.0", 10, ADMIN, RELEASES), "not newer than 1.4.0"),
        (rollout.publish(db, "nightly", "1.10.0", 10, ADMIN, RELEASES), "channel: one of canary, stable"),
        (rollout.publish(db, "stable\x00", "1.10.0", 10, ADMIN, RELEASES), "channel: one of"),
        (rollout.roll_back(db, "stable", "1.10.0", ADMIN, RELEASES), "older than 1.4.0"),
        (rollout.roll_back(db, "canary", "1.2.0", ADMIN, RELEASES), "older than the published one"),
        (rollout.set_rollout(db, "stable", 50, [999], ADMIN), "groups: choose groups"),
        (rollout.set_kiosk_channel(db, "no-such-kiosk", "canary", ADMIN), "no kiosk named no-such-kiosk"),
        (rollout.set_kiosk_channel(db, KIOSKS[0], "beta", ADMIN), "channel: one of"),
        (rollout.publish(db, "canary", "1.4.0", 10, ADMIN, []), "publish a signed release to the repository"),
    ]
    for change, message in refused:
        with pytest.raises(RolloutError, match=message):
            await change
    found = {c.name: c for c in await rollout.channels(db)}
    stable, canary = found["stable"], found["canary"]
    assert (stable.version, stable.share, stable.paused, stable.group_ids) == ("1.4.0", 20, False, frozenset())
    assert canary.version is None
    assert await db.fetchone("SELECT channel FROM kiosks WHERE kiosk_id = ?", (KIOSKS[0],)) == ("stable",)
    assert await db.fetchone("SELECT COUNT(*) FROM access_log") == (1,)


async def test_two_admins_publishing_at_once_never_leave_the_older_release_published(
        companion: CompanionServer) -> None:
    """Each change is checked against the one before it: of two publishes at once, the older release is either
    published first and replaced, or refused; it is never left published over the newer one."""
    db = companion.storage.db
    for _ in range(20):
        await db.execute("UPDATE update_channels SET version = NULL WHERE name = 'stable'")
        results = await asyncio.gather(rollout.publish(db, "stable", "1.3.0", 10, "ada", RELEASES),
                                       rollout.publish(db, "stable", "1.4.0", 10, "bob", RELEASES),
                                       return_exceptions=True)
        assert all(r is None or isinstance(r, RolloutError) for r in results), results
        assert await db.fetchone("SELECT version FROM update_channels WHERE name = 'stable'") == ("1.4.0",)


async def test_heartbeats_carry_the_update_state_and_error(companion: CompanionServer) -> None:
    kiosk = KIOSKS[0]
    async with httpx.AsyncClient(base_url=companion.base_url) as http:
        beat = {"version": "1.4.0", "state": "idle", "update_state": "rolled-back",
                "update_error": "1.5.0 did not reach READY within 120 s; back on 1.4.0"}
        assert (await http.post("/api/heartbeat", headers=key(kiosk), json=beat)).status_code == 200
        kept = ("1.4.0", "rolled-back", "1.5.0 did not reach READY within 120 s; back on 1.4.0")
        row = "SELECT version, update_state, update_error FROM kiosk_status WHERE kiosk_id = ?"
        assert await companion.storage.db.fetchone(row, (kiosk,)) == kept
        for bad, field in (({"update_state": "exploding"}, "update_state"), ({"update_state": 3}, "update_state"),
                           ({"update_error": "x" * (MAX_UPDATE_ERROR + 1)}, "update_error"),
                           ({"update_error": ["x"]}, "update_error")):
            response = await http.post("/api/heartbeat", headers=key(kiosk), json={**beat, **bad})
            assert response.status_code == 400 and field in response.json()["error"]["message"], (bad, response.text)
        assert await companion.storage.db.fetchone(row, (kiosk,)) == kept  # a refused heartbeat changes nothing
        # An older kiosk sends no update fields: they are empty, not stale.
        assert (await http.post("/api/heartbeat", headers=key(kiosk), json={"version": "1.4.1"})).status_code == 200
        assert await companion.storage.db.fetchone(row, (kiosk,)) == ("1.4.1", None, None)


async def test_the_updaters_own_report_keeps_the_daemons_last_heartbeat(companion: CompanionServer) -> None:
    """The updater runs beside the daemon and knows only the version and its own state: its report must not
    blank what the daemon said (state, lessons waiting, disk), and a later daemon heartbeat replaces all."""
    kiosk = KIOSKS[0]
    row = "SELECT version, state, unsynced, update_state, update_error FROM kiosk_status WHERE kiosk_id = ?"
    async with httpx.AsyncClient(base_url=companion.base_url) as http:
        daemon = {"version": "1.4.0", "state": "idle", "unsynced": 3, "update_state": "idle"}
        assert (await http.post("/api/heartbeat", headers=key(kiosk), json=daemon)).status_code == 200
        updater = {"updater": True, "version": "1.5.0", "update_state": "health-check", "update_error": None}
        assert (await http.post("/api/heartbeat", headers=key(kiosk), json=updater)).status_code == 200
        assert await companion.storage.db.fetchone(row, (kiosk,)) == ("1.5.0", "idle", 3, "health-check", None)
        refused = await http.post("/api/heartbeat", headers=key(kiosk), json={**updater, "updater": "yes"})
        assert refused.status_code == 400 and "updater" in refused.json()["error"]["message"]
        assert (await http.post("/api/heartbeat", headers=key(kiosk),
                                json={**daemon, "version": "1.5.0", "unsynced": 0})).status_code == 200
        assert await companion.storage.db.fetchone(row, (kiosk,)) == ("1.5.0", "idle", 0, "idle", None)


async def test_a_companion_upgraded_with_kiosks_puts_them_in_stable_and_keeps_their_heartbeats(db: str) -> None:
    """A district's database at schema version 7 (before rollout): every kiosk lands in ``stable`` with nothing
    published, and its last heartbeat is kept."""
    old = await open_database(db)
    try:
        async with old.transaction() as q:
            await q.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                            "applied_at DOUBLE PRECISION NOT NULL)")
            for step in steps():
                if step.VERSION <= 7:
                    await step.apply(q)
                    await q.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                                    (step.VERSION, step.NAME, 0.0))
            await q.execute("INSERT INTO kiosks (kiosk_id, key_hash, created_at) VALUES (?, ?, ?)",
                            ("old-room", hash_key("key-old-room-0123456789abcdef"), 1.0))
            await q.execute("INSERT INTO kiosk_status (kiosk_id, seen_at, version, state) VALUES (?, ?, ?, ?)",
                            ("old-room", 2.0, "1.2.0", "idle"))
    finally:
        await old.close()
    server = CompanionServer(CompanionConfig(db_path=db, openai_base_url="http://127.0.0.1:9"))
    await server.start()
    try:
        answer = (await assigned(server, ["old-room"]))["old-room"]
        assert (answer["channel"], answer["version"]) == ("stable", None)
        row = await server.storage.db.fetchone("SELECT version, state, update_state FROM kiosk_status")
        assert row == ("1.2.0", "idle", None)
    finally:
        await server.stop()


# -- the decision itself, for any kiosk ids and shares ---------------------------------------------------
kiosk_ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=64)
shares = st.integers(0, 100)


@given(kiosk_ids, shares, shares)
def test_a_larger_share_keeps_every_kiosk_a_smaller_one_admitted(kiosk: str, a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert not in_share(kiosk, low) or in_share(kiosk, high)
    assert not in_share(kiosk, 0) and in_share(kiosk, 100)


@given(st.lists(kiosk_ids, min_size=1, max_size=30), shares, st.sets(st.integers(1, 5)),
       st.one_of(st.none(), st.integers(1, 8)), st.booleans())
def test_groups_go_first_and_a_paused_or_empty_channel_names_nothing(
        kiosks: list[str], share: int, first: set[int], group: int | None, paused: bool) -> None:
    channel = Channel("stable", "1.4.0", share, paused, frozenset(first))
    for kiosk in kiosks:
        got = channel.assigned(kiosk, group)
        if paused:
            assert got is None
        elif group in first:
            assert got == "1.4.0"
        else:
            assert got == ("1.4.0" if in_share(kiosk, share) else None)
        assert Channel("stable", None, share, False, frozenset(first)).assigned(kiosk, group) is None


def test_the_share_splits_many_kiosks_in_proportion() -> None:
    ids = [f"kiosk-{n}" for n in range(5000)]
    for share in (1, 10, 50, 90):
        admitted = sum(in_share(k, share) for k in ids)
        assert abs(admitted / len(ids) - share / 100) < 0.03, (share, admitted)


@given(st.text(max_size=8))
def test_a_share_is_a_whole_percent_or_refused_naming_the_field(text: str) -> None:
    try:
        share = parse_share(text)
    except RolloutError as exc:
        assert str(exc).startswith("share:")
    else:
        assert 0 <= share <= 100 and str(share) == text.strip().removesuffix("%").strip().lstrip("0").rjust(1, "0")


@given(st.one_of(st.sampled_from(UPDATE_STATES), st.text(max_size=20), st.integers(), st.none()),
       st.one_of(st.text(max_size=MAX_UPDATE_ERROR + 5), st.none(), st.integers()))
def test_the_update_fields_of_a_heartbeat_are_kept_exactly_or_refused(state: Any, error: Any) -> None:
    body = {"update_state": state, "update_error": error}
    good_state = state is None or state in UPDATE_STATES
    good_error = error is None or (isinstance(error, str) and len(error) <= MAX_UPDATE_ERROR)
    try:
        report = validate_heartbeat(body)
    except InvalidHeartbeat as exc:
        assert not (good_state and good_error)
        assert ("update_state" if not good_state else "update_error") in str(exc)
    else:
        assert good_state and good_error
        assert report.get("update_state") == state and report.get("update_error") == error
