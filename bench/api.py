"""API under load as users get it: many homes' dashboards while the collector writes every second.

Headline (the workload of a deployment): ``hems serve --workers 2`` over a real SQLite store holding
the last day of 10-second readings of ``--homes`` homes (PV and grid meter), while a running
``pipeline.writer.Pipeline`` in its own process (what ``hems collect`` runs) submits a reading of every
home's inverter and meter each second.  200 wrk connections ask an installer's question, "the last
24 h at 1 minute" (1,440 windows of ``power_w``, JSON, gzip), rotating over every home and both
categories (``2 x --homes`` URLs); the window ends at the next whole minute, so each write lands in
the pages it touches.  Each live row's measured seconds have a whole minute in their middle (the
warm-up runs until then), when every dashboard's window moves on: the row always holds that burst.
Every response passes authentication, the policy decision and a provision-ledger record, as in
production.

Rows, all measured in the same run on the same store and printed next to the headline:

* **live, every cache off**: the headline's workload with ``--page-cache-mb 0``: every request
  queries the store and renders (the miss path alone);
* **one URL, store unchanged**: the earlier headline (one home's page asked again and again);
* **ceiling**: bare aiohttp processes answering a fixed body of the page's gzip'd size (no auth,
  policy, store, cache or ledger): what the framework alone reaches on this machine.

Each row gives p50/p99, req/s and the server's CPU per request (user + system time of every server
process from ``/proc``, divided by the requests wrk completed), which is steadier than latency on a
shared machine.  Goals (issue 20): live p99 < 50 ms and >= 4,000 req/s; the miss path <= 1 ms CPU per
request.

    python -m bench.api [--homes 100] [--seconds 10] [--concurrency 200] [--workers 2]
                        [--profile DIR]   # py-spy record of the server during the live rows

Needs ``wrk`` (``apt-get install wrk``); ``--profile`` needs ``py-spy`` (PyPI).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from access.relationships import RelationshipStore
from access.tokens import TokenStore
from collector.reading import Reading
from pipeline.points import Point
from pipeline.query import datetime_to_ns
from pipeline.sqlite_store import SQLiteStore

PV = "sps.pv_after_maintenance"
STEP_S = 10
CATEGORIES = ("pv", "electricity")
LIVE_PERIOD_S = 1.0


def home_id(i: int) -> str:
    return f"h{i:03d}"


def _pv_w(ts: float, k: int) -> float:
    hour = (ts / 3600 + 9) % 24  # Tokyo
    return max(0.0, math.sin((hour - 6) / 12 * math.pi)) * 900.0 * (1 + k % 5) if 6 <= hour <= 18 else 0.0


def history(household: str, k: int, start: datetime, stop: datetime) -> Iterator[Point]:
    """10-second points of one home's inverter (power and its energy counter) and grid meter."""
    t = start
    energy = 1e6
    while t < stop:
        ts = t.timestamp()
        ns = datetime_to_ns(t)
        pv = _pv_w(ts, k)
        energy += pv * STEP_S / 3600
        yield Point("pv", household, "inv1", "modbus", ns, {"power_w": pv, "energy_wh_total": energy})
        yield Point("electricity", household, "meter", "echonet", ns, {"power_w": 400.0 + k - pv})
        t += timedelta(seconds=STEP_S)


def live_writer(store_path: str, homes: int, stats_path: str) -> None:
    """A running pipeline (``python -m bench.api --live-writer``): every second one reading of each
    home's inverter and meter, submitted through ``Pipeline.submit`` into the store, until SIGTERM."""
    from common.loop import run, stop_on_signals
    from pipeline.writer import Pipeline

    async def go() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        store = SQLiteStore(store_path)
        written = 0
        async with Pipeline(store, max_delay=0.05) as pipeline:
            energy = [2e6] * homes
            while not stop.is_set():
                now = datetime.now(UTC)
                ts = now.timestamp()
                batch = []
                for k in range(homes):
                    hh = home_id(k)
                    pv = _pv_w(ts, k)
                    energy[k] += pv / 3600
                    batch.append(
                        Reading(hh, "inv1", "pv", now, {"power_w": pv, "energy_wh_total": energy[k]},
                                source="modbus")
                    )  # fmt: skip
                    batch.append(Reading(hh, "meter", "electricity", now, {"power_w": 400.0 + k - pv}))
                written += (await pipeline.submit(batch, now=now)).accepted
                Path(stats_path).write_text(json.dumps({"readings": written}))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), LIVE_PERIOD_S - time.time() % LIVE_PERIOD_S)
        await store.close()

    run(go())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    requests: int
    errors: int
    cpu_us_per_request: float = float("nan")


