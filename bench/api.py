"""API latency under load: a 24 h, 1-minute series query from 200 concurrent clients, embedded store.

The server is ``hems serve`` in its own process (so client work does not share its event loop), over
a real SQLite store holding a day of 1-minute readings for a few homes.  Each request is one installer
token reading one home's PV power (1,440 windows) as JSON, so every response passes the policy
decision and writes one provision-ledger record, as in production.

Printed next to it, measured in the same run on the same store file:
* baseline: the same ``SeriesQuery`` straight on ``SQLiteStore`` from 200 concurrent tasks (no HTTP,
  no policy, no ledger), so the ratio is the cost of the API layer on this (shared, noisy) machine;
* the homeowner's own read of the same series (no ledger write);
* time in the policy decision, from the server's own histogram (``/metrics``) and in a tight loop.

    python -m bench.api [--requests 2000] [--concurrency 200] [--homes 20]

Goal: p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from access.compiler import compile_seeds
from access.consent import ConsentStore
from access.decision import Authorizer
from access.relationships import RelationshipStore
from access.tokens import TokenStore
from pipeline.points import Point
from pipeline.query import SeriesQuery
from pipeline.sqlite_store import SQLiteStore
from seeds.loader import load_seeds

PV = "sps.pv_after_maintenance"
OWN = "sps.disclosure_to_person"
DAY = datetime(2026, 6, 1, tzinfo=UTC)


def _points(household: str, k: int) -> list[Point]:
    out = []
    for i in range(1440):
        ns = int((DAY + timedelta(minutes=i)).timestamp()) * 1_000_000_000
        hour = i / 60
        pv = max(0.0, math.sin((hour - 6) / 12 * math.pi)) * 900.0 * k if 6 <= hour <= 18 else 0.0
        out.append(
            Point("pv", household, "inv1", "modbus", ns, {"power_w": pv, "energy_wh_total": 1e6 + i * 5.0})
        )
        out.append(Point("electricity", household, "meter", "echonet", ns, {"power_w": 400.0 - pv}))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pcts(samples: list[float]) -> tuple[float, float, float]:
    s = sorted(samples)
    return (
        s[len(s) // 2] * 1000,
        s[min(len(s) - 1, math.ceil(len(s) * 0.99) - 1)] * 1000,
        statistics.fmean(s) * 1000,
    )


async def _load(
    url: str, headers: dict[str, str], n: int, concurrency: int
) -> tuple[list[float], float, int]:
    latencies: list[float] = []
    errors = 0
    queue = iter(range(n))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            for _ in queue:
                t0 = time.perf_counter()
                async with session.get(url, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return latencies, n / wall, errors


async def _baseline(store_path: Path, n: int, concurrency: int) -> tuple[list[float], float]:
    store = SQLiteStore(store_path)
    q = SeriesQuery(("h000",), "pv", ("power_w",), DAY, DAY + timedelta(days=1), timedelta(minutes=1), "mean")
    latencies: list[float] = []
    queue = iter(range(n))

    async def worker() -> None:
        for _ in queue:
            t0 = time.perf_counter()
            await store.query(q)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    await store.close()
    return latencies, n / wall


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


async def _wait_ready(base: str) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(300):
            try:
                async with s.get(f"{base}/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("server did not become ready")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--homes", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store_path, db = root / "series.sqlite", root / "access.sqlite"
        homes = [f"h{i:03d}" for i in range(args.homes)]

        async def fill() -> None:
            store = SQLiteStore(store_path)
            for k, hh in enumerate(homes):
                await store.write(_points(hh, k + 1))
            await store.close()

        asyncio.run(fill())
        rel = RelationshipStore(db)
        rel.add_households(homes)
        rel.add_principal("inst", "installer", "Installer", [PV])
        rel.add_principal("owner", "homeowner", "Owner", [OWN])
        rel.link_many([("inst", hh, "installer") for hh in homes], since=0)
        rel.link("owner", "h000", "homeowner", since=0)
        tokens = TokenStore(db)
        _, inst_token = tokens.create("inst", [PV], frozenset({PV}))
        _, owner_token = tokens.create("owner", [OWN], frozenset({OWN}))
        tokens.close()

        policy = compile_seeds(load_seeds())
        authz = Authorizer(policy, rel, ConsentStore(db))
        authz.decide("inst", "h000", "pv", "read", PV)
        n_dec = 20_000
        t0 = time.perf_counter()
        for i in range(n_dec):
            authz.decide("inst", homes[i % len(homes)], "pv", "read", PV)
        decide_us = (time.perf_counter() - t0) / n_dec * 1e6
        rel.close()

        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hems",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--db",
                str(db),
                "--store",
                f"sqlite:{store_path}",
                "--rate",
                "0",
            ],
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            asyncio.run(_wait_ready(base))
            q = "start=2026-06-01T00:00:00Z&stop=2026-06-02T00:00:00Z&every=1m&fields=power_w"
            inst_url = f"{base}/api/v1/households/h000/series/pv?{q}&purpose={PV}"
            own_url = f"{base}/api/v1/households/h000/series/pv?{q}&purpose={OWN}"
            asyncio.run(_load(inst_url, {"Authorization": f"Bearer {inst_token}"}, 50, 10))  # warm up
            lat, rps, errs = asyncio.run(
                _load(inst_url, {"Authorization": f"Bearer {inst_token}"}, args.requests, args.concurrency)
            )
            metrics = asyncio.run(_get_text(f"{base}/metrics"))
            one_lat, one_rps, _ = asyncio.run(
                _load(inst_url, {"Authorization": f"Bearer {inst_token}"}, 100, 1)
            )
            own_lat, own_rps, own_errs = asyncio.run(
                _load(
                    own_url, {"Authorization": f"Bearer {owner_token}"}, args.requests // 2, args.concurrency
                )
            )
        finally:
            server.terminate()
            server.wait(timeout=10)
        base_lat, base_rps = asyncio.run(_baseline(store_path, args.requests, args.concurrency))

    p50, p99, mean = _pcts(lat)
    o50, o99, _ = _pcts(own_lat)
    b50, b99, bmean = _pcts(base_lat)
    s50, s99, _ = _pcts(one_lat)
    dec_n = _metric(metrics, "hems_policy_decision_seconds_count")
    dec_mean_us = (
        _metric(metrics, "hems_policy_decision_seconds_sum") / dec_n * 1e6 if dec_n else float("nan")
    )
    store_n = _metric(metrics, "hems_store_query_seconds_count")
    store_mean_ms = (
        _metric(metrics, "hems_store_query_seconds_sum") / store_n * 1e3 if store_n else float("nan")
    )
    print(
        f"API: 24 h at 1 min (1,440 rows, JSON), {args.requests} requests, "
        f"{args.concurrency} concurrent clients"
    )
    print(
        f"  installer (policy + ledger): p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  mean {mean:6.1f} ms  "
        f"{rps:7.1f} req/s  errors {errs}"
    )
    print(
        f"  installer, one client at a time: p50 {s50:5.1f} ms  p99 {s99:5.1f} ms  {one_rps:6.1f} req/s "
        "(the service time that queueing multiplies)"
    )
    print(
        f"  homeowner (policy, no ledger): p50 {o50:5.1f} ms  p99 {o99:7.1f} ms  {own_rps:7.1f} req/s  "
        f"errors {own_errs}"
    )
    print(
        f"  baseline store.query only:   p50 {b50:7.1f} ms  p99 {b99:7.1f} ms  mean {bmean:6.1f} ms  "
        f"{base_rps:7.1f} q/s"
    )
    print(f"  ratio API/baseline: p99 x{p99 / b99:.2f}, throughput x{rps / base_rps:.2f}")
    print(
        f"  policy decision in the server: mean {dec_mean_us:.1f} us over {int(dec_n)} decisions "
        f"({dec_mean_us / 1000 / s50 * 100:.2f}% of the single-client p50); "
        f"tight loop {decide_us:.1f} us/decision"
    )
    print(f"  store query in the server: mean {store_mean_ms:.2f} ms")
    print(f"  goal p99 < 50 ms: {'met' if p99 < 50 else 'NOT met'} at {args.concurrency} concurrent clients")


async def _get_text(url: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return await r.text()


if __name__ == "__main__":
    main()
