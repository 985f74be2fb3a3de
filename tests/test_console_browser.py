"""The console in a real browser: Debian's headless Chromium driven by Playwright, against a real companion.

Never a downloaded browser: the test uses /usr/bin/chromium (apt package ``chromium``) and skips when it is
absent. With STELLA_SCREENSHOTS=1 the flow also saves screenshots of the main pages to docs/console/.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.console_helpers import (
    ADMIN,
    ADMIN_PASSWORD,
    KEYS,
    TEACHER,
    TEACHER_PASSWORD,
    ConsoleStack,
    console_stack,
    heartbeat,
    lesson_record,
    sync_lessons,
)
from tests.rollout_helpers import signed_repository
from tests.scope_helpers import ALICE, ALICE_PASSWORD, SECRET_KIOSK, leaks, two_groups

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parent.parent / "docs" / "console"

#: Names of visible form fields that no <label> names (a screen reader would read them as "edit text").
UNLABELLED = ("[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
              ".filter(e => e.labels.length === 0).map(e => e.name || e.id)")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[ConsoleStack]:
    async with console_stack(tmp_path / "c.db") as s:
        yield s


@contextlib.asynccontextmanager
async def chromium(**context: Any) -> AsyncIterator[Any]:
    """A fresh browser context; collects console messages (CSP violations show up there) in ``.messages``."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            ctx = await browser.new_context(accept_downloads=True, **context)
            ctx.messages = []
            ctx.on("console", lambda msg: ctx.messages.append(msg.text))
            yield ctx
        finally:
            await browser.close()


async def screenshot(page: Any, name: str) -> None:
    """Screenshots for the docs, made by the test itself (STELLA_SCREENSHOTS=1) so they always match the pages."""
    if os.environ.get("STELLA_SCREENSHOTS") != "1":
        return
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


async def sign_in(page: Any, base: str, username: str, password: str) -> None:
    await page.goto(f"{base}/console/login")
    await page.fill("#username", username)
    await page.fill("#password", password)
    async with page.expect_navigation():
        await page.click("button:has-text('Sign in')")
    assert page.url.endswith("/console/lessons"), page.url


async def token_status(stack: ConsoleStack, key: str) -> int:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        response = await http.post("/api/realtime-token", json={}, headers={"Authorization": f"Bearer {key}"})
        return response.status_code


