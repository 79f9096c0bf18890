"""The access database on SQLite and on PostgreSQL, same run: what a fleet's PostgreSQL must carry.

    python -m bench.access_db [--records 3000] [--concurrency 200] [--households 10000]

PostgreSQL's server binaries come from ``$PG_BIN`` or Debian's package (``scripts/ci_postgres.sh``); a
throwaway server is started in a temporary directory with fsync on (durable, as deployed), on
loopback, as ``nobody`` when run as root (``tests.pg_server``).  The SQLite file is the baseline, in
the same run, on the same disk.

1. Provision ledger, group commit through real apps (``AppState.record_provision``: what the API does
   for every third-party response), ``--concurrency`` callers: SQLite file; PostgreSQL with one app;
   PostgreSQL with two apps (two replicas' ledger writers, one chain, appends serialized by the
   ledger's advisory lock).  Records/s, transactions, p50/p99 of one provision.
2. Bytes per ledger record (table and its indexes).
3. ``--households`` homes of ``bench.authz``'s world: bytes per home of relationships, and the policy
   snapshot's rebuild (every replica rebuilds it when relationships or consent change).
4. A suspension written by another connection: until this process hears of it (SQLite: its change
   counter, read by a poll every 1 s; PostgreSQL: NOTIFY), and until an Authorizer's decision changes
   (the news, then a rebuild of the whole policy snapshot: item 3's figure).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from access.api.state import STATE, AppState
from access.app import make_app
from access.compiler import Policy, compile_seeds
from access.consent import ConsentStore
from access.db import AccessDb
from access.decision import Authorizer
from access.ledger import Ledger
from access.relationships import TABLES as RELATIONSHIP_TABLES
from access.relationships import RelationshipStore
from access.request import AccessRequest
from bench.authz import populate
from pipeline.sqlite_store import SQLiteStore
from seeds.loader import load_seeds

PV = "sps.pv_after_maintenance"
CLAUSES = ("sps-2.2.4",)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def ledger_group_commit(
    db: AccessDb, store_path: Path, key: Path, policy: Policy, n: int, concurrency: int, replicas: int
) -> dict[str, float]:
    """``n`` provisions by ``concurrency`` callers spread over ``replicas`` apps on one database."""
    store = SQLiteStore(store_path)
    apps = [
        make_app(store, db, policy=policy, rate_per_s=None, web_views=False, key_file=key)
        for _ in range(replicas)
    ]
    states: list[AppState] = [app[STATE] for app in apps]
    for app in apps:
        app.freeze()
        await app.startup()
    commits0 = sum(s.ledger.commits for s in states)
    latencies: list[float] = []

    async def caller(c: int) -> None:
        state = states[c % replicas]
        for i in range(c, n, concurrency):
            t0 = time.perf_counter()
            await state.record_provision(f"inst{i % 7}", f"h{i % 13}", ("pv",), 0.0, 3600.0, PV, CLAUSES)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(concurrency)))
    elapsed = time.perf_counter() - t0
    transactions = sum(s.ledger.commits for s in states) - commits0
    result = states[0].ledger.verify()
    assert result.ok and result.rows == n, result
    for app in apps:
        await app.shutdown()
        await app.cleanup()
    await store.close()
    return {
        "rate": n / elapsed,
        "transactions": transactions,
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
    }


def sqlite_bytes(path: Path, tables: tuple[str, ...]) -> int:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        names = ", ".join("?" * len(tables))
        indexes = [
            r[0] for r in conn.execute(f"SELECT name FROM sqlite_master WHERE tbl_name IN ({names})", tables)
        ]
        marks = ", ".join("?" * len(indexes))
        return int(
            conn.execute(f"SELECT sum(pgsize) FROM dbstat WHERE name IN ({marks})", indexes).fetchone()[0]
        )
    finally:
        conn.close()


def pg_bytes(url: str, tables: tuple[str, ...]) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for t in tables:
            conn.execute(f"VACUUM ANALYZE {t}")
        total = 0
        for t in tables:
            row = conn.execute("SELECT pg_total_relation_size(%s)", (t,)).fetchone()
            total += int(row[0]) if row else 0
        return total


def world(db: AccessDb, households: int, now: float) -> float:
    """Populate ``bench.authz``'s world; seconds it took."""
    seeds = load_seeds()
    rel, consent = RelationshipStore(db, seeds), ConsentStore(db, seeds)
    t0 = time.perf_counter()
    populate(rel, consent, households, now)
    took = time.perf_counter() - t0
    rel.close()
    consent.close()
    return took


def rebuild_ms(db: AccessDb, policy: Policy, now: float, rounds: int = 3) -> float:
    """Median time to rebuild the policy snapshot from the database (what a change costs each replica)."""
    rel, consent = RelationshipStore(db, policy.seeds), ConsentStore(db, policy.seeds)
    authz = Authorizer(policy, rel, consent)
    times = []
    for _ in range(rounds):
        authz._snap = None  # as after a relationship change: every household's relationships read again
        authz._relationship_facts = None
        t0 = time.perf_counter()
        authz.snapshot(now)
        times.append(time.perf_counter() - t0)
    rel.close()
    consent.close()
    return statistics.median(times) * 1000


