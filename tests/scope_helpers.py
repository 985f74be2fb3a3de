"""Two groups on one companion: group A (teacher alice, kiosk-a) and group B, whose kiosk name, group name,
heartbeat and transcripts carry a marker string that must never reach a teacher of group A."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from appliance.companion.console import accounts, groups
from tests.console_helpers import ConsoleStack, heartbeat, lesson_record, sync_lessons

MARK = "ZQXSECRETB"
"""In group B's transcripts, kiosk and group names: never in any response to a group-A teacher."""
SECRET_KIOSK, SECRET_KEY = f"kiosk-{MARK.lower()}", "key-secret-0123456789abcdef"
ALICE, ALICE_PASSWORD = "alice", "alice-oak-class-pass-3"
#: Group A's two lessons, and its totals as a teacher of group A must see them (and nothing more).
A_MINUTES, A_COSTS = (4.0, 6.0), (0.04, 0.06)


@dataclass
class TwoGroups:
    stack: ConsoleStack
    a_lessons: list[dict[str, Any]]
    b_lessons: list[dict[str, Any]]


async def send(stack: ConsoleStack, key: str, *records: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        response = await http.post("/api/sessions/batch", json={"sessions": list(records)},
                                   headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200 and all(r.get("stored") for r in response.json()["results"])


async def two_groups(stack: ConsoleStack) -> TwoGroups:
    """Group A (Oak class) owns kiosk-a and has teacher alice; group B owns a kiosk whose name, heartbeat,
    group name and transcripts all carry the marker; kiosk-b (the school's group, not alice's) carries it too."""
    db = stack.db
    oak = await groups.add_group(db, "Oak class")
    birch = await groups.add_group(db, f"Birch {MARK} class")
    await stack.server.provision(SECRET_KIOSK, SECRET_KEY)
    await groups.assign_kiosk(db, "kiosk-a", oak)
    await groups.assign_kiosk(db, SECRET_KIOSK, birch)
    await accounts.add_user(db, ALICE, ALICE_PASSWORD, "teacher")
    await accounts.add_user(db, f"bob{MARK.lower()}", "bob-birch-class-pass-4", "teacher")
    await groups.add_member(db, oak, ALICE)
    await groups.add_member(db, birch, f"bob{MARK.lower()}")
    a_lessons = [lesson_record("kiosk-a", "2026-11-23", A_MINUTES[0], A_COSTS[0]),
                 lesson_record("kiosk-a", "2026-11-24", A_MINUTES[1], A_COSTS[1])]
    b_lessons = [lesson_record(SECRET_KIOSK, day, 30.0 + i, 1.5 + i, words=(f"I am {MARK} from Birch.", "Hello!"))
                 for i, day in enumerate(("2026-11-22", "2026-11-24", "2026-11-25"))]
    other = lesson_record("kiosk-b", "2026-11-24", 12.0, 0.5, words=(f"{MARK} here on kiosk b", "Hi."))
    await sync_lessons(stack, *a_lessons, other)
    await send(stack, SECRET_KEY, *b_lessons)
    await heartbeat(stack, SECRET_KIOSK, version=f"9.{MARK}", last_error=f"disk {MARK}")
    await heartbeat(stack, "kiosk-a", version="0.1.0")
    return TwoGroups(stack, a_lessons, [*b_lessons, other])




def leaks(text: str) -> bool:
    """Whether ``text`` names anything of group B (or of kiosk-b, which is in the school's group, not alice's)."""
    lowered = text.lower()
    return MARK.lower() in lowered or "kiosk-b" in lowered or "birch" in lowered
