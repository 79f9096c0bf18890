"""The access database on SQLite and on PostgreSQL, same run: what a fleet's PostgreSQL must carry.

    python -m bench.access_db [--records 3000] [--concurrency 200] [--households 10000]
                              [--world-only] [--postgresql-only]

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
   snapshot's whole rebuild (every fact read and indexed: what a replica does at start, and on SQLite
   after a relationship change): the baseline of item 4.
4. A suspension made through one replica (the API's ``ConsentStore`` in this process): until another
   replica, a separate process holding its own Authorizer over the same database, refuses the request
   it allowed (SQLite: the change counter polled every 1 s; PostgreSQL: the announcement names the
   household, only its slice is re-read), and until the writing replica's own Authorizer refuses
   (PostgreSQL: a fence round trip, then the slice).  Each replica's whole and per-household rebuilds
   are counted (``Authorizer.builds``).  Both processes set the garbage collector up as ``hems serve``
   does once started (``gc.freeze()`` of what was built, its young-generation threshold).

``--world-only`` skips items 1-2; ``--postgresql-only`` skips SQLite in items 3-4.  The world is
written into a SQLite file and copied to PostgreSQL by ``hems access migrate`` (written one principal
at a time over the network it took ~10 ms a home on this machine: 16 minutes for 100,000).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from access.api.state import STATE, AppState
from access.app import make_app
from access.compiler import Policy, compile_seeds
from access.consent import ConsentStore
from access.db import AccessDb
from access.db_migrate import migrate
from access.decision import Authorizer
from access.ledger import Ledger
from access.relationships import TABLES as RELATIONSHIP_TABLES
from access.relationships import RelationshipStore
from access.request import AccessRequest
from bench.authz import populate
from hems.serve import GC_THRESHOLDS
from pipeline.sqlite_store import SQLiteStore
from seeds.loader import load_seeds
from tests.pg_server import PgServer

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


def world(db: Path, households: int, now: float) -> float:
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
    """Median time to rebuild the whole policy snapshot from the database (every fact read and indexed)."""
    rel, consent = RelationshipStore(db, policy.seeds), ConsentStore(db, policy.seeds)
    authz = Authorizer(policy, rel, consent)
    times = []
    for _ in range(rounds):
        authz._sliced = None  # as at a start: every household's facts read and indexed again
        t0 = time.perf_counter()
        authz.snapshot(now)
        times.append(time.perf_counter() - t0)
    rel.close()
    consent.close()
    return statistics.median(times) * 1000


def replica(db: AccessDb, household: str, installer: str) -> None:
    """The other replica (``--replica``, a separate process): its own Authorizer over ``db``; for each
    line ``refused|allowed <wall clock of the commit> <decision instant>`` on stdin, it decides until
    the answer is that, then prints the milliseconds since the commit and its rebuild counts."""
    policy = compile_seeds(load_seeds())
    rel, consent = RelationshipStore(db, policy.seeds), ConsentStore(db, policy.seeds)
    authz = Authorizer(policy, rel, consent, poll_seconds=1.0)
    t0 = time.perf_counter()
    authz.snapshot()
    took = time.perf_counter() - t0
    settle_gc()
    print(f"ready {took * 1000:.0f}", flush=True)
    for line in sys.stdin:
        want, committed, at = line.split()
        t = float(at)
        request = AccessRequest(installer, household, "pv", "read", PV, (t - 1800, t))
        while authz.decide(request, at=t).allowed != (want == "allowed"):
            time.sleep(0.001)
        print(
            f"{(time.time() - float(committed)) * 1000:.1f} {authz.builds['whole']} "
            f"{authz.builds['households']}",
            flush=True,
        )


def settle_gc() -> None:
    """What ``hems serve`` does once started: what was built (the snapshot) out of the collector's
    sight, and its young-generation threshold."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def propagation_ms(db: AccessDb, policy: Policy, now: float, trials: int = 5) -> dict[str, list[float]]:
    """A suspension made through this process's ``ConsentStore`` (one replica): until another process's
    Authorizer (another replica) refuses, and until this process's own Authorizer over the writing store
    refuses; then lifted, and the next trial asks for a later hour."""
    seeds = policy.seeds
    rel, consent = RelationshipStore(db, seeds), ConsentStore(db, seeds)
    own = Authorizer(policy, rel, consent, poll_seconds=1.0)
    # A home whose installer may read its PV now (the world suspends something in every 97th home).
    installers = {lk.household: lk.principal for lk in rel.facts().links if lk.role == "installer"}
    request = next(
        r
        for r in (
            AccessRequest(installer, household, "pv", "read", PV, (now - 1800, now))
            for household, installer in sorted(installers.items())
        )
        if own.decide(r, at=now).allowed
    )
    household, installer = request.household, request.principal
    settle_gc()
    other = subprocess.Popen(
        [sys.executable, "-m", "bench.access_db", "--replica", str(db), household, installer],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ,
    )
    assert other.stdin is not None and other.stdout is not None
    out: dict[str, list[float]] = {"other": [], "own": [], "other_start": [], "counts": []}
    try:
        ready = other.stdout.readline().split()
        out["other_start"].append(float(ready[1]))

        def ask_other(want: str, committed: float, at: float) -> float:
            assert other.stdin is not None and other.stdout is not None
            other.stdin.write(f"{want} {committed} {at}\n")
            other.stdin.flush()
            ms, whole, households = other.stdout.readline().split()
            out["counts"] = [float(whole), float(households)]
            return float(ms)

        ask_other("allowed", time.time(), now)
        for _ in range(trials):
            assert own.decide(request, at=now).allowed
            time.sleep(0.3)  # somewhere in the poll interval
            s = consent.suspend(household, "provision", recipient=installer, at=now - 900)
            committed, t0 = time.time(), time.perf_counter()
            while own.decide(request, at=now).allowed:
                time.sleep(0.001)
            out["own"].append((time.perf_counter() - t0) * 1000)
            out["other"].append(ask_other("refused", committed, now))
            consent.lift(s.id, at=now - 600)
            # the lifted suspension still keeps out its quarter hour; the next trial asks a later hour
            now += 7200
            request = AccessRequest(installer, household, "pv", "read", PV, (now - 1800, now))
            ask_other("allowed", time.time(), now)
    finally:
        other.stdin.close()
        other.wait(timeout=30)
        rel.close()
        consent.close()
    out["own_counts"] = [float(own.builds["whole"]), float(own.builds["households"])]
    return out


