"""Ingest figures for issue 5, each printed next to a baseline measured in the same run.

(a) line protocol: ``pipeline.lineproto.LineEncoder.encode`` of the column buffers the pipeline fills
    (``ColumnBatch``) vs influxdb-client's ``Point(...).to_line_protocol()`` on the same points
    (default 1M), batch by batch, interleaved so both see the same machine load, in CPU time of this
    process (polars' threads included; wall-clock ratios printed next to it).  Filling the buffers
    from the points' fields is timed too, with its own ratio.  Goal (issue 20): >= 10x on the
    headline, fleet traffic (2,000 homes time-ordered, 6-8 fields of floats, ints and bools per point).
    Also printed: points as the collector sends them (1.8 fields; counters each minute, so a series
    alternates between two field sets) and whole home-days (every series sends the same fields).
    Measured at 1M points on the shared 2-core machine (issue 20's second session, three runs; CPU
    ratios, lower under load): fleet 11.1-12.2x, collector 9.6-10.9x, home-days 10.6-12.2x; the code
    before, run after two of them: 9.4-9.9x, 8.2-9.6x, 8.5-10.3x (quiet: 9.1-10.1x, 8.7x, 9.1x).
(b) sustained ingest: ``InfluxStore.write`` into a real influxd (goal >= 100k points/s; baseline:
    influxdb-client's own async write API fed ``Point`` objects) and ``SQLiteStore.write`` (goal >=
    50k points/s; ``bench/ingest_sqlite.py``, baseline bare ``executemany``).
(c) one home, 24 h at 10 s (8,640 rows x 2 fields): ``store.query`` median on both stores (goal <
    50 ms embedded; baselines: the bare server/SQLite fetch of the same rows).
(d) fleet readings through ``Pipeline.submit`` into ``InfluxStore`` and a real influxd, at 1.8 and 7.3
    fields a reading, next to the server alone on the same points (pre-encoded bodies, only sent; the
    two alternate in three rounds); goal >= 70% of the server alone at both shapes.  Both sides make
    their HTTP client before their clock starts.  On a shared 2-core machine the server alone's own
    rate swings with what else runs (the same code measured 122k-222k points/s at 1.8 fields within
    minutes), so read the ratio of several runs, each next to its own baseline.  Measured in five runs
    with another helper's benchmarks on the machine (load average 1.2-3.4): 1.8 fields 70-84% (median
    72%; pipeline 2.9-3.4 us of CPU a point), 7.3 fields 73-102% (median 94%); the code before, run
    between them: 68-71% (3.1-3.6 us) and 76-90%.

Run from the repository root: ``python -m bench.ingest`` (``--points``, ``--influx-points``,
``--influx-batch``, ``--influx-in-flight``, ``--gzip``, ``--no-influx``, ``--only a``).  The InfluxDB
parts are skipped with a message when no influxd binary is found (see ``scripts/influxdb.sh``).
The machine is shared and noisy, so read the ratios rather than the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT))
sys.path.insert(0, str(_ROOT / "bench"))

from influxdb_client import Point as ClientPoint  # noqa: E402
from influxdb_client import WritePrecision  # noqa: E402
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync  # noqa: E402
from influxdb_client.service.write_service import WriteService  # noqa: E402
from ingest_sqlite import DAY0, bench_sqlite_ingest, bench_sqlite_query, home_points  # noqa: E402

from collector.reading import FieldValue, Reading  # noqa: E402
from common import heap  # noqa: E402
from pipeline.columns import ColumnBatch  # noqa: E402
from pipeline.counters import CounterTracker  # noqa: E402
from pipeline.influx_store import CSV_DIALECT, InfluxStore, build_flux  # noqa: E402
from pipeline.lineproto import LineEncoder  # noqa: E402
from pipeline.points import Point  # noqa: E402
from pipeline.query import SeriesQuery, datetime_to_ns  # noqa: E402
from pipeline.validate import Validator  # noqa: E402
from pipeline.writer import Pipeline  # noqa: E402

BATCH = 5000
WRITE_CALL = 100_000
# (d): gateways' uploads of 2,500 readings, 64 waiting for their acknowledgement at once; a pipeline batch
# is PIPELINE_CHUNKS store chunks and WRITE_CONCURRENCY batches are written at once (the next one's chunks
# go out while the last ones of the batch before are in flight); the store keeps its 3 requests in flight
# in all, as the server-alone side does.  (Measured with 8-chunk batches one at a time: no request in
# flight a third of the time, between batches and while the first one filled; with these, 5%.)
SUBMIT, SUBMITTERS = 2500, 64
PIPELINE_CHUNKS, WRITE_CONCURRENCY = 2, 3
ROUNDS = 3  # (d): the pipeline and the server alone take turns, each on a third of the readings


def dataset(n: int) -> list[Point]:
    """``n`` points of whole home-days (meter, PV, battery at 10 s; floats plus one flag)."""
    out: list[Point] = []
    home = 0
    while len(out) < n:
        out.extend(home_points(home))
        home += 1
    return out[:n]


def collector_dataset(n: int, homes: int = 2000) -> list[Point]:
    """``n`` points as the collector sends them: every home's devices each 10 s tick, time-ordered,
    with the cumulative counters only on every sixth tick (they are polled each minute), so each
    series alternates between two sets of fields."""
    out: list[Point] = []
    base = 1_780_000_000 * 1_000_000_000
    tick = 0
    while len(out) < n:
        ts = base + tick * 10_000_000_000
        counters = tick % 6 == 0
        for home in range(homes):
            hh = f"hh-{home:05d}"
            meter: dict[str, float] = {"power_w": 400.0 + (tick + home) % 700}
            pv: dict[str, float | bool] = {"power_w": float((tick * 7 + home) % 3000), "running": True}
            if counters:
                meter |= {"import_wh_total": 1e6 + tick, "export_wh_total": 5e5 + tick / 2}
                pv["energy_wh_total"] = 2e6 + tick
            out.append(Point("electricity", hh, "meter", "echonet", ts, meter))
            out.append(Point("pv", hh, "inverter", "modbus", ts, pv))
            out.append(Point("battery", hh, "battery", "echonet", ts, {"power_w": -500.0, "soc_pct": 55.5}))
        tick += 1
    return out[:n]


def fleet_dataset(n: int, homes: int = 2000) -> list[Point]:
    """``n`` points of fleet traffic, the headline: every home's meter (6 fields), inverter (8) and
    battery (6) each 10 s tick, time-ordered across ``homes`` homes; floats, ints (counters in Wh) and
    bools (status flags), as a fleet's collectors send them."""
    out: list[Point] = []
    base = 1_780_000_000 * 1_000_000_000
    tick = 0
    while len(out) < n:
        ts = base + tick * 10_000_000_000
        for home in range(homes):
            hh = f"hh-{home:05d}"
            k = tick * 7 + home
            meter: dict[str, float | int | bool] = {
                "power_w": 400.0 + k % 700 + 0.25,
                "voltage_v": 101.5 + k % 7 / 10,
                "current_a": 4.1 + k % 13 / 100,
                "frequency_hz": 50.0 + k % 3 / 100,
                "import_wh_total": 1_000_000 + tick * 3 + home,
                "export_wh_total": 500_000 + tick + home,
            }
            inverter: dict[str, float | int | bool] = {
                "power_w": float(k % 3000),
                "energy_wh_total": 2_000_000 + tick * 8 + home,
                "running": k % 11 != 0,
                "fault": k % 97 == 0,
                "temperature_c": 35.5 + k % 20 / 10,
                "voltage_v": 320.25 + k % 9,
                "current_a": 8.0 + k % 17 / 8,
                "frequency_hz": 50.01,
            }
            battery: dict[str, float | int | bool] = {
                "power_w": -500.0 + k % 1000,
                "soc_pct": 55.5 + k % 40 / 2,
                "charge_wh_total": 300_000 + tick + home,
                "discharge_wh_total": 280_000 + tick + home,
                "temperature_c": 24.5 + k % 10 / 10,
                "running": True,
            }
            out.append(Point("electricity", hh, "meter", "echonet", ts, meter))
            out.append(Point("pv", hh, "inverter", "modbus", ts, inverter))
            out.append(Point("battery", hh, "battery", "echonet", ts, battery))
        tick += 1
    return out[:n]