async def test_admin_runs_the_fleet_in_a_browser(stack: ConsoleStack, tmp_path: Path) -> None:
    synced = lesson_record("kiosk-a", words=("I have a dog. His name is Rex.", "What a lovely name! Is Rex big?",
                                             "Yes, he is very big.", "Great sentence."))
    await sync_lessons(stack, synced, lesson_record("kiosk-a", "2026-11-23", 5.0, 0.07),
                       lesson_record("kiosk-b", "2026-11-23", 2.5, 0.03))
    await heartbeat(stack, "kiosk-a", version="0.1.0", state="idle", unsynced=0, disk_free_mb=2048.0)
    base = stack.base_url
    async with chromium(viewport={"width": 1100, "height": 760}) as ctx:
        page = await ctx.new_page()
        # Keyboard only: tab to the form, type, submit with Enter.
        await page.goto(f"{base}/console/")
        assert "/console/login" in page.url
        await screenshot(page, "login")
        await page.evaluate("document.activeElement && document.activeElement.blur()")
        for _ in range(10):
            await page.keyboard.press("Tab")
            if await page.evaluate("document.activeElement.id") == "username":
                break
        else:
            pytest.fail("the username field is not reachable with Tab")
        await page.keyboard.type(ADMIN)
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.id") == "password"
        # Keyboard focus is visible (the stylesheet's outline, not the browser's removed one).
        assert await page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
        await page.keyboard.type(ADMIN_PASSWORD)
        async with page.expect_navigation():
            await page.keyboard.press("Enter")
        assert page.url.endswith("/console/lessons")
        # Chromium keeps and sends the Secure cookie over plain HTTP to 127.0.0.1 (a secure context).
        cookie = next(c for c in await ctx.cookies() if c["name"] == "stella_console")
        assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        await screenshot(page, "lessons")

        # The fleet shows the kiosk that just synced.
        await page.click("nav >> text=Fleet")
        row = page.locator("#kiosk-kiosk-a")
        assert "0.1.0" in await row.inner_text() and "never" not in await row.inner_text()
        assert "never" in await page.locator("#kiosk-kiosk-b").inner_text()
        await screenshot(page, "fleet")

        # A lesson's transcript.
        await page.click("nav >> text=Lessons")
        async with page.expect_navigation():
            await page.click(f"a[href$='{synced['session_id']}']")
        assert "Rex" in await page.inner_text("ol.transcript") and "3.0 minutes" in await page.inner_text("dl")
        await screenshot(page, "lesson")

        # CSV export of the filtered list, as a download.
        await page.goto(f"{base}/console/lessons?kiosk=kiosk-a")
        async with page.expect_download() as info:
            await page.click("text=Export these lessons as CSV")
        download = await info.value
        text = Path(await download.path()).read_text(encoding="utf-8-sig")
        assert synced["session_id"] in text and "kiosk-b" not in text and download.suggested_filename.endswith(".csv")

        await page.click("nav >> text=Usage")
        await page.goto(f"{base}/console/usage?from=2026-11-20")
        assert await page.locator("svg[role=img] > title").count() == 2
        await screenshot(page, "usage")

        # Add a kiosk: its key is on the result page, works, and is not shown again.
        await page.goto(f"{base}/console/fleet")
        await page.fill("#kiosk_id", "library-1")
        async with page.expect_navigation():
            await page.click("button:has-text('Add kiosk')")
        key = await page.input_value("#device-key")
        assert len(key) >= 40 and await token_status(stack, key) == 200
        await screenshot(page, "kiosk-added")
        await page.goto(f"{base}/console/fleet")
        assert key not in await page.content()

        # A budget change.
        await page.fill("#budget-kiosk-a", "25")
        async with page.expect_navigation():
            await page.click("#kiosk-kiosk-a button:has-text('Save')")
        assert "Daily budget saved." in await page.inner_text("main")
        assert await page.input_value("#budget-kiosk-a") == "25"
        assert await stack.db.fetchone("SELECT daily_minutes FROM kiosks WHERE kiosk_id = 'kiosk-a'") == (25.0,)

        # Revoke: the key stops working at once.
        async with page.expect_navigation():
            await page.get_by_role("button", name="Revoke library-1").click()
        assert "Kiosk revoked" in await page.inner_text("main")
        assert await token_status(stack, key) == 401
        assert await token_status(stack, KEYS["kiosk-a"]) == 200

        # A form stripped of its CSRF token is refused.
        await page.fill("#kiosk_id", "forged-1")
        await page.evaluate("document.querySelector('form[action$=\"/console/kiosks\"] input[name=csrf]').remove()")
        async with page.expect_response(lambda r: r.url.endswith("/console/kiosks")) as answer:
            await page.click("button:has-text('Add kiosk')")
        assert (await answer.value).status == 403
        await page.wait_for_load_state()
        assert "did not come from this console" in await page.inner_text("main")
        assert await stack.db.fetchone("SELECT 1 FROM kiosks WHERE kiosk_id = 'forged-1'") is None

        await page.goto(f"{base}/console/users")
        await screenshot(page, "users")
        assert not [m for m in ctx.messages if "Content Security Policy" in m], ctx.messages


