"""The web views in a real browser: Debian's chromium driven by Playwright, over real HTTP.

A homeowner signs in and sees charts drawn from an emulated home's readings (``devices.physics``
stepped over the last two days, written to a real SQLite store); the installer sees the home in the
maintenance view; the homeowner suspends provision and the installer then sees the refusal.  A homeowner
who moved in today sees nothing from before, and the ledger shows the period served.
Screenshots go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from aiohttp.test_utils import TestServer

from access.api.state import STATE, AppState
from access.app import make_app
from access.clock import TOKYO
from access.compiler import Policy
from access.relationships import RelationshipStore
from access.web.i18n import when
from pipeline.derived import one_source
from pipeline.points import Point
from pipeline.query import SeriesQuery
from pipeline.sqlite_store import SQLiteStore
from tests.access.api_world import api_policy, populate
from tests.access.home_world import emulated_home
from tests.access.live_world import PASSWORD as LIVE_PASSWORD
from tests.access.live_world import POLL_S, start_live

__all__ = ["api_policy"]
pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PASSWORD = "correct horse battery"
# The app's clock in the tests that pick days: noon in Tokyo, so "today" and "yesterday" are fixed.
NOW = datetime(2026, 6, 2, 3, 0, tzinfo=UTC)  # 2026-06-02 12:00 JST (a Tuesday)
YESTERDAY = "2026-06-01"
YESTERDAY_START = datetime(2026, 5, 31, 15, 0, tzinfo=UTC)

try:
    from playwright.async_api import async_playwright
except ImportError:  # pragma: no cover - depends on the machine
    async_playwright = None  # type: ignore[assignment]


def skip_reason() -> str | None:
    if async_playwright is None:
        return "Python Playwright is not installed (pip install playwright; see scripts/ci_browser.sh)"
    if shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} is missing (apt-get install chromium; see scripts/ci_browser.sh)"
    return None


def emulated_points(household: str, start: datetime, stop: datetime, step: timedelta) -> list[Point]:
    """Readings of an emulated home as a collector would deliver them, one point per device per step."""
    return emulated_home(household, start, stop, step).points


@contextlib.asynccontextmanager
async def served(
    tmp_path: Path,
    api_policy: Policy,
    points: list[Point],
    who: tuple[str, ...],
    now: Callable[[], float] | None = None,
    setup: Callable[[RelationshipStore], None] | None = None,
) -> AsyncIterator[tuple[str, SQLiteStore, AppState]]:
    """The API world's principals (and whatever ``setup`` adds) over a real SQLite store holding
    ``points``, on a real HTTP port; ``now``: the app's clock (default: the wall clock)."""
    db = tmp_path / "access.sqlite"
    rel = RelationshipStore(db)
    populate(rel)
    if setup is not None:
        setup(rel)
    rel.close()
    store = SQLiteStore(tmp_path / "series.sqlite")
    await store.write(points)
    extra: dict[str, Any] = {} if now is None else {"now": now}
    app = make_app(store, db, policy=api_policy, secure_cookies=False, rate_per_s=None, **extra)

    for principal in who:
        app[STATE].web.set_password(principal, PASSWORD)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), store, app[STATE]
    finally:
        await server.close()
        await store.close()


