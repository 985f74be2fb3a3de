"""docs/REALTIME_EVENTS.md lists exactly the server event types of the SDK's RealtimeServerEvent union, each
as the kiosk's own table (appliance/call/event_types.py) classifies it."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from openai.types.realtime import RealtimeServerEvent

from appliance.call.event_types import HANDLED, IGNORED

DOC = Path(__file__).resolve().parent.parent / "docs" / "REALTIME_EVENTS.md"
ROW = re.compile(r"^\| `([a-z_.]+)` \| (handled|ignored on purpose) \| (.+) \|$")


def sdk_server_event_types() -> set[str]:
    """Every ``type`` literal of the union's members (the union is wrapped in an Annotated discriminator)."""
    union = RealtimeServerEvent
    while typing.get_origin(union) is typing.Annotated:
        union = typing.get_args(union)[0]
    return {t for member in typing.get_args(union) for t in typing.get_args(member.model_fields["type"].annotation)}


def doc_rows() -> dict[str, str]:
    rows = [ROW.match(line) for line in DOC.read_text(encoding="utf-8").splitlines()]
    found = [m for m in rows if m]
    table = {m.group(1): m.group(2) for m in found}
    assert len(table) == len(found), "an event type is listed twice"
    return table


def test_the_table_lists_exactly_the_sdk_union() -> None:
    sdk = sdk_server_event_types()
    assert len(sdk) > 40
    assert set(doc_rows()) == sdk
    assert set(HANDLED) | set(IGNORED) == sdk and not set(HANDLED) & set(IGNORED)


def test_the_table_says_what_the_kiosk_does() -> None:
    for event_type, kiosk in doc_rows().items():
        assert kiosk == ("handled" if event_type in HANDLED else "ignored on purpose"), event_type