async def test_a_teacher_cannot_reach_admin_pages_in_a_browser(stack: ConsoleStack) -> None:
    async with chromium() as ctx:
        page = await ctx.new_page()
        await sign_in(page, stack.base_url, TEACHER, TEACHER_PASSWORD)
        for link in ("Accounts", "Groups", "Access log"):
            assert await page.locator(f"nav >> text={link}").count() == 0
        for path in ("/console/users", "/console/groups", "/console/access-log"):
            response = await page.goto(stack.base_url + path)
            assert response.status == 403 and "for admins" in await page.inner_text("main")
        await page.goto(stack.base_url + "/console/lessons")
        async with page.expect_navigation():
            await page.click("button:has-text('Sign out')")
        assert "/console/login" in page.url
        await page.goto(stack.base_url + "/console/lessons")
        assert "/console/login" in page.url


async def test_pages_fit_a_phone(stack: ConsoleStack) -> None:
    """390 px wide: the page body never scrolls sideways (wide tables scroll inside their own box); every field
    has a label, every page one h1 and a language."""
    record = lesson_record("kiosk-a", words=("A" * 300, "https://example.com/" + "x" * 200))
    await sync_lessons(stack, record)
    await heartbeat(stack, "kiosk-a", last_error="audio_device_lost: " + "the capture device vanished " * 5)
    async with chromium(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True) as ctx:
        page = await ctx.new_page()
        await sign_in(page, stack.base_url, ADMIN, ADMIN_PASSWORD)
        for path in ("/console/lessons", f"/console/lessons/{record['session_id']}", "/console/usage?from=2026-11-01",
                     "/console/fleet", "/console/users", "/console/groups", "/console/access-log", "/console/updates",
                     f"/console/lessons/{record['session_id']}/erase", "/console/kiosks/kiosk-a/erase",
                     "/console/login"):
            await page.goto(stack.base_url + path)
            widths = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert widths[0] <= widths[1], (path, widths)
            assert await page.evaluate(UNLABELLED) == [], path
            assert await page.evaluate("document.documentElement.lang") == "en"
            assert await page.locator("h1").count() == 1, path
        await page.goto(stack.base_url + "/console/fleet")
        await screenshot(page, "phone-fleet")


#: Every element with text of its own whose contrast against the background it is drawn on is under WCAG 2's
#: minimum (4.5:1, or 3:1 for large text): computed colours, semi-transparent layers composited over the
#: white canvas, SVG text by its fill. Returns "tag.class "text": ratio" lines.
LOW_CONTRAST = """() => {
  const parse = s => { const m = /rgba?\\(([^)]+)\\)/.exec(s || ''); if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const lin = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
  const lum = c => 0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2]);
  const over = (top, under) => [0, 1, 2].map(i => top[i] * top[3] + under[i] * (1 - top[3])).concat([1]);
  const background = el => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    return layers.reverse().reduce((under, top) => over(top, under), [255, 255, 255, 1]);
  };
  const low = [];
  for (const el of document.querySelectorAll('body *')) {
    if (![...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())) continue;
    const box = el.getBoundingClientRect(), style = getComputedStyle(el);
    if (!box.width || !box.height || box.right < 0 || box.bottom < 0 || style.visibility === 'hidden') continue;
    const svg = el instanceof SVGElement;
    const bg = background(svg ? el.ownerSVGElement : el);
    const fg = over(parse(svg ? style.fill : style.color), bg);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize), large = size >= 24 || (parseInt(style.fontWeight) >= 700 && size >= 18.66);
    if (ratio < (large ? 3 : 4.5)) {
      const name = `${el.tagName.toLowerCase()}.${el.getAttribute('class') || ''}`;
      low.push(`${name} "${el.textContent.trim().slice(0, 30)}": ${ratio.toFixed(2)}`);
    }
  }
  return low;
}"""