def _wrk(
    base: str, target: str | Path, headers: dict[str, str], concurrency: int, seconds: float
) -> LoadResult:
    """wrk (C, one thread) leaves the other core to the server.  ``target`` is a path, or a Lua script
    that chooses each request's path."""
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "--timeout", "30s"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    if isinstance(target, Path):
        cmd += ["-s", str(target), base]
    else:
        cmd.append(base + target)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([0-9.]+)(us|ms|s)\s*$", out, re.M)
        if m is None:
            raise RuntimeError(f"cannot read the {label}th percentile from wrk:\n{out}")
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    done = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return LoadResult(
        ms("50"), ms("99"), float(rps.group(1)) if rps else float("nan"), int(done.group(1)) if done else 0,
        errors,
    )  # fmt: skip


def _rolling_day_script(path: Path, households: list[str], purpose: str) -> Path:
    """A wrk script asking, in turn, every home's PV and grid page for the 24 h ending at the next
    whole minute (as a dashboard that refreshes asks), 1-minute windows of ``power_w``."""
    homes = ", ".join(f'"{h}"' for h in households)
    cats = ", ".join(f'"{c}"' for c in CATEGORIES)
    path.write_text(
        f"""
local homes = {{{homes}}}
local cats = {{{cats}}}
local i = 0
request = function()
  local h = homes[(math.floor(i / #cats) % #homes) + 1]
  local c = cats[(i % #cats) + 1]
  i = i + 1
  local t = os.time()
  local stop = t - t % 60 + 60
  local p = "/api/v1/households/" .. h .. "/series/" .. c
    .. "?start=" .. os.date("!%Y-%m-%dT%H:%M:%SZ", stop - 86400)
    .. "&stop=" .. os.date("!%Y-%m-%dT%H:%M:%SZ", stop)
    .. "&every=1m&fields=power_w&purpose={purpose}"
  return wrk.format(nil, p)
end
"""
    )
    return path