def fleet_readings(n: int, *, wide: bool, homes: int = 2000) -> list[Reading]:
    """``n`` readings as a fleet's collectors emit them, time-ordered across ``homes`` homes, ending
    now.  ``wide``: meter 7 fields, inverter 8, battery 7 (7.3 a reading, 9 once the counters' raw
    values are added); else as the collector polls today: meter power (+ 2 counters each minute),
    inverter power and state (+ energy each minute), battery power and charge (1.8 a reading)."""
    ticks = -(-n // (3 * homes))
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=10 * ticks + 60)
    out: list[Reading] = []
    for tick in range(ticks):
        ts = start + timedelta(seconds=10 * tick)
        minute = tick % 6 == 0
        for home in range(homes):
            hh = f"hh-{home:05d}"
            k = tick * 7 + home
            meter: dict[str, FieldValue] = {"power_w": 400.0 + k % 700 + 0.25}
            inverter: dict[str, FieldValue] = {"power_w": float(k % 3000), "running": k % 11 != 0}
            battery: dict[str, FieldValue] = {"power_w": -500.0 + k % 1000, "soc_pct": 55.5 + k % 40 / 2}
            if wide or minute:
                meter |= {"import_wh_total": 1e6 + tick * 3 + home, "export_wh_total": 5e5 + tick + home}
                inverter["energy_wh_total"] = 2e6 + tick * 8 + home
            if wide:
                meter |= {"voltage_v": 101.5 + k % 7 / 10, "current_a": 4.1 + k % 13 / 100,
                          "frequency_hz": 50.0 + k % 3 / 100, "temperature_c": 21.5}  # fmt: skip
                inverter |= {"fault": k % 97 == 0, "temperature_c": 35.5 + k % 20 / 10, "voltage_v": 320.25,
                             "current_a": 8.0 + k % 17 / 8, "frequency_hz": 50.01}  # fmt: skip
                battery |= {"charge_wh_total": 3e5 + tick + home, "discharge_wh_total": 2.8e5 + tick + home,
                            "temperature_c": 24.5 + k % 10 / 10, "running": True, "fault": False}  # fmt: skip
            out.append(Reading(hh, "meter", "electricity", ts, meter, source="echonet"))
            out.append(Reading(hh, "inverter", "pv", ts, inverter, source="modbus"))
            out.append(Reading(hh, "battery", "battery", ts, battery, source="echonet"))
    return out[:n]


