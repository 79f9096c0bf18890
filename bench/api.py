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
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from access.compiler import compile_seeds
from access.consent import ConsentStore
from access.decision import Authorizer
from access.relationships import RelationshipStore
from access.request import AccessRequest
from access.tokens import TokenStore
from collector.scheduler import percentile
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


def _pcts(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in ms (nearest rank)."""
    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    if p50 is None or p99 is None:
        raise ValueError("no samples")
    return p50 * 1000, p99 * 1000


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


def _bare_server(port: int, size: int) -> None:
    """The ceiling: aiohttp on the same loop answering a fixed body of the real response's size, with
    no auth, policy, store, cache or ledger.  Run as ``python -m bench.api --bare PORT SIZE``."""
    from aiohttp import web

    from common.loop import run

    body = b"x" * size

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def serve() -> None:
        app = web.Application()
        app.router.add_get("/x", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True).start()
        await asyncio.Event().wait()

    run(serve())


@dataclass
class LoadResult:
    p50_ms: float
    p99_ms: float
    rps: float
    errors: int
    tool: str


def _wrk(url: str, headers: dict[str, str], concurrency: int, seconds: float) -> LoadResult:
    """wrk (C, one thread) leaves the second core to the server; a Python client would be the
    bottleneck itself (see the docstring)."""
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "--timeout", "30s"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([0-9.]+)(us|ms|s)\s*$", out, re.M)
        if m is None:
            raise RuntimeError(f"cannot read the {label}th percentile from wrk:\n{out}")
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return LoadResult(ms("50"), ms("99"), float(rps.group(1)) if rps else float("nan"), errors, "wrk")


def _load_any(url: str, headers: dict[str, str], concurrency: int, seconds: float, n: int) -> LoadResult:
    if shutil.which("wrk"):
        return _wrk(url, headers, concurrency, seconds)
    lat, rps, errs = asyncio.run(_load(url, headers, n, concurrency))
    p50, p99 = _pcts(lat)
    return LoadResult(p50, p99, rps, errs, "aiohttp client")


def _start(cmd: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=10)


def _serve_cmd(port: int, db: Path, store_path: Path, cache_mb: float, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "hems", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--db", str(db), "--store", f"sqlite:{store_path}", "--rate", "0", "--page-cache-mb", str(cache_mb),
        "--workers", str(workers),
    ]  # fmt: skip


class _Server:
    """``hems serve`` (or ``processes`` bare servers) on a free port, every process listening."""

    def __init__(self, cmd: Callable[[int], list[str]], processes: int, ready_path: str) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.procs = [_start(cmd(self.port)) for _ in range(processes)]
        asyncio.run(_wait_up(self.base + ready_path))
        time.sleep(0.5)

    def close(self) -> None:
        for proc in self.procs:
            _stop(proc)

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _wait_workers(base: str, workers: int) -> None:
    """Until fresh connections have reached ``workers`` distinct processes (``/metrics`` names them)."""
    seen: set[str] = set()
    for _ in range(600):
        async with aiohttp.ClientSession() as s, s.get(f"{base}/metrics") as r:
            m = re.search(r'^hems_api_worker\{pid="(\d+)"\} 1(?:\.0)?$', await r.text(), re.M)
            if m:
                seen.add(m.group(1))
        if len(seen) >= workers:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"only {len(seen)} of {workers} workers answered")


def _line(label: str, r: LoadResult) -> str:
    return (
        f"  {label:<44} p50 {r.p50_ms:8.1f} ms  p99 {r.p99_ms:8.1f} ms  {r.rps:8.0f} req/s  errors {r.errors}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000, help="per run, when wrk is not installed")
    ap.add_argument("--seconds", type=float, default=10.0, help="per run, with wrk")
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--homes", type=int, default=20)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="hems serve --workers")
    ap.add_argument("--bare", nargs=2, type=int, metavar=("PORT", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare:
        _bare_server(*args.bare)
        return
    c, secs, n = args.concurrency, args.seconds, args.requests
    tool = "wrk" if shutil.which("wrk") else "aiohttp client (install wrk for figures not capped by it)"
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
        rel.add_contracts([(hh, "sps", "service") for hh in homes], since=0)
        rel.add_principal("inst", "installer", "Installer", [PV])
        rel.add_principal("owner", "homeowner", "Owner", [OWN])
        rel.link_many([("inst", hh, "installer") for hh in homes], since=0)
        rel.link("owner", "h000", "homeowner", since=0)
        tokens = TokenStore(db)
        _, inst_token = tokens.create("inst", [PV], frozenset({PV}))
        # The homeowner's token was issued after an identity check: the person's rights need one.
        _, owner_token = tokens.create(
            "owner", [OWN], frozenset({OWN}), identity_verified_at=time.time(), identity_method="documents"
        )
        tokens.close()

        policy = compile_seeds(load_seeds())
        authz = Authorizer(policy, rel, ConsentStore(db))
        window = (DAY.timestamp(), (DAY + timedelta(days=1)).timestamp())
        authz.decide(AccessRequest("inst", "h000", "pv", "read", PV, window))
        n_dec = 20_000
        t0 = time.perf_counter()
        for i in range(n_dec):
            authz.decide(AccessRequest("inst", homes[i % len(homes)], "pv", "read", PV, window))
        decide_us = (time.perf_counter() - t0) / n_dec * 1e6
        rel.close()

        # Browsers and HTTP libraries ask for gzip; one run below asks for identity (the full body).
        gz = {"Accept-Encoding": "gzip"}
        inst = {"Authorization": f"Bearer {inst_token}", **gz}
        own = {"Authorization": f"Bearer {owner_token}", **gz}
        inst_plain = {"Authorization": f"Bearer {inst_token}", "Accept-Encoding": "identity"}
        q = "start=2026-06-01T00:00:00Z&stop=2026-06-02T00:00:00Z&every=1m&fields=power_w"
        path_inst = f"/api/v1/households/h000/series/pv?{q}&purpose={PV}"
        path_own = f"/api/v1/households/h000/series/pv?{q}&purpose={OWN}"

        w = args.workers
        runs: dict[str, LoadResult] = {}
        with _Server(lambda p: _serve_cmd(p, db, store_path, 64, w), 1, "/readyz") as server:
            base = server.base
            asyncio.run(_wait_workers(base, w))
            size_gz = len(asyncio.run(_get_bytes(base + path_inst, inst)))
            size_plain = len(asyncio.run(_get_bytes(base + path_inst, inst_plain)))
            asyncio.run(_load(base + path_inst, inst, 50, 10))  # warm up
            runs["installer"] = _load_any(base + path_inst, inst, c, secs, n)
            metrics = asyncio.run(_get_text(f"{base}/metrics"))
            one_lat, one_rps, _ = asyncio.run(_load(base + path_inst, inst, 100, 1))
            runs["homeowner"] = _load_any(base + path_own, own, c, secs, n // 2)
            runs["identity"] = _load_any(base + path_inst, inst_plain, c, secs, n)
            # The store changes every 100 ms (another household's reading), so pages are re-rendered
            # that often: what a live dashboard sees while the collector writes.
            stop_writer = threading.Event()
            writer = threading.Thread(target=_keep_writing, args=(store_path, stop_writer, 0.1))
            writer.start()
            try:
                runs["live"] = _load_any(base + path_inst, inst, c, secs, n)
            finally:
                stop_writer.set()
                writer.join()
            live_metrics = asyncio.run(_get_text(f"{base}/metrics"))

        with _Server(lambda p: _serve_cmd(p, db, store_path, 0, w), 1, "/readyz") as server:
            asyncio.run(_wait_workers(server.base, w))
            runs["uncached"] = _load_any(server.base + path_inst, inst, c, secs, n // 4)
        with _Server(lambda p: _serve_cmd(p, db, store_path, 64, 1), 1, "/readyz") as server:
            asyncio.run(_load(server.base + path_inst, inst, 50, 10))  # warm up
            runs["one worker"] = _load_any(server.base + path_inst, inst, c, secs, n)

        for label, procs, size in (
            ("ceiling", w, size_gz),
            ("ceiling identity", w, size_plain),
            ("ceiling one process", 1, size_gz),
        ):
            with _Server(
                lambda p, size=size: [sys.executable, "-m", "bench.api", "--bare", str(p), str(size)],
                procs,
                "/x",
            ) as bare:
                runs[label] = _load_any(bare.base + "/x", {}, c, secs, n)
        base_lat, base_rps = asyncio.run(_baseline(store_path, n // 4, c))

    b50, b99 = _pcts(base_lat)
    s50, s99 = _pcts(one_lat)
    dec_n = _metric(metrics, "hems_policy_decision_seconds_count")
    dec_mean_us = (
        _metric(metrics, "hems_policy_decision_seconds_sum") / dec_n * 1e6 if dec_n else float("nan")
    )
    hits = _metric(live_metrics, "hems_page_cache_hits_total")
    misses = _metric(live_metrics, "hems_page_cache_misses_total")
    inst_run, ceiling = runs["installer"], runs["ceiling"]
    print(
        f"API: 24 h at 1 min (1,440 rows; JSON {size_plain:,} bytes, gzip {size_gz:,}), {c} concurrent "
        f"clients, load by {tool}, hems serve --workers {w}"
    )
    print(_line(f"ceiling: {w} bare aiohttp process(es), gzip-sized body", ceiling))
    print(_line("installer (policy + ledger + page cache), gzip", inst_run))
    print(_line("homeowner (policy, no ledger), gzip", runs["homeowner"]))
    print(_line("installer while the store changes 10x/s, gzip", runs["live"]))
    print(f"    page cache of one worker over the whole run: {hits:.0f} hits, {misses:.0f} misses")
    print(_line("installer, page cache off (every query), gzip", runs["uncached"]))
    print(_line(f"ceiling: {w} bare process(es), identity-sized body", runs["ceiling identity"]))
    print(_line("installer, no compression (identity)", runs["identity"]))
    print(_line("ceiling: 1 bare process, gzip-sized body", runs["ceiling one process"]))
    print(_line("installer, --workers 1, gzip", runs["one worker"]))
    print(
        f"  installer, one client at a time:             p50 {s50:8.1f} ms  p99 {s99:8.1f} ms  "
        f"{one_rps:8.0f} req/s"
    )
    print(
        f"  baseline store.query only, {c} tasks:        p50 {b50:8.1f} ms  p99 {b99:8.1f} ms  "
        f"{base_rps:8.0f} q/s"
    )
    print(
        f"  throughput vs the ceiling of the same shape: installer x{inst_run.rps / ceiling.rps:.2f}, "
        f"identity x{runs['identity'].rps / runs['ceiling identity'].rps:.2f}, "
        f"one worker x{runs['one worker'].rps / runs['ceiling one process'].rps:.2f}; "
        f"page cache on/off x{inst_run.rps / runs['uncached'].rps:.1f}"
    )
    print(
        f"  policy decision in the server: mean {dec_mean_us:.1f} us over {int(dec_n)} decisions "
        f"({dec_mean_us / 1000 / inst_run.p50_ms * 100:.2f}% of the installer p50); "
        f"tight loop {decide_us:.1f} us/decision"
    )
    verdict = "met" if inst_run.p99_ms < 50 else "NOT met"
    print(f"  goal p99 < 50 ms: {verdict} (installer, {c} concurrent clients, {tool})")


def _keep_writing(store_path: Path, stop: threading.Event, period: float) -> None:
    async def go() -> None:
        store = SQLiteStore(store_path)
        ns = int(DAY.timestamp()) * 1_000_000_000
        i = 0
        while not stop.is_set():
            i += 1
            await store.write([Point("electricity", "h001", "meter", "echonet", ns + i, {"power_w": 1.0})])
            await asyncio.sleep(period)
        await store.close()

    asyncio.run(go())


async def _get_bytes(url: str, headers: dict[str, str]) -> bytes:
    """The body as sent (not decompressed)."""
    async with aiohttp.ClientSession(auto_decompress=False) as s, s.get(url, headers=headers) as r:
        body = await r.read()
        if r.status != 200:
            raise RuntimeError(f"{url}: {r.status} {body[:200]!r}")
        return body


async def _wait_up(url: str) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(300):
            try:
                async with s.get(url) as r:
                    await r.read()
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def _get_text(url: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return await r.text()


if __name__ == "__main__":
    main()