def _start(cmd: list[str], stdout: int | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=stdout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _serve_cmd(port: int, db: Path, store_path: Path, cache_mb: float, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "hems", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--db", str(db), "--store", f"sqlite:{store_path}", "--rate", "0", "--page-cache-mb", str(cache_mb),
        "--workers", str(workers),
    ]  # fmt: skip


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (hems serve's workers are its children)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(c for c, pp in parent.items() if pp == p)
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of processes (Linux /proc)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class _Server:
    """``hems serve`` (or ``processes`` bare servers) on a free port, every process listening."""

    def __init__(
        self, cmd: Callable[[int], list[str]], processes: int, ready_path: str, profile: Path | None = None
    ) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.profiled = profile is not None
        if profile is not None:
            spy = ["py-spy", "record", "--subprocesses", "--nonblocking", "-r", "200", "-f", "raw", "-o"]
            self.procs = [_start([*spy, str(profile), "--", *cmd(self.port)])]
        else:
            self.procs = [_start(cmd(self.port)) for _ in range(processes)]
        asyncio.run(_wait_up(self.base + ready_path))
        time.sleep(0.5)

    def pids(self) -> list[int]:
        return [p for proc in self.procs for p in _descendants(proc.pid)]

    def load(
        self, target: str | Path, headers: dict[str, str], concurrency: int, seconds: float
    ) -> LoadResult:
        pids = self.pids()
        cpu0 = cpu_seconds(pids)
        r = _wrk(self.base, target, headers, concurrency, seconds)
        r.cpu_us_per_request = (cpu_seconds(pids) - cpu0) / max(r.requests, 1) * 1e6
        return r

    def close(self) -> None:
        for proc in self.procs:
            if self.profiled:
                # py-spy writes its profile when the program it runs exits: stop the server under it.
                server = _descendants(proc.pid)[1]
                os.kill(server, signal.SIGTERM)
                proc.wait(timeout=60)
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
            # One scrape lists every live worker (access.api.multiproc), or only itself without it.
            seen.update(re.findall(r'^hems_api_worker\{pid="(\d+)"\} 1(?:\.0)?$', await r.text(), re.M))
        if len(seen) >= workers:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"only {len(seen)} of {workers} workers answered")


def _until_straddling(seconds: float, at_least: int = 2) -> int:
    """Seconds from now (``at_least`` or more) until a run of ``seconds`` would have a whole minute in
    its middle: when every rolling day moves on and every dashboard's page is made again, the
    slowest second of each minute.  A live row without it reads a p99 less than half as high, so
    a row held it or not by chance (the earlier 75 and 173 ms of two runs)."""
    wait = math.ceil((60 - seconds / 2 - time.time()) % 60)  # wrk takes whole seconds
    return wait if wait >= at_least else wait + 60


def _line(label: str, r: LoadResult) -> str:
    return (
        f"  {label:<46} p50 {r.p50_ms:7.1f} ms  p99 {r.p99_ms:7.1f} ms  {r.rps:7.0f} req/s  "
        f"CPU {r.cpu_us_per_request:5.0f} us/req  errors {r.errors}"
    )


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


def _fill(store_path: Path, households: list[str], start: datetime, stop: datetime) -> int:
    async def go() -> int:
        store = SQLiteStore(store_path)
        n = 0
        for k, hh in enumerate(households):
            points = list(history(hh, k, start, stop))
            n += len(points)
            await store.write(points)
        await store.close()
        return n

    return asyncio.run(go())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="per row")
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--homes", type=int, default=100, help="URLs = 2 x homes (PV and grid)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="hems serve --workers")
    ap.add_argument("--profile", type=Path, default=None, help="directory for py-spy profiles (raw)")
    ap.add_argument("--only-live", action="store_true", help="the two live rows only")
    ap.add_argument("--bare", nargs=2, type=int, metavar=("PORT", "SIZE"), help=argparse.SUPPRESS)
    ap.add_argument("--live-writer", nargs=3, metavar=("STORE", "HOMES", "STATS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare:
        _bare_server(*args.bare)
        return
    if args.live_writer:
        live_writer(args.live_writer[0], int(args.live_writer[1]), args.live_writer[2])
        return
    if not shutil.which("wrk"):
        raise SystemExit("bench.api needs wrk (apt-get install wrk)")
    c, secs, w = args.concurrency, args.seconds, args.workers
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store_path, db = root / "series.sqlite", root / "access.sqlite"
        homes = [home_id(i) for i in range(args.homes)]
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        n_points = _fill(store_path, homes, (now - timedelta(days=1, minutes=5)).replace(microsecond=0), now)
        fill_s = time.perf_counter() - t0
        rel = RelationshipStore(db)
        rel.add_households(homes)
        rel.add_contracts([(hh, "sps", "service") for hh in homes], since=0)
        rel.add_principal("inst", "installer", "Installer", [PV])
        rel.link_many([("inst", hh, "installer") for hh in homes], since=0)
        rel.close()
        tokens = TokenStore(db)
        _, inst_token = tokens.create("inst", [PV], frozenset({PV}))
        tokens.close()
        inst = {"Authorization": f"Bearer {inst_token}", "Accept-Encoding": "gzip"}
        script = _rolling_day_script(root / "rolling_day.lua", homes, PV)
        stop_at = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day_ago = stop_at - timedelta(days=1)
        one_url = (
            f"/api/v1/households/{homes[0]}/series/pv?start={day_ago:%Y-%m-%dT%H:%M:%SZ}"
            f"&stop={stop_at:%Y-%m-%dT%H:%M:%SZ}&every=1m&fields=power_w&purpose={PV}"
        )

        runs: dict[str, LoadResult] = {}
        counters: dict[str, tuple[float, float, float, float]] = {}
        stats_path = root / "writer.json"
        writer = _start([sys.executable, "-m", "bench.api", "--live-writer", str(store_path), str(args.homes),
                         str(stats_path)])  # fmt: skip
        writer_cpu0 = cpu_seconds([writer.pid])
        writer_t0 = time.perf_counter()
        try:
            for label, cache_mb in (("live", 64.0), ("live, every cache off", 0.0)):
                prof = (
                    args.profile / f"{label.replace(' ', '_').replace(',', '')}.txt" if args.profile else None
                )
                with _Server(
                    lambda p, m=cache_mb: _serve_cmd(p, db, store_path, m, w), 1, "/readyz", prof
                ) as s:
                    asyncio.run(_wait_workers(s.base, w))
                    size_gz = len(asyncio.run(_get_bytes(s.base + one_url, inst)))
                    # Warm up (token, policy snapshot, asks) until the row straddles a whole minute.
                    s.load(script, inst, 20, _until_straddling(secs))
                    runs[label] = s.load(script, inst, c, secs)
                    text = asyncio.run(_get_text(f"{s.base}/metrics"))
                    hits = _metric(text, "hems_page_cache_hits_total")
                    counters[label] = (
                        hits,
                        _metric(text, "hems_page_cache_misses_total"),
                        _metric(text, "hems_ledger_records_total"),
                        _metric(text, "hems_ledger_commits_total"),
                    )
        finally:
            writer_cpu = cpu_seconds([writer.pid]) - writer_cpu0
            writer_s = time.perf_counter() - writer_t0
            writer_died = writer.poll() is not None
            _stop(writer)
        readings = json.loads(stats_path.read_text())["readings"] if stats_path.exists() else 0
        if writer_died or readings < args.homes * 2 * (2 * secs):
            raise SystemExit(f"the live writer failed ({readings} readings): the live rows are void")
        if not args.only_live:
            with _Server(lambda p: _serve_cmd(p, db, store_path, 64, w), 1, "/readyz") as s:
                asyncio.run(_wait_workers(s.base, w))
                s.load(one_url, inst, 20, 1.0)
                runs["one URL, store unchanged"] = s.load(one_url, inst, c, secs)
            cmd = [sys.executable, "-m", "bench.api", "--bare"]
            with _Server(lambda p: [*cmd, str(p), str(size_gz)], w, "/x") as bare:
                runs["ceiling"] = bare.load("/x", {}, c, secs)

    live, off = runs["live"], runs["live, every cache off"]
    print(
        f"API: {args.homes} homes x {len(CATEGORIES)} categories = {2 * args.homes} URLs, each the last 24 h "
        f"at 1 min (1,440 windows of 10 s points; gzip'd page {size_gz:,} bytes); {c} wrk connections, "
        f"hems serve --workers {w}; store {n_points:,} points filled in {fill_s:.0f} s"
    )
    print(
        f"  live writer: Pipeline.submit every {LIVE_PERIOD_S:g} s, {readings:,} readings in "
        f"{writer_s:.0f} s, "
        f"{writer_cpu / max(writer_s, 1e-9) * 100:.0f}% of a core; load average {os.getloadavg()[0]:.1f}"
    )
    print(_line("HEADLINE live: installer, 200 URLs, writes 1/s", live))
    hits, misses, records, commits = counters["live"]
    print(
        f"    every worker over the live run: page cache {hits:.0f} hits, {misses:.0f} misses; "
        f"{records:.0f} provision records in {commits:.0f} commits"
    )
    print(_line("live, every cache off (the miss path)", off))
    for label in ("one URL, store unchanged", "ceiling"):
        if label in runs:
            shown = f"ceiling: {w} bare aiohttp, {size_gz:,}-byte body" if label == "ceiling" else label
            print(_line(shown, runs[label]))
    print(
        f"  goals: live p99 < 50 ms: {'met' if live.p99_ms < 50 else 'NOT met'}; live >= 4,000 req/s: "
        f"{'met' if live.rps >= 4000 else 'NOT met'}; miss path <= 1,000 us CPU/request: "
        f"{'met' if off.cpu_us_per_request <= 1000 else 'NOT met'}"
    )


async def _get_bytes(url: str, headers: dict[str, str]) -> bytes:
    """The body as sent (not decompressed)."""
    async with aiohttp.ClientSession(auto_decompress=False) as s, s.get(url, headers=headers) as r:
        body = await r.read()
        if r.status != 200:
            raise RuntimeError(f"{url}: {r.status} {body[:200]!r}")
        return body


async def _wait_up(url: str) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(600):
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