def pipeline_points(readings: list[Reading]) -> list[Point]:
    """The points ``Pipeline.submit`` makes of ``readings`` (validation, counter totals and raw values)."""
    validator, counters, batch = Validator(), CounterTracker(), ColumnBatch()
    now = datetime.now(UTC)
    for r in readings:
        clean = validator.check(r, now)
        ts_ns = datetime_to_ns(clean.ts_utc)
        batch.add(
            clean.category, clean.household, clean.device, clean.source, ts_ns, counters.apply(clean, ts_ns)
        )
    return list(batch)


def client_lines(points: Sequence[Point]) -> bytes:
    lines = []
    for p in points:
        cp = ClientPoint(p.measurement).tag("household", p.household).tag("device", p.device)
        cp = cp.tag("source", p.source)
        for name, value in p.fields.items():
            cp = cp.field(name, value)
        lines.append(cp.time(p.ts_ns, WritePrecision.NS).to_line_protocol())
    return "\n".join(lines).encode()


def bench_serialize(points: list[Point], label: str = "whole home-days") -> None:
    """Our side starts where the pipeline holds a batch: in column buffers (``ColumnBatch``, which
    ``Pipeline.submit`` fills as readings arrive); the time to fill them from the points' fields is
    measured too and printed with its own ratio.  The baseline builds ``Point`` objects from the same
    fields and writes them.  Both sides are timed in CPU seconds of this process (all its threads:
    polars formats on its own) and in wall seconds: on a shared machine a thread pool waits for the
    cores others hold, which charges our side for their load."""
    enc = LineEncoder(ints_as_floats=True)
    cpu = [0.0, 0.0, 0.0]  # filling the buffers, encoding them, the baseline
    wall = [0.0, 0.0, 0.0]
    ours_bytes = theirs_bytes = 0
    # The dataset is built once and lives for the whole run; a real writer only holds its current
    # batch.  Freezing it keeps the collector from re-scanning a million live points on every
    # collection (which would be charged to whichever side happened to trigger it).
    gc.collect()
    gc.freeze()
    for i in range(0, len(points), BATCH):
        chunk = points[i : i + BATCH]
        c0, t0 = time.process_time(), time.perf_counter()
        batch = ColumnBatch(chunk)
        c1, t1 = time.process_time(), time.perf_counter()
        body = enc.encode(batch)
        c2, t2 = time.process_time(), time.perf_counter()
        ref = client_lines(chunk)
        c3, t3 = time.process_time(), time.perf_counter()
        for k, (a, b) in enumerate(((c0, c1), (c1, c2), (c2, c3))):
            cpu[k] += b - a
        for k, (a, b) in enumerate(((t0, t1), (t1, t2), (t2, t3))):
            wall[k] += b - a
        ours_bytes += len(body)
        theirs_bytes += len(ref)
        if body.count(b"\n") != ref.count(b"\n"):
            raise SystemExit("serializers disagree on the number of lines")
    gc.unfreeze()
    n = len(points)
    fill, ours, theirs = (c * 1e9 / n for c in cpu)
    print(
        f"(a) line protocol, {label}, {n:,} points in batches of {BATCH} (CPU ns/point): "
        f"LineEncoder from column buffers {ours:,.0f} ({ours_bytes / 1e6:.0f} MB); baseline "
        f"influxdb_client.Point.to_line_protocol {theirs:,.0f}; ratio {theirs / ours:.1f}x (goal >= 10x); "
        f"with filling the buffers from the points' fields (+{fill:,.0f}, done by Pipeline.submit) "
        f"{theirs / (ours + fill):.1f}x; wall-clock ratios {wall[2] / wall[1]:.1f}x and "
        f"{wall[2] / (wall[0] + wall[1]):.1f}x"
    )


