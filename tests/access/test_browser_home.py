"""The homeowner's pages in a real browser (Debian's chromium, Playwright), at desktop and phone sizes,
in Japanese and in English, over an emulated home's readings in a real SQLite store.

What the page draws is held to the store and to the emulated home's truth: the flow diagram's flows
to the meters' totals, its balance to 1 %, the home's use to what the home really used.  Screenshots
of every view go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from access.api.state import AppState
from access.compiler import Policy
from access.relationships import RelationshipStore
from access.request import AccessRequest
from hems.erasure import complete
from pipeline.points import Point
from pipeline.query import SeriesQuery
from pipeline.sqlite_store import SQLiteStore
from tests.access.api_world import OWN, PV, SINCE, api_policy
from tests.access.home_world import emulated_home
from tests.access.test_browser import (
    ARGS,
    CHROMIUM,
    NOW,
    SHOTS,
    YESTERDAY,
    YESTERDAY_START,
    async_playwright,
    served,
    show_day,
    sign_in,
    skip_reason,
)

__all__ = ["api_policy"]
pytestmark = pytest.mark.browser
EV_OWN = "kaluza.disclosure_to_person"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
SOURCES = {
    "pv": ("pv", "energy_wh_total"),
    "fuel_cell": ("external_generation", "energy_wh_total"),
    "grid_import": ("electricity", "import_wh_total"),
    "battery_discharge": ("battery", "discharge_wh_total"),
    "ev_discharge": ("ev", "discharge_wh_total"),
}
SINKS = {
    "grid_export": ("electricity", "export_wh_total"),
    "battery_charge": ("battery", "charge_wh_total"),
    "ev_charge": ("ev", "charge_wh_total"),
}


@contextlib.asynccontextmanager
async def browsing(
    tmp_path: Path, api_policy: Policy, points: list[Point], who: tuple[str, ...], **kw: Any
) -> AsyncIterator[tuple[str, SQLiteStore, AppState, Any]]:
    """``served`` (same arguments) and Debian's chromium, closed afterwards."""
    async with (
        served(tmp_path, api_policy, points, who, **kw) as (base, store, state),
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield base, store, state, browser
        finally:
            await browser.close()


def _hana(rel: RelationshipStore) -> None:
    """A homeowner of h1 who reads her car under the EV terms as well."""
    rel.add_principal("hana", "homeowner", "Hana", [OWN, EV_OWN])
    rel.link("hana", "h1", "homeowner", since=SINCE)
    rel.add_contract("h1", "kaluza", "app", since=SINCE)  # the car's app, under the EV terms


@pytest.fixture
def need_browser() -> None:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    SHOTS.mkdir(parents=True, exist_ok=True)


async def _rise(store: SQLiteStore, category: str, field: str, start: datetime, stop: datetime) -> float:
    """The store's counter rise between its last sample before ``start`` and its last before ``stop``."""
    df = await store.query(SeriesQuery(("h1",), category, (field,), start - timedelta(hours=2), stop))
    before = df.filter(df["time"] < start)[field].to_list()
    until = df.filter(df["time"] < stop)[field].to_list()
    return float(until[-1] - before[-1])


async def _no_wider_than_the_phone(page: Any) -> None:
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


async def _every_control_is_named(page: Any) -> None:
    """Labels: every visible control has an accessible name (a label, its text, or aria-label)."""
    unnamed = await page.evaluate(
        """() => Array.from(document.querySelectorAll('input:not([type=hidden]), select, button, a'))
        .filter(el => el.offsetParent !== null)
        .filter(el => !((el.labels && el.labels.length) || el.textContent.trim()
                        || el.getAttribute('aria-label')))
        .map(el => el.outerHTML)"""
    )
    assert unnamed == []


async def _readable(page: Any) -> None:
    """Contrast: text of every kind on the page against what it is drawn on, at least 4.5:1 (WCAG AA)."""
    poor = await page.evaluate(
        """() => {
        const rgb = s => s.match(/[0-9.]+/g).map(Number);
        const lum = c => { const [r, g, b] = c.slice(0, 3).map(v => { v /= 255;
            return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
            return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
        const back = el => {
            for (; el; el = el.parentElement) {
                const c = rgb(getComputedStyle(el).backgroundColor);
                if (c.length < 4 || c[3] > 0) return c;
            }
            return [255, 255, 255]; };
        const out = [];
        const kinds = 'main p, main span, main a, main button, main label, main td, main th, main dt, '
            + 'main h2, nav a, nav button';
        document.querySelectorAll(kinds).forEach(el => {
            if (!el.offsetParent || !el.textContent.trim()) return;
            const a = lum(rgb(getComputedStyle(el).color)), b = lum(back(el));
            const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
            if (ratio < 4.5) out.push(el.tagName + '.' + el.className + ': ' + ratio.toFixed(2));
        });
        return Array.from(new Set(out)); }"""
    )
    assert poor == []


async def test_energy_page_balances_and_equals_the_store(
    tmp_path: Path, api_policy: Policy, need_browser: None
) -> None:
    home = emulated_home("h1", NOW - timedelta(days=2, hours=12), NOW, timedelta(minutes=5))
    day_stop = YESTERDAY_START + timedelta(days=1)
    async with browsing(tmp_path, api_policy, home.points, ("hana",), now=NOW.timestamp, setup=_hana) as (
        base,
        store,
        _state,
        browser,
    ):
        for size, locale, name in ((DESKTOP, "ja-JP", "desktop_ja"), (PHONE, "en-GB", "phone_en")):
            context = await browser.new_context(viewport=size, locale=locale, accept_downloads=True)
            page = await context.new_page()
            await sign_in(page, base, "hana")
            await page.wait_for_selector('#dashboard[data-loaded="true"]', timeout=20_000)
            await show_day(page, YESTERDAY)
            ja = locale == "ja-JP"
            assert await page.locator("html").get_attribute("lang") == ("ja" if ja else "en")
            title = await page.locator("#flow-chart-caption").inner_text()
            assert title == (
                "電気の出どころと行き先" if ja else "Where the electricity came from and where it went"
            )
            label = await page.locator("#period-label").inner_text()
            assert label == ("2026-06-01 (月)" if ja else "2026-06-01 (Mon)")

            # The flow diagram: every source's flows add up to its meter's rise over the Tokyo day,
            # every sink's likewise, and the whole balances within 1 %.
            flows = await page.evaluate("() => Chart.getChart('flow-chart').data.datasets[0].data")
            out: dict[str, float] = {}
            into: dict[str, float] = {}
            for f in flows:
                out[f["from"]] = out.get(f["from"], 0.0) + f["flow"]
                into[f["to"]] = into.get(f["to"], 0.0) + f["flow"]
            for node, (category, field) in SOURCES.items():
                want = await _rise(store, category, field, YESTERDAY_START, day_stop) / 1000
                assert out.get(node, 0.0) == pytest.approx(want, abs=0.005), node
            for node, (category, field) in SINKS.items():
                want = await _rise(store, category, field, YESTERDAY_START, day_stop) / 1000
                assert into.get(node, 0.0) == pytest.approx(want, abs=0.005), node
            sources, sinks = sum(out.values()), sum(into.values())
            assert sources > 5 and abs(sources - sinks) <= 0.01 * sources
            # The home's use, which no meter reads, is what the emulated home really used.
            assert into["home"] == pytest.approx(
                home.true_load_wh(YESTERDAY_START, day_stop) / 1000, rel=0.01
            )
            assert out["pv"] > 1 and out["fuel_cell"] > 0.1  # PV and fuel cell both drawn
            balance = page.locator("#balance")
            assert float(await balance.get_attribute("data-sources-wh")) == pytest.approx(
                sources * 1000, abs=5
            )
            assert ("差 0.0 %" if ja else "difference 0.0 %") in await balance.inner_text()
            # The same flows as a table.
            await page.click(".flows-table summary")
            rows = await page.locator("#flow-table tbody tr").all_inner_texts()
            assert len(rows) == len(flows)
            # Key figures with the day before.
            pv_text = await page.locator("#kpi-kpi_pv .value").inner_text()
            assert pv_text == f"{out['pv']:.1f} kWh"
            compare = await page.locator("#kpi-kpi_pv .compare").inner_text()
            assert compare.startswith("前日: " if ja else "Day before: ")
            soc = await page.locator("#kpi-kpi_battery .compare").inner_text()
            assert "2026-06-01" in soc and "JST" in soc
            # Hourly bars: above zero what came in, below zero where it went; each hour balances.
            bars = await page.evaluate("() => Chart.getChart('energy-chart').data.datasets.map(d => d.data)")
            assert len(bars[0]) == 24
            for hour in range(24):
                column = [d[hour] for d in bars]
                up = sum(v for v in column if v > 0)
                down = -sum(v for v in column if v < 0)
                assert up == pytest.approx(down, abs=0.01 + 0.01 * up), hour
            # Water and gas in m³, equal to the meters' rises.
            water = await page.evaluate(
                "() => Chart.getChart('water-gas-chart').data.datasets[0].data.reduce((a, b) => a + b, 0)"
            )
            want_water = await _rise(store, "water", "volume_l_total", YESTERDAY_START, day_stop) / 1000
            assert water == pytest.approx(want_water, abs=0.001)
            assert "m³" in await page.locator("#water-gas-chart-caption").inner_text()
            await _every_control_is_named(page)
            if size is PHONE:
                await _no_wider_than_the_phone(page)
            await page.screenshot(path=str(SHOTS / f"homeowner_energy_{name}.png"), full_page=True)

            # The CSV download: the day's hourly rows, Tokyo hours first.
            async with page.expect_download() as download_info:
                await page.click("#csv")
            download = await download_info.value
            text = Path(await download.path()).read_text(encoding="utf-8")
            rows_csv = list(csv.DictReader(io.StringIO(text)))
            assert download.suggested_filename == "hems-h1-day-2026-06-01.csv"
            assert len(rows_csv) == 24 and rows_csv[0]["hour_start_jst"] == "2026-06-01 00:00"
            assert sum(float(r["pv_wh"]) for r in rows_csv) / 1000 == pytest.approx(out["pv"], abs=0.005)
            await context.close()


async def test_energy_page_refreshes_without_reloading(
    tmp_path: Path, api_policy: Policy, need_browser: None
) -> None:
    """Today's page takes new readings in without a reload: by the button, and by itself every minute
    (the browser's clock is run forward); a week and a month are chosen from the keyboard."""
    home = emulated_home("h1", NOW - timedelta(days=1), NOW + timedelta(minutes=30), timedelta(minutes=5))
    now_ns = int(NOW.timestamp()) * 1_000_000_000
    past = [p for p in home.points if p.ts_ns < now_ns]
    later = [p for p in home.points if p.ts_ns >= now_ns]
    async with browsing(tmp_path, api_policy, past, ("hana",), now=NOW.timestamp, setup=_hana) as (
        base,
        store,
        _state,
        browser,
    ):
        page = await (await browser.new_context(viewport=DESKTOP, locale="en-GB")).new_page()
        await page.clock.install()
        await sign_in(page, base, "hana")
        await page.wait_for_selector('#dashboard[data-loaded="true"]', timeout=20_000)
        await page.evaluate("() => { window.notReloaded = true; }")
        count: Callable[[], Any] = lambda: page.evaluate(  # noqa: E731
            "() => Chart.getChart('power-chart').data.datasets[0].data.filter(v => v !== null).length"
        )
        before = await count()
        assert before == 144  # 00:00 to 12:00 in Tokyo, every 5 minutes
        await store.write(later[: len(later) // 2])
        generation = int(await page.locator("#dashboard").get_attribute("data-generation"))
        await page.click("#refresh")
        await page.wait_for_function(
            f"() => Number(document.getElementById('dashboard').dataset.generation) > {generation}"
        )
        middle = await count()
        assert middle > before
        await store.write(later[len(later) // 2 :])
        generation += 1
        await page.clock.run_for(61_000)  # the page refreshes itself every minute
        await page.wait_for_function(
            f"() => Number(document.getElementById('dashboard').dataset.generation) > {generation}"
        )
        assert await count() > middle
        assert await page.evaluate("() => window.notReloaded") is True
        # From the keyboard: the period select, then the earlier button.
        await page.focus("#span")
        generation += 1
        await page.keyboard.press("ArrowDown")
        await page.wait_for_function(
            f"() => Number(document.getElementById('dashboard').dataset.generation) > {generation}"
        )
        assert await page.locator("#period-label").inner_text() == "2026-05-27 (Wed) – 2026-06-02 (Tue)"
        assert len(await page.evaluate("() => Chart.getChart('energy-chart').data.labels")) >= 1
        await page.screenshot(path=str(SHOTS / "homeowner_energy_week_desktop_en.png"), full_page=True)


async def test_ledger_page_in_words_grouped_paged_and_suspends_per_recipient(
    tmp_path: Path, api_policy: Policy, need_browser: None
) -> None:
    home = emulated_home("h1", NOW - timedelta(hours=6), NOW, timedelta(minutes=5))
    async with browsing(tmp_path, api_policy, home.points, ("hana",), now=NOW.timestamp, setup=_hana) as (
        base,
        _store,
        state,
        browser,
    ):
        page = await (await browser.new_context(viewport=DESKTOP, locale="en-GB")).new_page()
        await sign_in(page, base, "hana")
        # The installer read h1 three times on each of 24 Tokyo days; the sales company once.
        for d in range(24):
            for k in range(3):
                at = NOW - timedelta(days=d, hours=k)
                state.ledger.record(
                    "inst1", "h1", ["pv", "battery"], at - timedelta(days=1), at, PV, ["sps-2.2.4"], at=at
                )
        state.ledger.record(
            "sales1",
            "h1",
            ["pv"],
            NOW - timedelta(days=1),
            NOW,
            PV,
            ["sps-2.2.4"],
            at=NOW - timedelta(minutes=5),
        )
        await page.goto(f"{base}/ledger")
        text = await page.locator("#provision").inner_text()
        assert "Roof Installers (installer)" in text and "Sun Sales (sales company)" in text
        assert "After-sales maintenance and watch-over of the customer's photovoltaic equipment" in text
        assert "Smart Power System 2(2)[4]" in text
        assert "Page 1 of 2" in text
        # Grouped by recipient and Tokyo day: the first day's group says 3 times, in Tokyo time.
        first = page.locator('.recipient[data-recipient="inst1"] article.provision').first
        assert await first.get_attribute("data-day") == "2026-06-02"
        words = await first.inner_text()
        assert "2026-06-02 (Tue)" in words and "3 times" in words and "battery, PV" in words
        assert "10:00 - 12:00 JST" in words
        head = (await state.ledger_for("h1")).head.text()
        assert await page.locator("#ledger-head").inner_text() == head
        await _every_control_is_named(page)
        await page.screenshot(path=str(SHOTS / "homeowner_ledger_desktop_en.png"), full_page=True)
        await page.click("a[rel=next]")
        assert "Page 2 of 2" in await page.locator("#provision").inner_text()

        # Suspend provision to the installer only, from its line (through the consent API).
        await page.goto(f"{base}/ledger")
        section = page.locator('.recipient[data-recipient="inst1"]')
        await section.locator("button").click()
        await page.wait_for_selector('.recipient.suspended[data-recipient="inst1"]')
        assert "suspended (since 2026-06-02 (Tue) 12:00 JST)" in await section.locator(".state").inner_text()
        assert "is allowed" in await page.locator('.recipient[data-recipient="sales1"] .state').inner_text()
        active = [s for s in state.authz.consent.suspensions("h1") if s.active(NOW.timestamp())]
        assert [(s.recipient, s.scope, s.category) for s in active] == [("inst1", "provision", None)]
        # ...which the policy now enforces: the installer is refused, the sales company is not.
        at = NOW.timestamp()
        assert not state.authz.decide(
            AccessRequest("inst1", "h1", "pv", "read", PV, (at - 3600, at)), at=at
        ).allowed
        assert state.authz.decide(
            AccessRequest("sales1", "h1", "pv", "read", PV, (at - 3600, at)), at=at
        ).allowed
        await page.screenshot(path=str(SHOTS / "homeowner_ledger_suspended_desktop_en.png"), full_page=True)
        # Resume it: allowed again.
        await page.locator('.recipient[data-recipient="inst1"] button').click()
        await page.wait_for_selector('.recipient[data-recipient="inst1"]:not(.suspended)')
        assert state.authz.decide(
            AccessRequest("inst1", "h1", "pv", "read", PV, (at - 3600, at)), at=at
        ).allowed

        phone = await (await browser.new_context(viewport=PHONE, locale="ja-JP")).new_page()
        await sign_in(phone, base, "hana")
        await phone.goto(f"{base}/ledger")
        text = await phone.locator("#provision").inner_text()
        assert "Roof Installers (施工・保守会社)" in text and "太陽光発電設備のアフターメンテナンス" in text
        assert "2026-06-02 (火)" in text and "3 回" in text and "1 ページ目" in text
        await _no_wider_than_the_phone(phone)
        await phone.screenshot(path=str(SHOTS / "homeowner_ledger_phone_ja.png"), full_page=True)


async def test_erasure_page_files_requests_and_shows_their_status(
    tmp_path: Path, api_policy: Policy, need_browser: None
) -> None:
    home = emulated_home("h1", NOW - timedelta(hours=2), NOW, timedelta(minutes=5))
    async with browsing(
        tmp_path, api_policy, home.points, ("hana", "bob"), now=NOW.timestamp, setup=_hana
    ) as (base, store, state, browser):
        page = await (await browser.new_context(viewport=DESKTOP, locale="ja-JP")).new_page()
        await sign_in(page, base, "hana")
        await page.goto(f"{base}/erasure")
        assert "削除の請求はありません" in await page.locator("main").inner_text()
        await page.check('input[name=category][value="water"]')
        await page.check('input[name=category][value="gas"]')
        await page.check("#erase-confirm")
        await page.click("#erasure-form button[type=submit]")
        await page.wait_for_selector("#erasures tbody tr")
        row = await page.locator("#erasures tbody tr").first.inner_text()
        assert "受付済み（実施待ち）" in row and "水道: 削除" in row and "ガス: 削除" in row
        assert "2026-06-02 (火) 12:00 JST" in row
        (request,) = state.authz.consent.erasures("h1")
        assert set(request.outcome) == {"water", "gas"} and request.status == "recorded"
        await page.screenshot(path=str(SHOTS / "homeowner_erasure_desktop_ja.png"), full_page=True)

        # A Sobu Gas customer from now: its terms keep her contract records (Sobu Gas 7's hold applies to
        # its own customers only, so before this contract they would have been erased too).
        state.relationships.add_contract("h1", "sobu_gas", "supply", since=NOW - timedelta(hours=1))
        phone = await (await browser.new_context(viewport=PHONE, locale="en-GB")).new_page()
        await sign_in(phone, base, "hana")
        await phone.goto(f"{base}/erasure")
        await phone.check("#erase-all")
        await phone.check("#erase-confirm")
        await phone.click("#erasure-form button[type=submit]")
        await phone.wait_for_function("() => document.querySelectorAll('#erasures tbody tr').length == 2")
        newest = await phone.locator("#erasures tbody tr").first.inner_text()
        assert "power contract: kept by law (sobu_gas-7.legal_hold)" in newest
        assert "electricity meter: to be erased" in newest
        # Carried out later by the operator (hems erasure complete) against the real store: the page says so.
        await complete(
            state.authz.consent,
            state.relationships,
            state.authz.policy.seeds,
            store,
            request.id,
            "ops",
            at=NOW.timestamp(),
        )
        await phone.reload()
        statuses = await phone.locator("#erasures tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.status)"
        )
        assert sorted(statuses) == ["done", "recorded"]
        assert "carried out" in await phone.locator("#erasures").inner_text()
        await _every_control_is_named(phone)
        await _no_wider_than_the_phone(phone)
        await phone.screenshot(path=str(SHOTS / "homeowner_erasure_phone_en.png"), full_page=True)
        # Another household's homeowner sees none of it and cannot file for h1.
        other = await (await browser.new_context(viewport=DESKTOP)).new_page()
        await sign_in(other, base, "bob")
        await other.goto(f"{base}/erasure")
        assert await other.locator("#erasures").count() == 0
        assert await other.locator("#erasure-form").get_attribute("data-household") == "h2"
        csrf = await other.locator('meta[name="csrf-token"]').get_attribute("content")
        status = await other.evaluate(
            """async (csrf) => (await fetch('/api/v1/households/h1/erasure', {method: 'POST',
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}, body: '{}'})).status""",
            csrf,
        )
        assert status == 403 and len(state.authz.consent.erasures("h1")) == 2


def test_page_weight_is_small() -> None:
    """Small pages: the homeowner's own script and stylesheet (the vendored libraries aside)."""
    static = Path(__file__).resolve().parents[2] / "access" / "web" / "static"
    assert (static / "app.js").stat().st_size < 25_000
    assert (static / "home.js").stat().st_size < 6_000
    assert (static / "style.css").stat().st_size < 12_000
