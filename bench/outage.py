"""Soak: N emulated homes polled into a real influxd through the real collector and pipeline while the
store goes away for M minutes; every reading the collector produced is accounted for, exactly.

Run from the repository root: ``python -m bench.outage`` (defaults: 20 homes, a 2-minute outage, the
deployed schedule of 10 s power / 60 s counters).  The emulated homes run in a separate process
(``python -m devices.cli``) and influxd in its own, so the RSS reported is the collector process's
(collector + pipeline + spool + InfluxDB client).

Each scenario: ``--before-s`` of normal collection (the same-run baseline: readings/s, lateness,
RSS), then the outage -- ``hang`` (influxd SIGSTOPped: connections accepted, nothing answered) or
``down`` (influxd stopped: connections refused) -- then the store returns and the spool drains.  The
report per scenario:

* readings expected (what the collector produced) = stored (counted by InfluxDB itself, one point
  per reading) + lost (counted by the pipeline, by reason) + rejected (invalid) + kept (still in the
  spool); the balance column must be 0;
* the spool's peak bytes and its bytes per reading, the collector's RSS before and at peak, poll
  lateness p99 before / during / after the outage and polls that waited for queue room.

Scenarios (``--scenarios``): ``roomy`` (the default 256 MiB spool, hang: nothing lost), ``refuse``
(a spool sized for about a third of the outage, down: the newest readings refused and counted), and
``drop_oldest`` (the same small spool, down: the oldest dropped and counted).  The two lossy ones run
with the server down rather than hung: a write abandoned after ``store_write_timeout_s`` reaches a
hung server anyway and lands when it wakes up, so a batch counted lost (refused, or dropped while
the replayer was trying it) could be in InfluxDB after all -- the count errs on the side of loss,
and the balance would be negative by that batch.

It ends with the outage a spool covers: ``seconds = spool_max_bytes / (bytes per reading x readings
per second per home x homes)``, from the bytes per reading measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.collector import start_fleet
from collector.config import from_manifest
from collector.runner import Collector
from hems.collect import PumpStats, pump, tally
from pipeline.influx_store import InfluxStore
from pipeline.spool import Spool
from pipeline.writer import Pipeline
from tests.influx_server import InfluxServer, find_influxd, free_port, start_server

MiB = 1024 * 1024
SCENARIOS = ("roomy", "refuse", "drop_oldest")


@dataclass
class Phase:
    name: str
    seconds: float
    readings: int
    lateness_p99_s: float | None
    queue_waits: int
    rss_kib: int


@dataclass
class Result:
    scenario: str
    mode: str
    homes: int
    outage_s: float
    spool_max_bytes: int
    expected: int
    stored: int  # counted by InfluxDB
    stored_by_pipeline: int  # the pipeline's own count (written + replayed)
    lost: dict[str, int]
    rejected: int
    kept: int
    spool_peak_bytes: int
    bytes_per_reading: float
    rss_peak_kib: int
    phases: list[Phase] = field(default_factory=list)

    @property
    def lost_total(self) -> int:
        return sum(self.lost.values())

    @property
    def balance(self) -> int:
        """0 when every expected reading is stored, lost, rejected or kept exactly once."""
        return self.expected - (self.stored + self.lost_total + self.rejected + self.kept)

    def readings_per_home_s(self) -> float:
        before = self.phases[0]
        return before.readings / before.seconds / self.homes


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


async def count_points(store: InfluxStore, bucket: str, start: datetime, stop: datetime) -> int:
    """Distinct points (series + timestamp) in the bucket, counted by InfluxDB."""
    flux = (
        "from(bucket: b)\n"
        "  |> range(start: t0, stop: t1)\n"
        '  |> keep(columns: ["_time", "_measurement", "household", "device"])\n'
        '  |> group(columns: ["_measurement", "household", "device"])\n'
        '  |> distinct(column: "_time")'
    )
    params = {"b": bucket, "t0": start, "t1": stop}
    tables = await store._api().query_api().query(flux, params=params)
    return sum(len(t.records) for t in tables)  # one record per distinct time of each series


async def soak(
    *,
    scenario: str,
    mode: str,
    server: InfluxServer,
    bucket: str,
    manifest: Path,
    prefix: str,
    work: Path,
    homes: int,
    before_s: float,
    outage_s: float,
    drain_s: float,
    power_interval: float,
    counter_interval: float,
    spool_max_bytes: int,
    policy: str,
    restarter: concurrent.futures.Executor,
) -> Result:
    config = from_manifest(
        json.loads(manifest.read_text()),
        str(manifest),
        power_interval_s=power_interval,
        counter_interval_s=counter_interval,
        echonet_bind=f"{prefix}.255.1",
        echonet_multicast=False,
        fixed_time_readings=False,  # one point per reading, so InfluxDB's count is the readings'
        discovery_wait_s=1.0,
        timeout_s=1.0,
    )
    store = InfluxStore(server.url, server.org, bucket, server.token)
    spool = Spool(
        work / f"spool-{scenario}",
        max_bytes=spool_max_bytes,
        segment_bytes=min(4 * MiB, spool_max_bytes // 4),
        policy=policy,  # type: ignore[arg-type]
    )
    pipeline = Pipeline(store, spool=spool)  # the deployed defaults (5 s write bound, 30 s backoff)
    await pipeline.start()
    collector = Collector(config)
    t_start = datetime.now(UTC) - timedelta(minutes=1)
    await collector.start()
    stats = PumpStats()
    pumping = asyncio.create_task(pump(collector, pipeline, stats=stats))
    peak = {"bytes": 0}
    phases: list[Phase] = []
    mark = {"t": time.monotonic(), "readings": 0, "waits": 0}

    async def sampler() -> None:
        while True:
            peak["bytes"] = max(peak["bytes"], spool.size_bytes)
            await asyncio.sleep(0.2)

    def end_phase(name: str) -> None:
        c = collector.stats()
        now = time.monotonic()
        phases.append(
            Phase(
                name,
                now - mark["t"],
                collector.readings_out - mark["readings"],
                c["lateness_p99_s"],
                c["queue_waits"] - mark["waits"],
                _status_kib("VmRSS"),
            )
        )
        collector.scheduler.reset_lateness()
        mark.update(t=now, readings=collector.readings_out, waits=c["queue_waits"])

    sampling = asyncio.create_task(sampler())
    loop = asyncio.get_running_loop()
    try:
        warm_up = min(10.0, before_s / 3)  # discovery and first polls: not part of the baseline
        await asyncio.sleep(warm_up)
        end_phase("warm-up")
        phases.clear()
        await asyncio.sleep(before_s - warm_up)
        end_phase("before")
        if mode == "hang":
            server.pause()
        else:
            await loop.run_in_executor(restarter, server.stop)
        await asyncio.sleep(outage_s)
        end_phase("outage")
        if mode == "hang":
            server.resume()
        else:  # started from one long-lived thread: influxd dies with the thread that started it
            await loop.run_in_executor(restarter, server.start)
        deadline = time.monotonic() + drain_s
        while len(spool) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await asyncio.sleep(min(5.0, before_s))  # some collection after the drain
        end_phase("after")
    finally:
        if mode == "hang":
            server.resume()
        await collector.stop()
        await pumping
        sampling.cancel()
        await pipeline.close()
    result_tally = tally(stats, pipeline, collector)
    try:
        stored = await count_points(store, bucket, t_start, datetime.now(UTC) + timedelta(minutes=1))
    finally:
        await store.close()
    return Result(
        scenario=scenario,
        mode=mode,
        homes=homes,
        outage_s=outage_s,
        spool_max_bytes=spool_max_bytes,
        expected=collector.readings_out + collector.dropped,
        stored=stored,
        stored_by_pipeline=result_tally.stored,
        lost=dict(result_tally.lost),
        rejected=result_tally.rejected,
        kept=result_tally.kept,
        spool_peak_bytes=peak["bytes"],
        bytes_per_reading=spool.stats.appended_bytes / max(spool.stats.appended_points, 1),
        rss_peak_kib=_status_kib("VmHWM"),
        phases=phases,
    )


def coverage_table(bytes_per_reading: float, per_home_s: float) -> list[str]:
    sizes = (64 * MiB, 256 * MiB, 1024 * MiB)
    lines = [
        f"outage a spool covers = spool_max_bytes / ({bytes_per_reading:.0f} B/reading x "
        f"{per_home_s:.3f} readings/s/home x homes)",
        "  homes | " + " | ".join(f"{s // MiB:>6} MiB" for s in sizes),
    ]
    for homes in (1, 20, 100, 1000, 10000):
        cells = []
        for size in sizes:
            hours = size / (bytes_per_reading * per_home_s * homes) / 3600
            if hours < 1 / 60:
                cells.append(f"{3600 * hours:.0f} s")
            elif hours < 1:
                cells.append(f"{60 * hours:.0f} min")
            else:
                cells.append(f"{hours:.1f} h" if hours < 72 else f"{hours / 24:.0f} d")
        lines.append(f"  {homes:>5} | " + " | ".join(f"{c:>10}" for c in cells))
    return lines


def report(results: Sequence[Result]) -> str:
    lines = [
        "scenario     mode  spool      expected   stored  lost (by reason)                  rejected  kept  "
        "balance  spool peak   B/reading  RSS before/peak MiB  lateness p99 before/outage/after  queue waits"
    ]
    for r in results:
        lost = ", ".join(f"{k} {v}" for k, v in sorted(r.lost.items()) if v) or "-"
        late = "/".join(
            "-" if p.lateness_p99_s is None else f"{1000 * p.lateness_p99_s:.0f}ms" for p in r.phases
        )
        lines.append(
            f"{r.scenario:<12} {r.mode:<5} {r.spool_max_bytes / MiB:>6.2f}MiB {r.expected:>9} {r.stored:>8}  "
            f"{r.lost_total:>6} ({lost})".ljust(98)
            + f"{r.rejected:>8} {r.kept:>5} {r.balance:>8}  {r.spool_peak_bytes / 1024:>8.0f}KiB "
            f"{r.bytes_per_reading:>9.0f}  {r.phases[0].rss_kib / 1024:>8.0f}/{r.rss_peak_kib / 1024:<8.0f}  "
            f"{late:>30}  {sum(p.queue_waits for p in r.phases):>5}"
        )
    for r in results:
        if r.stored != r.stored_by_pipeline:
            lines.append(
                f"note: {r.scenario}: the pipeline counted {r.stored_by_pipeline} stored, "
                f"InfluxDB holds {r.stored}"
            )
    return "\n".join(lines)


def run(argv: Sequence[str] | None = None) -> list[Result]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--homes", type=int, default=20)
    ap.add_argument("--outage-min", type=float, default=2.0, help="minutes the store is away")
    ap.add_argument("--before-s", type=float, default=30.0, help="normal collection before the outage")
    ap.add_argument("--drain-s", type=float, default=300.0, help="longest wait for the spool to drain")
    ap.add_argument("--power-interval", type=float, default=10.0)
    ap.add_argument("--counter-interval", type=float, default=60.0)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated: {SCENARIOS}")
    ap.add_argument(
        "--small-spool-kib",
        type=int,
        default=None,
        help="spool of the refuse/drop_oldest scenarios (default: about a third of the outage's readings)",
    )
    ap.add_argument("--prefix", default=f"127.{random.randint(11, 19)}", help="loopback /16 of the homes")
    args = ap.parse_args(argv)
    binary, why = find_influxd()
    if binary is None:
        raise SystemExit(f"no influxd: {why} (see scripts/influxdb.sh)")
    work = Path(tempfile.mkdtemp(prefix="bench-outage-"))
    restarter = concurrent.futures.ThreadPoolExecutor(max_workers=1)  # outlives every restart
    server = restarter.submit(start_server, binary).result()
    fleet = start_fleet(args.homes, args.prefix, free_port(), work / "manifest.json")
    results: list[Result] = []
    try:
        outage_s = args.outage_min * 60
        for scenario in args.scenarios.split(","):
            if scenario not in SCENARIOS:
                raise SystemExit(f"unknown scenario {scenario!r}")
            bucket = f"outage-{scenario}"
            server.create_bucket(bucket)
            small = args.small_spool_kib * 1024 if args.small_spool_kib else None
            if scenario == "roomy":
                spool_bytes, policy, mode = 256 * MiB, "refuse", "hang"
            else:
                if small is None and results:  # a third of the outage's readings at the measured size
                    r0 = results[0]
                    small = int(r0.bytes_per_reading * r0.readings_per_home_s() * args.homes * outage_s / 3)
                spool_bytes = small or 256 * 1024
                policy, mode = scenario, "down"
            t0 = time.monotonic()
            result = asyncio.run(
                soak(
                    scenario=scenario,
                    mode=mode,
                    server=server,
                    bucket=bucket,
                    manifest=work / "manifest.json",
                    prefix=args.prefix,
                    work=work,
                    homes=args.homes,
                    before_s=args.before_s,
                    outage_s=outage_s,
                    drain_s=args.drain_s,
                    power_interval=args.power_interval,
                    counter_interval=args.counter_interval,
                    spool_max_bytes=max(spool_bytes, 8 * 1024),
                    policy=policy,
                    restarter=restarter,
                )
            )
            print(f"{scenario}: done in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
            results.append(result)
    finally:
        fleet.terminate()
        fleet.wait(30)
        restarter.submit(server.stop).result()
        restarter.shutdown()
        shutil.rmtree(server.data_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    results = run(argv)
    print(report(results))
    first = results[0]
    for line in coverage_table(first.bytes_per_reading, first.readings_per_home_s()):
        print(line)
    return 0 if all(r.balance == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
