"""Embedded (SQLite) store figures: sustained ingest and a one-home 24 h query, each with a baseline.

Run: ``python bench/ingest_sqlite.py`` (``--homes``, ``--batch``).  ``bench/ingest.py`` (owned by the
InfluxDB engineer) calls ``bench_sqlite_ingest`` / ``bench_sqlite_query`` for its parts (b) and (c).

Baselines, measured in the same run on the same disk: plain ``executemany`` of the same rows into a
bare rowid table (what SQLite itself costs, without upsert, merge or the event-loop hand-off), and
the bare ``SELECT ... fetchall`` of the same rows for the query.  Goals (issue 5): ingest >= 50k
points/s, the query < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

from pipeline.points import Point  # noqa: E402
from pipeline.query import SeriesQuery, datetime_to_ns  # noqa: E402
from pipeline.sqlite_store import SQLiteStore  # noqa: E402

DAY0 = datetime(2026, 1, 1, tzinfo=UTC)
STEP_S = 10
PER_DAY = 86400 // STEP_S


def home_points(home: int, day: int = 0) -> list[Point]:
    """One home, one day at 10 s: meter, PV, battery (the devices a query for one home touches)."""
    hh = f"hh-{home:05d}"
    base = datetime_to_ns(DAY0 + timedelta(days=day))
    out: list[Point] = []
    for i in range(PER_DAY):
        ts = base + i * STEP_S * 1_000_000_000
        out.append(
            Point(
                "electricity",
                hh,
                "meter",
                "echonet",
                ts,
                {"power_w": 400.0 + i % 700, "import_wh_total": 1e6 + i, "export_wh_total": 5e5 + i / 2},
            )
        )
        out.append(Point("pv", hh, "inverter", "modbus", ts, {"power_w": float(i % 3000), "running": True}))
        out.append(Point("battery", hh, "battery", "modbus", ts, {"power_w": -500.0, "soc_pct": 55.5}))
    return out


@dataclass
class IngestResult:
    points: int
    seconds: float
    baseline_seconds: float

    @property
    def rate(self) -> float:
        return self.points / self.seconds

    @property
    def baseline_rate(self) -> float:
        return self.points / self.baseline_seconds


async def _ingest(store: SQLiteStore, points: list[Point], batch: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(points), batch):
        await store.write(points[i : i + batch])
    return time.perf_counter() - t0


def _baseline_ingest(path: Path, points: list[Point], batch: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE t (h TEXT, m TEXT, ts INTEGER, d TEXT, s TEXT, a REAL, b REAL, c REAL)")
    t0 = time.perf_counter()
    for i in range(0, len(points), batch):
        rows = []
        for p in points[i : i + batch]:
            vals = [*p.fields.values(), None, None][:3]
            rows.append((p.household, p.measurement, p.ts_ns, p.device, p.source, *vals))
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def bench_sqlite_ingest(directory: str | os.PathLike[str], homes: int = 4, batch: int = 5000) -> IngestResult:
    """Write ``homes`` homes x one day (3 devices at 10 s) through ``SQLiteStore.write``."""
    directory = Path(directory)
    points = [p for h in range(homes) for p in home_points(h)]
    store = SQLiteStore(directory / "bench.sqlite")

    async def run() -> float:
        try:
            return await _ingest(store, points, batch)
        finally:
            await store.close()

    seconds = asyncio.run(run())
    baseline = _baseline_ingest(directory / "baseline.sqlite", points, batch)
    return IngestResult(len(points), seconds, baseline)


@dataclass
class QueryResult:
    rows: int
    median_ms: float
    baseline_median_ms: float


def bench_sqlite_query(path: str | os.PathLike[str], home: int = 0, repeats: int = 7) -> QueryResult:
    """24 h of one home's meter power at 10 s resolution (8,640 rows) from a store filled by
    ``bench_sqlite_ingest``; median over ``repeats``."""
    hh = f"hh-{home:05d}"
    q = SeriesQuery((hh,), "electricity", ("power_w", "import_wh_total"), DAY0, DAY0 + timedelta(days=1))
    store = SQLiteStore(path)

    async def run() -> tuple[int, list[float]]:
        times = []
        rows = 0
        try:
            for _ in range(repeats):
                t0 = time.perf_counter()
                df = await store.query(q)
                times.append((time.perf_counter() - t0) * 1000)
                rows = df.height
        finally:
            await store.close()
        return rows, times

    rows, times = asyncio.run(run())
    conn = sqlite3.connect(path)
    base_times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        conn.execute(
            "SELECT ts_ns, household, device, power_w, import_wh_total FROM points "
            "WHERE household = ? AND measurement = ? AND ts_ns >= ? AND ts_ns < ?",
            (hh, "electricity", q.start_ns, q.stop_ns),
        ).fetchall()
        base_times.append((time.perf_counter() - t0) * 1000)
    conn.close()
    return QueryResult(rows, statistics.median(times), statistics.median(base_times))


def bench_pipeline(directory: str | os.PathLike[str], readings: int = 50_000) -> tuple[float, float]:
    """Readings/s through ``Pipeline.submit`` (validation, counters, batching, spool-backed writer)
    into SQLite, and points/s of ``SQLiteStore.write`` alone for the same points (the baseline)."""
    from collector.reading import Reading
    from pipeline.counters import CounterStateFile
    from pipeline.spool import Spool
    from pipeline.writer import Pipeline

    directory = Path(directory)
    homes = 10
    per_home = readings // homes
    rs = [
        Reading(
            f"hh-{h:05d}",
            "meter",
            "electricity",
            DAY0 + timedelta(seconds=STEP_S * i),
            {"power_w": float(i % 900), "import_wh_total": 1e6 + i},
        )
        for h in range(homes)
        for i in range(per_home)
    ]

    async def run() -> tuple[float, float]:
        store = SQLiteStore(directory / "pipeline.sqlite")
        p = Pipeline(
            store,
            spool=Spool(directory / "spool"),
            counter_state=CounterStateFile(directory / "state.sqlite"),
            max_delay=0.2,
        )
        await p.start()
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        await asyncio.gather(*(p.submit(rs[k : k + 500], now=now) for k in range(0, len(rs), 500)))
        await p.flush()
        pipeline_s = time.perf_counter() - t0
        await p.close()
        await store.close()
        base_store = SQLiteStore(directory / "pipeline-baseline.sqlite")
        pts = [
            Point("electricity", r.household, r.device, "echonet", datetime_to_ns(r.ts_utc), r.fields)
            for r in rs
        ]
        base_s = await _ingest(base_store, pts, 5000)
        await base_store.close()
        return len(rs) / pipeline_s, len(pts) / base_s

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--homes", type=int, default=4)
    ap.add_argument("--batch", type=int, default=5000)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        ing = bench_sqlite_ingest(tmp, args.homes, args.batch)
        print(
            f"sqlite ingest: {ing.rate:,.0f} points/s ({ing.points:,} points, batch {args.batch}); "
            f"baseline bare executemany {ing.baseline_rate:,.0f} points/s; "
            f"ratio {ing.rate / ing.baseline_rate:.2f} "
            f"(goal >= 50,000 points/s)"
        )
        qr = bench_sqlite_query(Path(tmp) / "bench.sqlite")
        print(
            f"sqlite query 24 h @10 s one home: {qr.median_ms:.1f} ms median ({qr.rows:,} rows); "
            f"baseline bare SELECT fetchall {qr.baseline_median_ms:.1f} ms; "
            f"ratio {qr.median_ms / qr.baseline_median_ms:.2f} (goal < 50 ms)"
        )
        rate, base = bench_pipeline(tmp)
        print(
            f"pipeline submit->SQLite: {rate:,.0f} readings/s (2 fields + raw counter each); "
            f"baseline SQLiteStore.write alone {base:,.0f} points/s; ratio {rate / base:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