def main() -> None:
    if sys.argv[1:2] == ["--replica"]:
        replica(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--households", type=int, default=10_000)
    parser.add_argument("--world-only", action="store_true", help="skip the ledger (items 1-2)")
    parser.add_argument("--postgresql-only", action="store_true", help="no SQLite world (items 3-4)")
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
        if not args.world_only:
            ledger_rows(server, tmp, policy, args.records, args.concurrency)
        h = args.households
        lite_world = tmp / "world.sqlite"
        took = world(lite_world, h, now)
        pg_world = server.create_database("world")
        t0 = time.perf_counter()
        migrate(lite_world, pg_world, key_file=tmp / "world.key")
        moved = time.perf_counter() - t0
        print(f"\n3. {h} homes (bench.authz's world)")
        print(
            f"  populate a SQLite file (one write per principal) {took:.1f} s; "
            f"copied to PostgreSQL (hems access migrate) {moved:.1f} s"
        )
        worlds: dict[str, AccessDb] = {"PostgreSQL": pg_world}
        if not args.postgresql_only:
            worlds = {"SQLite": lite_world, **worlds}
        for name, db in worlds.items():
            tables = RELATIONSHIP_TABLES
            size = sqlite_bytes(Path(db), tables) if name == "SQLite" else pg_bytes(str(db), tables)
            print(
                f"  {name:<10} relationships per home {size / h:5.0f} bytes; "
                f"whole snapshot rebuild (every fact read and indexed) {rebuild_ms(db, policy, now):7.0f} ms"
            )
        print(
            "\n4. suspension through one replica (5 trials): refused by another replica (a separate "
            "process), and by the writing replica's own Authorizer"
        )
        for name, db in worlds.items():
            how = "counter polled every 1 s" if name == "SQLite" else "NOTIFY names the household"
            r = propagation_ms(db, policy, now)
            print(
                f"  {name:<10} ({how}): other replica median {statistics.median(r['other']):6.0f} ms, "
                f"max {max(r['other']):6.0f} ms; writer median {statistics.median(r['own']):6.0f} ms, "
                f"max {max(r['own']):6.0f} ms"
            )
            print(
                f"             the other replica's start (whole build) {r['other_start'][0]:.0f} ms; its "
                f"rebuilds: {int(r['counts'][0])} whole, {int(r['counts'][1])} of households; the writer's: "
                f"{int(r['own_counts'][0])} whole, {int(r['own_counts'][1])} of households"
            )
        print(f"\nload after: {os.getloadavg()[0]:.2f} (1 min)")
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def ledger_rows(server: PgServer, tmp: Path, policy: Policy, n: int, c: int) -> None:
    """Items 1 and 2: the provision ledger on SQLite and on PostgreSQL with one and two replicas."""
    key = tmp / "hems.key"
    rows: dict[str, dict[str, float]] = {}
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


if __name__ == "__main__":
    main()