def propagation_ms(
    db: AccessDb, policy: Policy, now: float, trials: int = 5
) -> tuple[list[float], list[float]]:
    """A suspension made through one connection (another replica): until this process's change version
    moved (the news arrived), and until this Authorizer refuses (the news, then a snapshot rebuilt)."""
    seeds = policy.seeds
    rel, consent = RelationshipStore(db, seeds), ConsentStore(db, seeds)
    authz = Authorizer(policy, rel, consent, poll_seconds=1.0)
    other = ConsentStore(db, seeds)
    # A home whose installer may read its PV now (the world suspends something in every 97th home).
    installers = {lk.household: lk.principal for lk in rel.facts().links if lk.role == "installer"}
    request = next(
        r
        for r in (
            AccessRequest(installer, household, "pv", "read", PV, (now - 86400, now))
            for household, installer in sorted(installers.items())
        )
        if authz.decide(r, at=now).allowed
    )
    household, installer = request.household, request.principal
    heard, refused = [], []
    for _ in range(trials):
        assert authz.decide(request, at=now).allowed
        time.sleep(0.3)  # somewhere in the poll interval
        v0 = consent.data_version()
        s = other.suspend(household, "provision", recipient=installer, at=now - 3600)
        t0 = time.perf_counter()
        while consent.data_version() == v0:
            time.sleep(0.001)
        heard.append((time.perf_counter() - t0) * 1000)
        while authz.decide(request, at=now).allowed:
            time.sleep(0.001)
        refused.append((time.perf_counter() - t0) * 1000)
        other.lift(s.id, at=now - 1800)
        # the lifted suspension still keeps out its hour; the next trial asks for a later hour
        now += 7200
        request = AccessRequest(installer, household, "pv", "read", PV, (now - 1800, now))
        while not authz.decide(request, at=now).allowed:
            time.sleep(0.001)
    for store in (rel, consent, other):
        store.close()
    return heard, refused


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--households", type=int, default=10_000)
    parser.add_argument(
        "--dir", default=None, help="where the SQLite files and the server go (default: temp)"
    )
    args = parser.parse_args()
    from tests.pg_server import find_pg_bin, start_pg_server

    bin_dir, reason = find_pg_bin()
    if bin_dir is None:
        raise SystemExit(f"PostgreSQL not available: {reason}")
    policy = compile_seeds(load_seeds())
    now = time.time()
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
    server = start_pg_server(bin_dir, durable=True)
    os.environ["PGPASSWORD"] = server.password
    tmp = Path(tempfile.mkdtemp(prefix="bench-access-db-", dir=args.dir))
    try:
        key = tmp / "hems.key"
        rows: dict[str, dict[str, float]] = {}
        n, c = args.records, args.concurrency
        lite = tmp / "ledger.sqlite"
        rows["SQLite file"] = asyncio.run(ledger_group_commit(lite, tmp / "s.sqlite", key, policy, n, c, 1))
        one = server.create_database("ledger_one")
        rows["PostgreSQL, 1 replica"] = asyncio.run(
            ledger_group_commit(one, tmp / "s.sqlite", key, policy, n, c, 1)
        )
        two = server.create_database("ledger_two")
        rows["PostgreSQL, 2 replicas"] = asyncio.run(
            ledger_group_commit(two, tmp / "s.sqlite", key, policy, n, c, 2)
        )
        print(f"\n1. provision ledger, group commit, {n} records, {c} concurrent callers")
        for name, r in rows.items():
            print(
                f"  {name:<24} {r['rate']:8.0f} records/s  {int(r['transactions']):5d} transactions "
                f"({n / r['transactions']:.1f} records each)  "
                f"p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms"
            )
        ledger_tables = ("provision_ledger",)
        lite_b = sqlite_bytes(lite, ledger_tables) / n
        pg_b = pg_bytes(one, ledger_tables) / n
        print(f"\n2. bytes per ledger record (table + indexes): SQLite {lite_b:.0f}, PostgreSQL {pg_b:.0f}")
        assert Ledger(one, key_file=key).verify().ok

        h = args.households
        lite_world = tmp / "world.sqlite"
        pg_world = server.create_database("world")
        t_lite, t_pg = world(lite_world, h, now), world(pg_world, h, now)
        per_home_lite = sqlite_bytes(lite_world, RELATIONSHIP_TABLES) / h
        per_home_pg = pg_bytes(pg_world, RELATIONSHIP_TABLES) / h
        print(f"\n3. {h} homes (bench.authz's world)")
        print(
            f"  relationships per home:  SQLite {per_home_lite:.0f} bytes, PostgreSQL {per_home_pg:.0f} bytes"
        )
        print(f"  populate (one write per principal): SQLite {t_lite:.1f} s, PostgreSQL {t_pg:.1f} s")
        print(
            f"  policy snapshot rebuild: SQLite {rebuild_ms(lite_world, policy, now):.0f} ms, "
            f"PostgreSQL {rebuild_ms(pg_world, policy, now):.0f} ms"
        )
        print("\n4. suspension by another connection: news heard, then refused by an Authorizer (5 trials)")
        for name, (heard, refused) in (
            ("SQLite, change counters polled every 1 s", propagation_ms(lite_world, policy, now)),
            ("PostgreSQL, NOTIFY", propagation_ms(pg_world, policy, now)),
        ):
            print(
                f"  {name:<41} heard: median {statistics.median(heard):5.0f} ms; refused: median "
                f"{statistics.median(refused):5.0f} ms, max {max(refused):5.0f} ms"
            )
        print(f"\nload after: {os.getloadavg()[0]:.2f} (1 min)")
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