async def _influx_ingest(
    url: str,
    org: str,
    bucket: str,
    token: str,
    points: list[Point],
    *,
    batch: int,
    in_flight: int,
    gzip_level: int,
) -> float:
    """``write`` calls of ``WRITE_CALL`` points (a writer batch or a spool catch-up), each split into
    pipelined chunks of ``batch`` (encoding overlaps the server's work inside one call)."""
    store = _store(url, org, bucket, token, batch=batch, in_flight=in_flight, gzip_level=gzip_level)
    await store.open()
    try:
        t0 = time.perf_counter()
        for i in range(0, len(points), WRITE_CALL):
            await store.write(points[i : i + WRITE_CALL])
        return time.perf_counter() - t0
    finally:
        await store.close()


def _store(
    url: str, org: str, bucket: str, token: str, *, batch: int, in_flight: int, gzip_level: int
) -> InfluxStore:
    """The store both ingest paths write through, configured alike so they differ only in what feeds it."""
    return InfluxStore(
        url,
        org,
        bucket,
        token,
        batch_points=batch,
        max_in_flight=in_flight,
        gzip_level=gzip_level,
        timeout_s=60,
    )


async def _pipeline_ingest(
    url: str,
    org: str,
    bucket: str,
    token: str,
    readings: list[Reading],
    *,
    batch: int,
    in_flight: int,
    gzip_level: int,
) -> float:
    """Readings through ``Pipeline.submit`` into ``InfluxStore`` as ``hems collect`` hands them over:
    calls of ``SUBMIT`` readings, ``SUBMITTERS`` waiting for their acknowledgement at once.  Each
    pipeline batch is written as store chunks, ``WRITE_CONCURRENCY`` batches at once, so encoding
    overlaps the server's work and the server is not left idle between batches."""
    store = _store(url, org, bucket, token, batch=batch, in_flight=in_flight, gzip_level=gzip_level)
    await store.open()  # (its HTTP client made before timing, as the server-alone side's is)
    now = datetime.now(UTC)
    gate = asyncio.Semaphore(SUBMITTERS)
    try:
        async with Pipeline(
            store,
            batch_size=PIPELINE_CHUNKS * batch,
            max_delay=0.2,
            store_write_timeout=60,
            write_concurrency=WRITE_CONCURRENCY,
        ) as pipeline:

            async def hand_over(chunk: list[Reading]) -> None:
                async with gate:
                    result = await pipeline.submit(chunk, now=now)
                    if result.rejected:
                        raise SystemExit(f"the pipeline rejected readings: {result.rejected[:3]}")

            async def end_of_input() -> None:
                """Once every reading is taken in, the last, partial batch is written at once, as a
                producer that has no more would flush; not ``max_delay`` later (a continuous
                stream has no such pause, and the server-alone side none either)."""
                while pipeline.validator.stats.accepted < len(readings):
                    await asyncio.sleep(0.01)
                await pipeline.flush()

            t0 = time.perf_counter()
            await asyncio.gather(
                end_of_input(),
                *(hand_over(readings[i : i + SUBMIT]) for i in range(0, len(readings), SUBMIT)),
            )
            return time.perf_counter() - t0
    finally:
        await store.close()