async def test_every_text_on_every_page_has_enough_contrast(stack: ConsoleStack) -> None:
    """WCAG 2 contrast for every piece of text the console draws, measured in the browser from computed
    styles (so a colour changed in the stylesheet or a template is caught, not just one listed here): the
    pages with their tables, transcript turns, hints, warnings, chart labels, and the error and success
    messages. Seen failing with ``.hint`` set to #999 (2.85:1)."""
    record = lesson_record("kiosk-a", words=("Hello, tutor.", "Hello! What is your name?"))
    await sync_lessons(stack, record, lesson_record("kiosk-b", "2026-11-23", 2.5, 0.03))
    await heartbeat(stack, "kiosk-a", version="0.1.0", state="error", unsynced=2, last_error="audio_device_lost")
    base = stack.base_url
    async with chromium(viewport={"width": 1100, "height": 760}) as ctx:
        page = await ctx.new_page()
        await page.goto(f"{base}/console/login")
        await page.fill("#username", ADMIN)
        await page.fill("#password", "not the password")
        async with page.expect_navigation():
            await page.click("button:has-text('Sign in')")
        pages = {"login, refused": await page.evaluate(LOW_CONTRAST)}
        await sign_in(page, base, ADMIN, ADMIN_PASSWORD)
        for path in ("/console/lessons", f"/console/lessons/{record['session_id']}", "/console/usage?from=2026-11-20",
                     "/console/fleet", "/console/users", "/console/groups", "/console/access-log",
                     "/console/updates"):
            await page.goto(base + path)
            pages[path] = await page.evaluate(LOW_CONTRAST)
        await page.goto(base + "/console/fleet")
        await page.fill("#budget-kiosk-a", "25")
        async with page.expect_navigation():
            await page.click("#kiosk-kiosk-a button:has-text('Save')")
        assert "Daily budget saved." in await page.inner_text("main")
        pages["fleet, saved"] = await page.evaluate(LOW_CONTRAST)
        await page.fill("#kiosk_id", "library-1")
        async with page.expect_navigation():
            await page.click("button:has-text('Add kiosk')")
        pages["kiosk added"] = await page.evaluate(LOW_CONTRAST)
        await page.goto(f"{base}/console/kiosks/kiosk-b/erase")
        await page.fill("#confirm", "kiosk-b")
        async with page.expect_navigation():
            await page.click("button:has-text('Erase every lesson')")
        assert "Erased 1 lesson" in await page.inner_text("main")
        pages["erased"] = await page.evaluate(LOW_CONTRAST)
        await page.goto(f"{base}/console/lessons/{record['session_id']}")
        async with page.expect_navigation():
            await page.click("a:has-text('Erase this lesson')")
        pages["erase a lesson"] = await page.evaluate(LOW_CONTRAST)
    assert {name: low for name, low in pages.items() if low} == {}


def test_chart_colours_stand_out_from_the_page() -> None:
    """WCAG 1.4.11: the chart's bars are graphics a reader must tell from the white page, so each colour of
    the palette needs at least 3:1 against it (Okabe-Ito's yellow, sky blue and orange have 1.3-2.3:1)."""
    from appliance.companion.console.chart import PALETTE

    def luminance(colour: str) -> float:
        channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    ratios = {colour: 1.05 / (luminance(colour) + 0.05) for colour in PALETTE}
    assert len(set(PALETTE)) == len(PALETTE) >= 6
    assert {c: round(r, 2) for c, r in ratios.items() if r < 3} == {}


