"""The web views in a real browser: Debian's chromium driven by Playwright, over real HTTP.

A homeowner signs in and sees charts drawn from an emulated home's readings (``devices.physics``
stepped over the last two days, written to a real SQLite store); the installer sees the home in the
maintenance view; the homeowner suspends provision and the installer then sees the refusal.
Screenshots go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from access.app import make_app
from access.compiler import Policy
from access.relationships import RelationshipStore
from devices.clock import SimClock
from devices.physics import Household
from pipeline.points import Point
from pipeline.sqlite_store import SQLiteStore
from tests.access.api_world import api_policy, populate

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

try:
    from playwright.async_api import async_playwright
except ImportError:  # pragma: no cover - depends on the machine
    async_playwright = None  # type: ignore[assignment]


def _skip_reason() -> str | None:
    if async_playwright is None:
        return "Python Playwright is not installed (pip install playwright; see scripts/ci_browser.sh)"
    if shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} is missing (apt-get install chromium; see scripts/ci_browser.sh)"
    return None


def emulated_points(household: str, start: datetime, stop: datetime, step: timedelta) -> list[Point]:
    """Readings of an emulated home as a collector would deliver them, one point per device per step."""
    home = Household(household, seed=7, clock=SimClock(start), step_s=60.0)
    out: list[Point] = []
    t = start
    while t < stop:
        s = home.state(t)
        ns = int(t.timestamp()) * 1_000_000_000
        out += [
            Point(
                "pv",
                household,
                "pv1",
                "modbus",
                ns,
                {"power_w": s.pv_w, "energy_wh_total": s.pv_wh_total, "fault": s.inverter_fault},
            ),
            Point(
                "electricity",
                household,
                "meter1",
                "echonet",
                ns,
                {
                    "power_w": s.grid_w,
                    "import_wh_total": s.grid_import_wh_total,
                    "export_wh_total": s.grid_export_wh_total,
                },
            ),
            Point(
                "battery",
                household,
                "bat1",
                "echonet",
                ns,
                {
                    "power_w": s.battery_w,
                    "soc_pct": s.battery_soc_pct,
                    "fault": s.battery_fault,
                    "charge_wh_total": s.battery_charge_wh_total,
                    "discharge_wh_total": s.battery_discharge_wh_total,
                },
            ),
            Point("water", household, "water1", "echonet", ns, {"volume_l_total": s.water_l_total}),
            Point("gas", household, "gas1", "echonet", ns, {"volume_l_total": s.gas_l_total}),
        ]
        t += step
    return out


async def test_homeowner_suspends_and_installer_sees_refusal(tmp_path: Path, api_policy: Policy) -> None:
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    assert async_playwright is not None
    SHOTS.mkdir(parents=True, exist_ok=True)
    db = tmp_path / "access.sqlite"
    rel = RelationshipStore(db)
    populate(rel)
    rel.close()
    store = SQLiteStore(tmp_path / "series.sqlite")
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    await store.write(emulated_points("h1", now - timedelta(days=2), now, timedelta(minutes=5)))
    app = make_app(store, db, policy=api_policy, secure_cookies=False)
    from access.api.state import STATE

    app[STATE].web.set_password("alice", PASSWORD)
    app[STATE].web.set_password("inst1", PASSWORD)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                installer = await (
                    await browser.new_context(viewport={"width": 1280, "height": 900})
                ).new_page()
                await _sign_in(installer, base, "inst1")
                await installer.wait_for_url(f"{base}/installer")
                row = installer.locator("table.maintenance tbody tr").first
                assert "h1" in await row.inner_text()
                assert "Refused" not in await row.inner_text()
                await installer.screenshot(path=str(SHOTS / "installer_before.png"), full_page=True)

                owner = await (await browser.new_context(viewport={"width": 390, "height": 844})).new_page()
                await _sign_in(owner, base, "alice")
                await owner.wait_for_selector('#dashboard[data-loaded="true"]', timeout=20_000)
                points = await owner.evaluate(
                    "() => Chart.getChart('power-chart').data.datasets[0].data.filter(v => v !== null).length"
                )
                assert points > 100  # 5-minute PV power for the last day
                days = await owner.evaluate("() => Chart.getChart('energy-chart').data.labels.length")
                assert days >= 1
                assert "inst1" in await owner.locator("table.ledger").inner_text()
                await owner.screenshot(path=str(SHOTS / "homeowner_dashboard.png"), full_page=True)
                assert await owner.locator("#provision-state").inner_text() == "allowed"
                await owner.click("#provision-toggle")
                await owner.wait_for_selector("#provision-state:text('suspended')")
                await owner.screenshot(path=str(SHOTS / "homeowner_suspended.png"), full_page=True)

                await installer.reload()
                text = await installer.locator("table.maintenance tbody tr").first.inner_text()
                assert "Refused (suspended)" in text
                await installer.screenshot(path=str(SHOTS / "installer_refused.png"), full_page=True)
                # The drill-down's charts are refused too, and say why.
                await installer.goto(f"{base}/installer/h1")
                await installer.wait_for_selector('#dashboard[data-loaded="true"]', timeout=20_000)
                status = await installer.locator("#chart-status").inner_text()
                assert "suspended" in status
            finally:
                await browser.close()
    finally:
        await server.close()
        await store.close()


async def _sign_in(page: object, base: str, who: str) -> None:
    await page.goto(f"{base}/login")  # type: ignore[attr-defined]
    await page.fill("input[name=principal]", who)  # type: ignore[attr-defined]
    await page.fill("input[name=password]", PASSWORD)  # type: ignore[attr-defined]
    await asyncio.gather(
        page.wait_for_load_state(),  # type: ignore[attr-defined]
        page.click("button[type=submit]"),  # type: ignore[attr-defined]
    )