async def _client_ingest(url: str, org: str, bucket: str, token: str, points: list[Point]) -> float:
    async with InfluxDBClientAsync(url=url, token=token, org=org, enable_gzip=True, timeout=60_000) as client:
        api = client.write_api()
        t0 = time.perf_counter()
        for i in range(0, len(points), BATCH):
            chunk = points[i : i + BATCH]
            records = []
            for p in chunk:
                cp = ClientPoint(p.measurement).tag("household", p.household).tag("device", p.device)
                cp = cp.tag("source", p.source).time(p.ts_ns, WritePrecision.NS)
                for name, value in p.fields.items():
                    cp = cp.field(name, float(value) if type(value) is int else value)
                records.append(cp)
            await api.write(bucket=bucket, org=org, record=records)
        return time.perf_counter() - t0


async def _server_ceiling(
    url: str,
    org: str,
    bucket: str,
    token: str,
    points: list[Point],
    *,
    batch: int,
    in_flight: int,
    gzip_level: int,
) -> float:
    """The server alone: bodies encoded (and compressed) beforehand, untimed, with the store run's
    chunk size, compression and concurrency; then only sent."""
    enc = LineEncoder(ints_as_floats=True)
    bodies = [enc.encode(points[i : i + batch]) for i in range(0, len(points), batch)]
    extra = {}
    if gzip_level:
        bodies = [gzip.compress(b, gzip_level) for b in bodies]
        extra = {"content_encoding": "gzip"}
    async with InfluxDBClientAsync(url=url, token=token, org=org, timeout=60_000) as client:
        service = WriteService(client.api_client)
        gate = asyncio.Semaphore(in_flight)

        async def send(body: bytes) -> None:
            async with gate:
                await service.post_write_async(
                    org=org,
                    bucket=bucket,
                    body=body,
                    precision="ns",
                    content_type="text/plain; charset=utf-8",
                    **extra,
                )

        t0 = time.perf_counter()
        await asyncio.gather(*(send(b) for b in bodies))
        return time.perf_counter() - t0


async def _influx_query(
    url: str, org: str, bucket: str, token: str, repeats: int
) -> tuple[int, float, float]:
    q = SeriesQuery(
        ("hh-00000",), "electricity", ("power_w", "import_wh_total"), DAY0, DAY0 + timedelta(days=1)
    )
    store = InfluxStore(url, org, bucket, token)
    times, base = [], []
    rows = 0
    try:
        flux, params = build_flux(q, bucket)
        api = store._api().query_api()
        for _ in range(repeats):
            t0 = time.perf_counter()
            rows = (await store.query(q)).height
            t1 = time.perf_counter()
            await api.query_raw(flux, org=org, dialect=CSV_DIALECT, params=params)
            t2 = time.perf_counter()
            times.append((t1 - t0) * 1000)
            base.append((t2 - t1) * 1000)
    finally:
        await store.close()
    return rows, statistics.median(times), statistics.median(base)


