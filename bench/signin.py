"""An unrelated API request while 100 concurrent wrong sign-ins run, next to the same request alone.

``hems serve`` runs in its own process (one worker, as a small deployment runs it) over a real
SQLite store with a day of readings.  The measured request is an installer's 24 h, 5-minute PV
series for one home, sent one after another on one connection (so each latency is the server's, not
a queue of our own); its p50/p90/p99 are printed for each phase, in the same run:

* **alone**: nothing else runs (the baseline);
* **100 attackers, one address**: 100 tasks sending wrong passwords for one real account, each on a
  new connection from the same address: the throttle answers almost all of them without hashing;
* **100 attackers, 100 new addresses each try** (the headline, the worst case for the hashing
  thread): every attempt comes from a loopback address and a name not seen before, so no throttle
  applies and every attempt that finds room in the sign-in queue is hashed; the rest get 503 at once.

The attackers speak raw HTTP/1.1 over asyncio streams (one connection per attempt, bound to its
source address) so the client's own cost stays small; they share the machine with the server, so
read the figures next to the baseline and the load printed with them.

    python -m bench.signin [--seconds 10] [--attackers 100]

Goal: the headline p99 within 2x of the baseline p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from access.auth import WebAuth
from access.relationships import RelationshipStore
from access.tokens import TokenStore
from collector.scheduler import percentile
from pipeline.points import Point
from pipeline.sqlite_store import SQLiteStore

PV = "sps.pv_after_maintenance"
OWN = "sps.disclosure_to_person"
DAY = datetime(2026, 6, 1, tzinfo=UTC)
QUERY = "start=2026-06-01T00:00:00Z&stop=2026-06-02T00:00:00Z&every=5m&purpose=" + PV


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _points(household: str) -> list[Point]:
    out = []
    for i in range(1440):
        ns = int((DAY + timedelta(minutes=i)).timestamp()) * 1_000_000_000
        out.append(
            Point(
                "pv", household, "inv1", "modbus", ns, {"power_w": float(i % 700), "energy_wh_total": i * 5.0}
            )
        )
    return out


@dataclass
class Phase:
    label: str
    latencies: list[float]
    answers: Counter[int]

    def line(self) -> str:
        p50, p90, p99 = (percentile(self.latencies, q) or 0.0 for q in (50, 90, 99))
        attempts = sum(self.answers.values())
        answers = ", ".join(f"{n} x {code}" for code, n in sorted(self.answers.items())) or "none"
        return (
            f"  {self.label:<44} p50 {p50 * 1e3:7.1f} ms  p90 {p90 * 1e3:7.1f} ms  p99 {p99 * 1e3:7.1f} ms"
            f"  ({len(self.latencies)} requests; sign-in attempts: {attempts}: {answers})"
        )


async def _measure(url: str, headers: dict[str, str], seconds: float) -> list[float]:
    latencies: list[float] = []
    async with aiohttp.ClientSession() as http:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            async with http.get(url, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"the measured request failed: {r.status}")
            latencies.append(time.perf_counter() - t0)
    return latencies


async def _attempt(port: int, source: str, name: str, answers: Counter[int]) -> None:
    """One wrong sign-in on a new connection from ``source``; the status is counted."""
    body = f"principal={name}&password=wrong+password+{random.random()}".encode()
    request = (
        f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(request)
        status = await reader.readline()
        answers[int(status.split()[1])] += 1
        await reader.read()
    finally:
        writer.close()


async def _attack(port: int, attackers: int, fresh_addresses: bool, seconds: float) -> Counter[int]:
    prefix = random.Random(os.getpid()).randint(150, 250)
    counter = iter(range(10**9))
    answers: Counter[int] = Counter()
    deadline = time.perf_counter() + seconds

    async def attacker() -> None:
        while time.perf_counter() < deadline:
            n = next(counter)
            if fresh_addresses:  # a new address and a new name on every try: nothing to throttle
                source, name = f"127.{prefix}.{(n >> 8) % 256}.{n % 254 + 1}", f"guess{n}"
            else:
                source, name = "127.0.0.1", "owner"
            try:
                await _attempt(port, source, name, answers)
            except OSError:
                answers[0] += 1  # a connection refused or reset: counted as status 0

    await asyncio.gather(*(attacker() for _ in range(attackers)))
    return answers


def _attack_process(port: int, attackers: int, fresh: bool, seconds: float) -> subprocess.Popen[str]:
    """The attackers in a process of their own, so the measuring client's loop is not theirs."""
    cmd = [sys.executable, "-m", "bench.signin", "--attack", str(port), str(attackers), str(int(fresh)),
           str(seconds)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def _phase(
    label: str, port: int, headers: dict[str, str], seconds: float, attackers: int, fresh: bool | None
) -> Phase:
    url = f"http://127.0.0.1:{port}/api/v1/households/h1/series/pv?{QUERY}"
    attack = None
    if fresh is not None:
        attack = _attack_process(port, attackers, fresh, seconds + 2.0)
        time.sleep(1.0)  # let the flood build up before measuring
    latencies = asyncio.run(_measure(url, headers, seconds))
    answers: Counter[int] = Counter()
    if attack is not None:
        out, _ = attack.communicate(timeout=120)
        answers = Counter({int(k): v for k, v in json.loads(out).items()})
    return Phase(label, latencies, answers)


async def _wait_up(url: str) -> None:
    for _ in range(300):
        try:
            async with aiohttp.ClientSession() as http, http.get(url) as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="measuring time per phase")
    ap.add_argument("--attackers", type=int, default=100)
    ap.add_argument("--attack", nargs=4, metavar=("PORT", "N", "FRESH", "SECONDS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.attack:
        port, attackers, fresh, seconds = args.attack
        counts = asyncio.run(_attack(int(port), int(attackers), fresh == "1", float(seconds)))
        print(json.dumps(counts))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store_path, db = root / "series.sqlite", root / "access.sqlite"

        async def fill() -> None:
            store = SQLiteStore(store_path)
            await store.write(_points("h1"))
            await store.close()

        asyncio.run(fill())
        rel = RelationshipStore(db)
        rel.add_households(["h1"])
        rel.add_principal("inst", "installer", "Installer", [PV])
        rel.add_principal("owner", "homeowner", "Owner", [OWN])
        rel.link_many([("inst", "h1", "installer"), ("owner", "h1", "homeowner")], since=0)
        tokens = TokenStore(db)
        _, token = tokens.create("inst", [PV], frozenset({PV}))
        tokens.close()
        rel.close()
        web = WebAuth(db)
        web.set_password("owner", "the owner's real password")
        web.close()
        port = _free_port()
        cmd = [sys.executable, "-m", "hems", "serve", "--host", "127.0.0.1", "--port", str(port), "--db",
               str(db), "--store", f"sqlite:{store_path}", "--rate", "0", "--insecure-cookies"]  # fmt: skip
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            asyncio.run(_wait_up(f"http://127.0.0.1:{port}/healthz"))
            headers = {"Authorization": f"Bearer {token}"}
            n, s = args.attackers, args.seconds
            phases = [
                _phase("alone (baseline)", port, headers, s, n, None),
                _phase(f"{n} attackers, one address, one account", port, headers, s, n, False),
                _phase(f"{n} attackers, a new address and name each try", port, headers, s, n, True),
            ]
        finally:
            server.terminate()
            server.wait(timeout=30)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"bench.signin: an installer's 24 h / 5 min PV series, one at a time, {args.seconds:g} s per phase")
    print(f"  load average at the end: {load} on {os.cpu_count()} cores (other work shares the machine)")
    for phase in phases:
        print(phase.line())
    base = percentile(phases[0].latencies, 99) or float("nan")
    worst = percentile(phases[2].latencies, 99) or float("nan")
    ratio = worst / base
    print(f"  headline: p99 {worst * 1e3:.1f} ms in the flood, {base * 1e3:.1f} ms alone: {ratio:.2f}x")


if __name__ == "__main__":
    main()