async def test_a_group_a_teacher_sees_only_group_a_in_a_browser(stack: ConsoleStack) -> None:
    """What a teacher of one class sees in Chromium: their kiosk's lessons, totals, chart, fleet row and CSV,
    nothing of another group's (its marker string appears nowhere); the admin then finds every transcript
    view and export in the access log, and moves a kiosk between groups on the Groups page."""
    setup = await two_groups(stack)
    a_ids = {r["session_id"] for r in setup.a_lessons}
    base = stack.base_url
    async with chromium(viewport={"width": 1100, "height": 760}) as ctx:
        page = await ctx.new_page()
        await sign_in(page, base, ALICE, ALICE_PASSWORD)
        for path in ("/console/lessons", "/console/usage?from=2026-11-01", "/console/fleet",
                     f"/console/lessons?kiosk={SECRET_KIOSK}"):
            await page.goto(base + path)
            # The filter she typed is echoed in the page's links; nothing else may name the other kiosk.
            assert not leaks((await page.content()).replace(f"kiosk={SECRET_KIOSK}", "kiosk=K")), path
        await page.goto(base + "/console/lessons")
        assert "2 lessons" in await page.inner_text("p.summary")
        assert await page.locator("#f-kiosk option").all_inner_texts() == ["All kiosks", "kiosk-a"]
        for session_id in a_ids:
            async with page.expect_navigation():
                await page.click(f"a[href$='{session_id}']")
            assert "Cats are lovely" in await page.inner_text("ol.transcript")
            await page.go_back()
        response = await page.goto(f"{base}/console/lessons/{setup.b_lessons[0]['session_id']}")
        assert response.status == 404 and "No lesson with this id" in await page.inner_text("main")
        assert not leaks(await page.content())
        await page.goto(f"{base}/console/lessons")
        async with page.expect_download() as info:
            await page.click("text=Export these lessons as CSV")
        text = Path(await (await info.value).path()).read_text(encoding="utf-8-sig")
        assert not leaks(text) and {row.split(",")[0] for row in text.splitlines()[1:]} == a_ids
        await page.goto(f"{base}/console/usage?from=2026-11-01&to=2026-11-30")
        assert [k.strip() for k in await page.locator("figcaption .key").all_inner_texts()] == ["kiosk-a", "kiosk-a"]
        assert not leaks(await page.content())
        await screenshot(page, "teacher-usage")

    async with chromium(viewport={"width": 1100, "height": 760}) as ctx:
        page = await ctx.new_page()
        await sign_in(page, base, ADMIN, ADMIN_PASSWORD)
        await page.click("nav >> text=Access log")
        await page.select_option("#l-user", ALICE)
        async with page.expect_navigation():
            await page.click("form.filters button:has-text('Show')")
        table = await page.inner_text("table")
        assert all(f"lesson {i} on kiosk-a" in table for i in a_ids) and "lessons.csv: all lessons" in table
        assert table.count("view-lesson") == 2 and table.count("export-lessons") == 1
        await screenshot(page, "access-log")
        # Move kiosk-a out of the teacher's group with the Groups page's form: she no longer sees its lessons.
        await page.click("nav >> text=Groups")
        await page.select_option("#assign-kiosk", "kiosk-a")
        await page.select_option("#assign-group", "")
        async with page.expect_navigation():
            await page.click("button:has-text('Move kiosk')")
        assert "Kiosk moved." in await page.inner_text("main")
        await screenshot(page, "groups")
        assert not [m for m in ctx.messages if "Content Security Policy" in m], ctx.messages
    async with chromium() as ctx:
        page = await ctx.new_page()
        await sign_in(page, base, ALICE, ALICE_PASSWORD)
        assert "0 lessons" in await page.inner_text("p.summary")


@pytest.fixture
async def update_stack(tmp_path: Path) -> AsyncIterator[ConsoleStack]:
    """A companion that serves a signed repository holding releases 1.3.0, 1.4.0 and 1.5.0."""
    async with console_stack(tmp_path / "u.db",
                             updates_dir=signed_repository(tmp_path / "repo", ["1.3.0", "1.4.0", "1.5.0"])) as s:
        yield s


async def told(stack: ConsoleStack) -> dict[str, str | None]:
    """The release each kiosk is told to run (``GET /api/updates/assignment`` with its device key)."""
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        return {kiosk: (await http.get("/api/updates/assignment",
                                       headers={"Authorization": f"Bearer {key}"})).json()["version"]
                for kiosk, key in KEYS.items()}