def bench_influx(
    n_points: int, baseline_points: int, *, batch: int, in_flight: int, gzip_level: int, parts: str
) -> None:
    from tests.influx_server import find_influxd, start_server

    binary, reason = find_influxd()
    if binary is None:
        print(f"(b)/(c)/(d) InfluxDB: SKIPPED -- no influxd binary ({reason})")
        return
    server = start_server(binary)
    try:
        if "d" in parts:
            bench_pipeline(server, n_points, batch=batch, in_flight=in_flight, gzip_level=gzip_level)
        if "b" not in parts:
            return
        for name in ("bench", "bench_gzip_off", "bench_baseline", "bench_ceiling", "bench_ceiling_off"):
            server.create_bucket(name)
        points = dataset(n_points)

        def timed(run: Callable[..., Awaitable[float]], bucket: str, level: int) -> float:
            """Seconds for ``run`` (``_influx_ingest`` or ``_server_ceiling``) over all the points."""
            return asyncio.run(
                run(
                    server.url,
                    server.org,
                    bucket,
                    server.token,
                    points,
                    batch=batch,
                    in_flight=in_flight,
                    gzip_level=level,
                )
            )

        seconds = timed(_influx_ingest, "bench", gzip_level)
        base_points = points[:baseline_points]
        base_seconds = asyncio.run(
            _client_ingest(server.url, server.org, "bench_baseline", server.token, base_points)
        )
        ceiling_seconds = timed(_server_ceiling, "bench_ceiling", gzip_level)
        rate, base_rate = len(points) / seconds, len(base_points) / base_seconds
        ceiling = len(points) / ceiling_seconds
        print(
            f"(b) InfluxDB ingest: InfluxStore.write {rate:,.0f} points/s ({len(points):,} points, "
            f"write calls of {WRITE_CALL:,}, chunks of {batch:,}, gzip level {gzip_level}, "
            f"{in_flight} in flight); baseline influxdb-client async write_api with "
            f"Point objects {base_rate:,.0f} points/s ({len(base_points):,} points); "
            f"ratio {rate / base_rate:.1f}x (goal >= 100,000 points/s); server ceiling (same bodies "
            f"pre-encoded, only sent) {ceiling:,.0f} points/s, InfluxStore reaches {rate / ceiling:.0%} of it"
        )
        if gzip_level:
            # On loopback compression only moves CPU around the two cores the client and the
            # server share, so the same run without it shows what a co-located deployment gets.
            off = timed(_influx_ingest, "bench_gzip_off", 0)
            off_ceiling = timed(_server_ceiling, "bench_ceiling_off", 0)
            print(
                f"(b) same without gzip (co-located server): InfluxStore.write {len(points) / off:,.0f} "
                f"points/s; server ceiling {len(points) / off_ceiling:,.0f} points/s"
            )
        rows, median, base_median = asyncio.run(
            _influx_query(server.url, server.org, "bench", server.token, 7)
        )
        print(
            f"(c) InfluxDB query 24 h @10 s one home: InfluxStore.query {median:.1f} ms median "
            f"({rows:,} rows); "
            f"baseline bare query_raw of the same Flux {base_median:.1f} ms; "
            f"reshaping overhead {median - base_median:.1f} ms"
        )
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _cpu(pid: int | None) -> float:
    """User + system CPU seconds of a process (Linux /proc); 0 when it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_pipeline(server: Any, n_points: int, *, batch: int, in_flight: int, gzip_level: int) -> None:
    """(d): readings through ``Pipeline.submit`` into influxd, next to the server alone on the same
    points.  The two alternate in ``ROUNDS`` rounds (a third of the readings each) and each side's
    times are summed, so a change in the machine's load (it is shared) falls on both alike."""
    for label, wide in (("1.8 fields/reading", False), ("7.3 fields/reading", True)):
        readings = fleet_readings(n_points, wide=wide)
        made = pipeline_points(readings)  # one point per reading, in the same order
        fields = sum(len(r.fields) for r in readings) / len(readings)
        stored = sum(len(p.fields) for p in made) / len(made)
        tag = "wide" if wide else "narrow"
        server.create_bucket(f"pipe_{tag}")
        server.create_bucket(f"pipe_ceiling_{tag}")
        influxd = server._proc.pid if server._proc is not None else None
        seconds = [0.0, 0.0]  # the pipeline, the server alone
        cpu = [0.0, 0.0, 0.0, 0.0]  # pipeline, its influxd, sender alone, its influxd
        # As in (a): the whole data set lives for the run, where a deployment holds one batch; frozen,
        # the garbage collector does not re-scan it on every collection (charged to either side).  And
        # the collector runs with the thresholds ``hems serve`` sets after its start-up (common.heap):
        # at the default ones, the batches' row tuples cost the intake ~5% more CPU in collections.
        thresholds = gc.get_threshold()
        heap.settle()
        step = -(-len(readings) // ROUNDS)
        load = os.getloadavg()[0]
        sides: tuple[tuple[Callable[..., Awaitable[float]], Sequence[Any], str], ...] = (
            (_pipeline_ingest, readings, f"pipe_{tag}"),
            (_server_ceiling, made, f"pipe_ceiling_{tag}"),
        )
        for start in range(0, len(readings), step):
            for k, (run, data, bucket) in enumerate(sides):
                cpu0 = (_own_cpu(), _cpu(influxd))
                seconds[k] += asyncio.run(
                    run(server.url, server.org, bucket, server.token, list(data[start : start + step]),
                        batch=batch, in_flight=in_flight, gzip_level=gzip_level)
                )  # fmt: skip
                cpu[2 * k] += _own_cpu() - cpu0[0]
                cpu[2 * k + 1] += _cpu(influxd) - cpu0[1]
        piped, alone = seconds
        rate, ceiling = len(readings) / piped, len(made) / alone
        us = 1e6 / len(readings)
        print(
            f"(d) Pipeline.submit -> InfluxStore -> influxd, fleet {label} ({fields:.2f} a reading, "
            f"{stored:.2f} a stored point): {rate:,.0f} points/s ({len(readings):,} readings, submits of "
            f"{SUBMIT:,}, {SUBMITTERS} at once, batches of {PIPELINE_CHUNKS * batch:,}, {WRITE_CONCURRENCY} "
            f"written at once); server ceiling (same points pre-encoded, only sent; "
            f"{ROUNDS} rounds alternating with the pipeline's) {ceiling:,.0f} points/s; {rate / ceiling:.0%} "
            f"of it (goal >= 70%); CPU per point: pipeline {cpu[0] * us:.1f} us + influxd "
            f"{cpu[1] * us:.1f} us, "
            f"server alone: sender {cpu[2] * us:.1f} us (encoding untimed) + influxd {cpu[3] * us:.1f} us; "
            f"load average at start {load:.1f}"
        )
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def bench_sqlite(homes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ing = bench_sqlite_ingest(tmp, homes)
        print(
            f"(b) SQLite ingest: SQLiteStore.write {ing.rate:,.0f} points/s ({ing.points:,} points); "
            f"baseline bare executemany {ing.baseline_rate:,.0f} points/s; "
            f"ratio {ing.rate / ing.baseline_rate:.2f} (goal >= 50,000 points/s)"
        )
        qr = bench_sqlite_query(Path(tmp) / "bench.sqlite")
        print(
            f"(c) SQLite query 24 h @10 s one home: SQLiteStore.query {qr.median_ms:.1f} ms median "
            f"({qr.rows:,} rows); baseline bare SELECT fetchall {qr.baseline_median_ms:.1f} ms (goal < 50 ms)"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000, help="points for (a)")
    ap.add_argument("--influx-points", type=int, default=500_000, help="points for (b) InfluxStore")
    ap.add_argument("--baseline-points", type=int, default=100_000, help="points for the (b) client baseline")
    ap.add_argument("--influx-batch", type=int, default=10_000, help="InfluxStore batch_points for (b)")
    ap.add_argument("--influx-in-flight", type=int, default=3, help="InfluxStore max_in_flight for (b)")
    ap.add_argument("--gzip", type=int, default=1, help="InfluxStore gzip_level for (b) (0 = off)")
    ap.add_argument("--sqlite-homes", type=int, default=4)
    ap.add_argument("--no-influx", action="store_true", help="skip the InfluxDB parts")
    ap.add_argument("--only", choices=("a", "b", "c", "d"), default=None, help="(b) and (c) run together")
    args = ap.parse_args(argv)
    if args.only in (None, "a"):
        bench_serialize(fleet_dataset(args.points), "HEADLINE fleet traffic (2,000 homes, 6-8 fields)")
        bench_serialize(collector_dataset(args.points), "as the collector sends them (1.8 fields)")
        bench_serialize(dataset(args.points))
    if args.only in (None, "b", "c"):
        bench_sqlite(args.sqlite_homes)
    if args.only != "a":
        if args.no_influx:
            print("(b)/(c)/(d) InfluxDB: SKIPPED (--no-influx)")
        else:
            bench_influx(
                args.influx_points,
                args.baseline_points,
                batch=args.influx_batch,
                in_flight=args.influx_in_flight,
                gzip_level=args.gzip,
                parts="d" if args.only == "d" else "bcd",
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
