"""The installer's "which home needs me": faults injected into real emulated devices reach the alerts
API and the webhook within two poll intervals, and clear after recovery."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from access.alerts import verify
from access.compiler import Policy
from tests.access.api_world import api_policy
from tests.access.live_world import POLL_S, PV, Live, start_live
from tests.http_endpoint import post_endpoint

__all__ = ["api_policy"]
pytestmark = pytest.mark.slow


@pytest.fixture
async def live(tmp_path: Path, api_policy: Policy) -> AsyncIterator[Live]:
    async for world in start_live(tmp_path, api_policy, alert_every_s=0.3):
        yield world


async def _alerts(live: Live, http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get(
        f"{live.base}/api/v1/alerts",
        params={"purpose": PV},
        headers={"Authorization": f"Bearer {live.token}"},
    ) as r:
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
        return body


async def _wait_for(
    live: Live, http: aiohttp.ClientSession, ok: Callable[[dict[str, Any]], bool], within_s: float
) -> float:
    """Seconds until ``ok(alerts)`` held; fails after ``within_s``."""
    t0 = time.monotonic()
    last: dict[str, Any] = {}
    while time.monotonic() - t0 <= within_s:
        last = await _alerts(live, http)
        if ok(last):
            return time.monotonic() - t0
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {within_s} s: {json.dumps(last)[:2000]}")


def _device_problems(body: dict[str, Any], household: str, device: str) -> list[dict[str, Any]]:
    return [p for p in body["problems"] if p["household"] == household and p["device"] == device]


async def test_silent_inverter_and_modbus_exception_appear_and_clear(live: Live) -> None:
    received: list[tuple[dict[str, str], bytes]] = []
    failures_left = [1]  # the receiver refuses the first delivery: the sender must retry

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        if failures_left[0]:
            failures_left[0] -= 1
            return web.Response(status=503)
        received.append((dict(request.headers), body))
        return web.Response(status=204)

    silent_home, exception_home, clean_home = live.households
    async with post_endpoint("/hook", receive) as hook_base, aiohttp.ClientSession() as http:
        # The installer sets its webhook through the API (the page's form does the same).
        async with http.put(
            f"{live.base}/api/v1/alerts/webhook",
            json={"url": f"{hook_base}/hook"},
            headers={"Authorization": f"Bearer {live.token}"},
        ) as r:
            assert r.status == 200, await r.text()
            secret = (await r.json())["secret"]
        # Every device answers: no problem anywhere (after the first polls have been stored).
        await _wait_for(live, http, lambda b: not b["problems"], within_s=15)
        live.fleet.faults(silent_home, "inverter").no_reply = True
        live.fleet.faults(exception_home, "inverter").modbus_exception = 4
        took = await _wait_for(
            live,
            http,
            lambda b: (
                any(
                    p["detail"].get("reason") == "timeout"
                    for p in _device_problems(b, silent_home, "inverter")
                )
                and any(
                    p["detail"].get("reason") == "exception:4"
                    for p in _device_problems(b, exception_home, "inverter")
                )
            ),
            within_s=2 * POLL_S,
        )
        body = await _alerts(live, http)
        (silent,) = _device_problems(body, silent_home, "inverter")
        assert silent["kind"] == "health" and silent["severity"] == 3 and silent["since"]
        # The homes with problems come first; the clean home has none.
        order = list(dict.fromkeys(p["household"] for p in body["problems"]))
        assert set(order[:2]) == {silent_home, exception_home} and clean_home not in order
        # The webhook heard of both (after one refused delivery; maybe over two rounds), signed.
        wanted = {f"{h}/inverter/equipment/health" for h in (silent_home, exception_home)}
        opened: set[str] = set()
        for _ in range(50):
            opened = {p["key"] for r in received for p in json.loads(r[1])["opened"]}
            if wanted <= opened:
                break
            await asyncio.sleep(0.2)
        assert wanted <= opened, opened
        for headers, raw in received:
            assert verify(secret, headers["X-Hems-Timestamp"], raw, headers["X-Hems-Signature"])
            assert not verify("another secret", headers["X-Hems-Timestamp"], raw, headers["X-Hems-Signature"])

        live.fleet.faults(silent_home, "inverter").clear()
        live.fleet.faults(exception_home, "inverter").clear()
        cleared_in = await _wait_for(
            live,
            http,
            lambda b: (
                not _device_problems(b, silent_home, "inverter")
                and not _device_problems(b, exception_home, "inverter")
            ),
            within_s=2 * POLL_S + 1.0,  # plus the collector's backoff (at most 1 s)
        )
        for _ in range(50):
            cleared = {k for r in received for k in json.loads(r[1])["cleared"]}
            if {f"{h}/inverter/equipment/health" for h in (silent_home, exception_home)} <= cleared:
                break
            await asyncio.sleep(0.2)
        assert f"{silent_home}/inverter/equipment/health" in cleared
        assert f"{exception_home}/inverter/equipment/health" in cleared
        print(f"appeared after {took:.2f} s, cleared after {cleared_in:.2f} s (poll interval {POLL_S} s)")
        # Each delivery was recorded in the ledger of the homes it spoke of.
        recorded = {r.household for r in live.state.ledger.all() if r.recipient == "inst"}
        assert {silent_home, exception_home} <= recorded