async def test_an_admin_stages_a_release_in_a_browser(update_stack: ConsoleStack) -> None:
    """The Updates page in Chromium: publish to a share, let a group go first, pause, resume, roll back; the
    kiosks' assignments follow each step, the fleet shows their update state, and the page keeps the
    console's rules (labels, contrast, no sideways scrolling on a phone, no CSP violation)."""
    stack, base = update_stack, update_stack.base_url
    await heartbeat(stack, "kiosk-a", version="1.3.0")
    async with httpx.AsyncClient(base_url=base) as http:
        beat = {"version": "1.3.0", "state": "idle", "update_state": "rolled-back",
                "update_error": "1.5.0 did not reach READY within 120 s; back on 1.3.0"}
        assert (await http.post("/api/heartbeat", json=beat,
                                headers={"Authorization": f"Bearer {KEYS['kiosk-b']}"})).status_code == 200
    async with chromium(viewport={"width": 1100, "height": 900}) as ctx:
        page = await ctx.new_page()
        await sign_in(page, base, ADMIN, ADMIN_PASSWORD)
        await page.click("nav >> text=Updates")
        assert page.url.endswith("/console/updates")
        stable = page.locator("#c-stable")
        assert await stable.locator("dd.published").inner_text() == "nothing yet"

        await page.select_option("#publish-stable", "1.4.0")
        await page.fill("#publish-share-stable", "0")
        async with page.expect_navigation():
            await page.get_by_role("button", name="Publish to stable").click()
        assert "Release published" in await page.inner_text("[role=status]")
        assert await stable.locator("dd.published").inner_text() == "1.4.0"
        assert await told(stack) == {"kiosk-a": None, "kiosk-b": None}  # a share of 0 %: nobody yet

        await page.check(f"#c-stable input[name=group][value='{await school_id(stack)}']")
        async with page.expect_navigation():
            await page.get_by_role("button", name="Save rollout of stable").click()
        assert "Elm School" in await stable.locator("dd.first").inner_text()
        assert await told(stack) == {"kiosk-a": "1.4.0", "kiosk-b": "1.4.0"}
        await stable.scroll_into_view_if_needed()
        await screenshot(page, "updates")

        async with page.expect_navigation():
            await page.get_by_role("button", name="Pause rollout of stable").click()
        assert await stable.locator("dd.state").inner_text() == "paused"
        assert await told(stack) == {"kiosk-a": None, "kiosk-b": None}
        async with page.expect_navigation():
            await page.get_by_role("button", name="Resume rollout of stable").click()
        assert await stable.locator("dd.state").inner_text() == "rolling out"

        await page.select_option("#rollback-stable", "1.3.0")
        async with page.expect_navigation():
            await page.get_by_role("button", name="Roll back stable").click()
        assert "rolled back" in await page.inner_text("[role=status]")
        assert await told(stack) == {"kiosk-a": "1.3.0", "kiosk-b": "1.3.0"}
        assert await page.evaluate(UNLABELLED) == []
        assert await page.evaluate(LOW_CONTRAST) == []

        await page.click("nav >> text=Fleet")
        row = await page.locator("#kiosk-kiosk-b").inner_text()
        assert "rolled-back" in row and "did not reach READY" in row and "stable" in row
        await page.click("nav >> text=Access log")
        log_text = await page.inner_text("main")
        for action in ("publish-release", "set-rollout", "pause-rollout", "resume-rollout", "rollback-channel"):
            assert action in log_text
        assert not [m for m in ctx.messages if "Content Security Policy" in m], ctx.messages
    async with chromium(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True) as ctx:
        page = await ctx.new_page()
        await sign_in(page, base, ADMIN, ADMIN_PASSWORD)
        await page.goto(base + "/console/updates")
        widths = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], widths
        assert await page.locator("h1").count() == 1


async def school_id(stack: ConsoleStack) -> int:
    row = await stack.db.fetchone("SELECT group_id FROM kiosk_groups")
    assert row is not None
    return int(row[0])