async def test_homeowner_suspends_and_installer_sees_refusal(tmp_path: Path, api_policy: Policy) -> None:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    assert async_playwright is not None
    SHOTS.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    points = emulated_points("h1", now - timedelta(days=2), now, timedelta(minutes=5))
    async with (
        served(tmp_path, api_policy, points, ("alice", "inst1")) as (base, _store, _state),
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            installer = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
            await sign_in(installer, base, "inst1")
            await installer.wait_for_url(f"{base}/installer")
            row = installer.locator("article.home").first
            assert "h1" in await row.inner_text()
            assert "Not visible now" not in await row.inner_text()
            await installer.screenshot(path=str(SHOTS / "installer_before.png"), full_page=True)
            # The drill-down draws the home's power and daily energy under the maintenance purpose.
            await installer.goto(f"{base}/installer/h1")
            await installer.wait_for_selector('#dashboard[data-loaded="true"]', timeout=20_000)
            drawn = await installer.evaluate(
                "() => Chart.getChart('power-chart').data.datasets[0].data.filter(v => v !== null).length"
            )
            assert drawn > 100
            assert "Some series" not in await installer.locator("#chart-status").inner_text()
            await installer.screenshot(path=str(SHOTS / "installer_drilldown_charts.png"), full_page=True)
            await installer.goto(f"{base}/installer")

            owner = await (await browser.new_context(viewport={"width": 390, "height": 844})).new_page()
            await sign_in(owner, base, "alice")
            await owner.wait_for_selector('#dashboard[data-loaded="true"]', timeout=20_000)
            # The page opens on today in Tokyo, which has few 5-minute windows yet just after midnight
            # there (15:00 UTC): yesterday, wholly in the store's two days, is a full day at any hour.
            await show_day(owner, (datetime.now(TOKYO) - timedelta(days=1)).date().isoformat())
            points = await owner.evaluate(
                "() => Chart.getChart('power-chart').data.datasets[0].data.filter(v => v !== null).length"
            )
            assert points > 100  # 5-minute PV power of a whole day (288 windows)
            days = await owner.evaluate("() => Chart.getChart('energy-chart').data.labels.length")
            assert days >= 1
            await owner.screenshot(path=str(SHOTS / "homeowner_dashboard.png"), full_page=True)
            await owner.goto(f"{base}/ledger")
            assert "Roof Installers" in await owner.locator("#provision").inner_text()
            assert await owner.locator("#provision-state").inner_text() == "allowed"
            await owner.click("#provision-toggle")
            await owner.wait_for_selector("#provision-state:text('suspended')")
            await owner.screenshot(path=str(SHOTS / "homeowner_suspended.png"), full_page=True)

            await installer.reload()
            text = await installer.locator("article.home").first.inner_text()
            assert "Not visible now (suspended)" in text
            await installer.screenshot(path=str(SHOTS / "installer_refused.png"), full_page=True)
            # The drill-down is refused too, and says why (no charts are offered).
            await installer.goto(f"{base}/installer/h1")
            assert "Not visible now (suspended)" in await installer.locator("main").inner_text()
            assert await installer.locator("#dashboard").count() == 0
        finally:
            await browser.close()


async def sign_in(page: object, base: str, who: str, password: str = PASSWORD) -> None:
    await page.goto(f"{base}/login")  # type: ignore[attr-defined]
    await page.fill("input[name=principal]", who)  # type: ignore[attr-defined]
    await page.fill("input[name=password]", password)  # type: ignore[attr-defined]
    await asyncio.gather(
        page.wait_for_load_state(),  # type: ignore[attr-defined]
        page.click("button[type=submit]"),  # type: ignore[attr-defined]
    )


async def test_installer_sees_injected_faults_appear_and_clear(tmp_path: Path, api_policy: Policy) -> None:
    """Real emulated homes, collector, pipeline and store: a silent inverter and a Modbus exception
    appear on the installer's page within two poll intervals and go once the devices recover; at
    desktop and phone sizes, in English and (for a Japanese browser) in Japanese."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    assert async_playwright is not None
    SHOTS.mkdir(parents=True, exist_ok=True)
    async for live in start_live(tmp_path, api_policy):
        silent_home, exception_home, clean_home = live.households
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                desktop = await (
                    await browser.new_context(viewport={"width": 1280, "height": 900})
                ).new_page()
                phone = await (
                    await browser.new_context(viewport={"width": 390, "height": 844}, locale="ja-JP")
                ).new_page()
                for page in (desktop, phone):
                    await sign_in(page, live.base, "inst", LIVE_PASSWORD)
                    await page.wait_for_url(f"{live.base}/installer")
                assert await phone.locator("html").get_attribute("lang") == "ja"
                assert "担当の住宅" in await phone.locator("h2").first.inner_text()
                await _reload_until(desktop, lambda text: text.count("No problem found") == 3, 15)
                live.fleet.faults(silent_home, "inverter").no_reply = True
                live.fleet.faults(exception_home, "inverter").modbus_exception = 4
                t0 = time.monotonic()
                await _reload_until(
                    desktop,
                    lambda text: "no answer (time-out)" in text and "Modbus exception 4" in text,
                    2 * POLL_S,
                )
                took = time.monotonic() - t0
                cards = desktop.locator("article.home")
                first_two = {await cards.nth(i).get_attribute("data-household") for i in range(2)}
                assert first_two == {silent_home, exception_home}
                assert await cards.nth(2).get_attribute("data-household") == clean_home
                await desktop.screenshot(path=str(SHOTS / "installer_faults_desktop.png"), full_page=True)
                await _reload_until(phone, lambda text: "応答なし" in text and "Modbus 例外 4" in text, 5)
                # Nothing is cut off on a phone: the page is no wider than the screen.
                assert await phone.evaluate("document.documentElement.scrollWidth") <= 390
                await phone.screenshot(path=str(SHOTS / "installer_faults_phone_ja.png"), full_page=True)
                await desktop.goto(f"{live.base}/installer/{silent_home}")
                assert "no answer (time-out)" in await desktop.locator("article.home").inner_text()
                await desktop.screenshot(path=str(SHOTS / "installer_drilldown_desktop.png"), full_page=True)

                live.fleet.faults(silent_home, "inverter").clear()
                live.fleet.faults(exception_home, "inverter").clear()
                await desktop.goto(f"{live.base}/installer")
                await _reload_until(
                    desktop,
                    lambda text: "no answer" not in text and "Modbus exception" not in text,
                    2 * POLL_S + 1.0,
                )
                await desktop.screenshot(path=str(SHOTS / "installer_cleared_desktop.png"), full_page=True)
                print(f"installer page: faults shown {took:.2f} s after injection (poll {POLL_S} s)")
            finally:
                await browser.close()


async def _reload_until(page: Any, ok: Callable[[str], bool], within_s: float) -> None:
    t0 = time.monotonic()
    text = ""
    while time.monotonic() - t0 <= within_s:
        await page.reload()
        text = await page.locator("main").inner_text()
        if ok(text):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {within_s} s: {text[:1500]}")


async def test_homeowner_chart_equals_the_store_with_two_devices_per_quantity(
    tmp_path: Path, api_policy: Policy
) -> None:
    """A home whose PV and grid are each read by two devices (SunSpec and ECHONET): every value the
    power chart draws equals the store's, one device per quantity, never their sum (the old chart drew
    grid import at twice its value)."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    assert async_playwright is not None
    SHOTS.mkdir(parents=True, exist_ok=True)
    points = emulated_points("h1", NOW - timedelta(days=2), NOW, timedelta(minutes=5))
    twins = {"pv1": "solar", "meter1": "smart_meter"}
    # The ECHONET twin reads a few watts apart and misses every fifth step: the rule must pick pv1/meter1.
    points += [
        Point(
            p.measurement,
            p.household,
            twins[p.device],
            "echonet",
            p.ts_ns,
            {"power_w": float(p.fields["power_w"]) + 3.0},
        )
        for p in points
        if p.device in twins and (p.ts_ns // 300_000_000_000) % 5
    ]
    async with (
        served(tmp_path, api_policy, points, ("alice",), now=NOW.timestamp) as (base, store, _state),
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            for size, name in (
                ({"width": 1280, "height": 900}, "desktop"),
                ({"width": 390, "height": 844}, "phone"),
            ):
                page = await (await browser.new_context(viewport=size)).new_page()
                await sign_in(page, base, "alice")
                await page.wait_for_selector('#dashboard[data-loaded="true"]', timeout=20_000)
                await show_day(page, YESTERDAY)  # a whole Tokyo day, by the date picker
                drawn = await page.evaluate(
                    "() => { const c = Chart.getChart('power-chart'); return {times: c.$times,"
                    " pv: c.data.datasets[0].data, grid: c.data.datasets[1].data}; }"
                )
                await page.screenshot(path=str(SHOTS / f"homeowner_chart_{name}.png"), full_page=True)
                times = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in drawn["times"]]
                start, stop = min(times), max(times) + timedelta(minutes=5)
                assert (start, stop) == (YESTERDAY_START, YESTERDAY_START + timedelta(days=1))
                for category, values in (("pv", drawn["pv"]), ("electricity", drawn["grid"])):
                    df = await store.query(
                        SeriesQuery(
                            ("h1",), category, ("power_w",), start, stop, timedelta(minutes=5), "mean"
                        )
                    )
                    want = {
                        t: v
                        for t, v in zip(*one_source(df, "power_w").select("time", "power_w"), strict=True)
                    }
                    summed = df.group_by("time").agg(pl.col("power_w").sum())
                    got = dict(zip(times, values, strict=True))
                    assert len(want) == 288
                    assert {t: got[t] for t in want} == pytest.approx(want), category
                    # ...and that is not what adding the two devices gives.
                    doubled = {t: v for t, v in zip(*summed.select("time", "power_w"), strict=True)}
                    assert sum(1 for t in want if abs(doubled[t] - want[t]) > 1) > 100
        finally:
            await browser.close()


async def show_day(page: Any, day: str) -> None:
    """Pick ``day`` in the date picker and wait until the page has drawn it (no reload)."""
    before = int(await page.locator("#dashboard").get_attribute("data-generation") or "0")
    await page.fill("#date", day)
    await page.wait_for_function(
        f"() => Number(document.getElementById('dashboard').dataset.generation || 0) > {before}",
        timeout=20_000,
    )


async def test_homeowner_who_moved_in_today_sees_nothing_from_before(
    tmp_path: Path, api_policy: Policy
) -> None:
    """Carol moved into h1 two hours ago, when a new installer also took over.  Her charts hold nothing
    older than her move, although the store has two days of h1; the installer's maintenance view reads
    from its own link on, and Carol's ledger shows that period, in Tokyo time."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    assert async_playwright is not None
    SHOTS.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    moved = now - timedelta(hours=2)

    def moved_in(rel: RelationshipStore) -> None:
        rel.unlink("alice", "h1", "homeowner", at=moved)
        rel.add_principal("carol", "homeowner", "Carol", ["sps.disclosure_to_person"])
        rel.link("carol", "h1", "homeowner", since=moved)
        rel.unlink("inst1", "h1", "installer", at=moved)
        rel.add_principal("inst2", "installer", "New Installer", ["sps.pv_after_maintenance"])
        rel.link("inst2", "h1", "installer", since=moved)

    points = emulated_points("h1", now - timedelta(days=2), now, timedelta(minutes=5))
    async with (
        served(tmp_path, api_policy, points, ("carol", "inst2"), setup=moved_in) as (base, _store, _state),
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            installer = await (await browser.new_context()).new_page()
            await sign_in(installer, base, "inst2")
            await installer.wait_for_url(f"{base}/installer")
            assert "Not visible now" not in await installer.locator("article.home").first.inner_text()

            owner = await (await browser.new_context(viewport={"width": 390, "height": 844})).new_page()
            await sign_in(owner, base, "carol")
            await owner.wait_for_selector('#dashboard[data-loaded="true"]', timeout=20_000)
            labels = await owner.evaluate("() => Chart.getChart('power-chart').data.labels.length")
            steps = int((now - moved) / timedelta(minutes=5)) + 1
            # The page opens on today in Tokyo: just after midnight there, today may hold no 5-minute
            # point yet (the move was earlier), so "something is drawn" is asked only after 10 minutes.
            today = now.astimezone(TOKYO).replace(hour=0, minute=0)
            drawn = 1 if now - max(moved, today) >= timedelta(minutes=10) else 0
            assert drawn <= labels <= steps, (labels, steps)  # today's chart, but only since the move
            earliest = await owner.evaluate(
                """async () => {
                    const q = new URLSearchParams({purpose: 'sps.disclosure_to_person', every: 'raw',
                        start: new Date(Date.now() - 86400e3).toISOString(),
                        stop: new Date().toISOString()});
                    const r = await fetch('/api/v1/households/h1/series/pv?' + q);
                    const body = await r.json();
                    return [body.columns.time[0], body.served[0][0], body.refused.length];
                }"""
            )
            assert earliest[0] >= moved.strftime("%Y-%m-%dT%H:%M") and earliest[2] == 1, earliest
            await owner.goto(f"{base}/ledger")
            ledger = await owner.locator("#provision").inner_text()
            assert "New Installer (installer)" in ledger and when("en", moved) in ledger, ledger
            assert "Roof Installers" not in ledger  # nobody read anything of her period before she moved in
            await owner.screenshot(path=str(SHOTS / "homeowner_moved_in_today.png"), full_page=True)
        finally:
            await browser.close()
