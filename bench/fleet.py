"""Thousands of home gateways uploading to ingest replicas on a real influxd, with the fleet cut off.

Run from the repository root: ``python -m bench.fleet`` (defaults: 5,000 gateways in 4 processes,
2 ingest replicas, 60 s warm-up, 180 s measured, a 120 s cut).  Everything but the devices is the
code a deployment runs:

* influxd 2.9 (``tests.influx_server``; the binary ``scripts/influxdb.sh`` builds), one bucket;
* the access database (gateway credentials, the probe's homeowners and tokens) on PostgreSQL, as a
  fleet runs it (``--access-db postgresql``, the default: a throwaway server with fsync on, from
  ``$PG_BIN`` or Debian's package, ``tests.pg_server``), or in a SQLite file (``--access-db sqlite``);
* ``hems serve --role ingest --reuse-port`` replicas sharing one port (the kernel spreads the
  gateways' connections over them, as a load balancer would), and ``hems serve`` (the API) for the
  latency probe;
* gateways: ``--procs`` processes, each running its share of gateways as asyncio tasks.  A gateway
  is what ``hems collect --upload-url`` builds (``Pipeline`` with ``spool_first`` and its own spool,
  ``FleetUploader``), fed with readings emulated at a real home's rate instead of polled: the ten
  devices of an emulated home (``hems devices``), eight with power every 10 s (their counters every
  60 s) and water and gas meters every 60 s, each device at its own phase of the interval as the
  collector's scheduler spreads them: 0.83 readings/s per home.  A gateway's writer holds readings
  for ``upload_interval_s``; the simulator hands each home's readings of one interval to its
  pipeline in one call, at the home's own moment of the interval (homes spread evenly), each reading
  keeping the time it was taken.  Counter state is kept in memory (no 5,000 SQLite files); the
  spools live on tmpfs (5,000 homes do not share one disk's fsyncs).

Figures:
1. readings/s stored (acknowledged by the fleet) while every gateway uploads, next to the rate the
   homes produce (the baseline: what "keeping up" means);
2. p99 (and p50, max) from a reading's timestamp to the moment the API first returns it, polled for
   ``--probe`` households through ``GET /api/v1/households/{h}/series/pv`` every ``--probe-every``
   seconds (the resolution), next to the floor the configuration sets (a gateway batches for
   ``upload_interval_s``, the ingest for ``max_delay_s``);
3. CPU microseconds per reading of the ingest replicas (and of influxd and PostgreSQL), from /proc,
   next to the same-run baseline: the pipeline writing the same readings straight to InfluxDB in one process
   (``hems collect --influx-url``, no gateway, no HTTP);
4. the cut: both replicas stopped for ``--cut`` seconds while the homes keep producing, then started:
   the spool peak, the time to drain every gateway's spool, the 429/503 answers on the way, and a
   count per household in InfluxDB against what each gateway acknowledged (equal: every reading
   arrived exactly once).

The machine is shared: the load average and the machine's busy CPU over the measured window are
printed with the figures.  The replicas run with ``--negawatt-every 0``: the fleet's negawatt pass
(``pipeline.negawatt``, every 15 minutes in one replica) reads InfluxDB, and is left out of what is
measured here, the upload path.

``python -m bench.fleet --storage-hours H`` measures instead what InfluxDB keeps per field value once
compacted: H hours of 100 homes written through the pipeline into an influxd told to compact after a
few idle seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from access.db import AccessDb
from collector.reading import Reading
from pipeline.spool import Spool
from pipeline.upload import FleetUploader
from pipeline.validate import Validator
from pipeline.writer import Pipeline

# The emulated home (devices.home / hems devices): device, category, fields with power, counters.
HOME: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("smart_meter", "electricity", "echonet", ("import_wh_total", "export_wh_total")),
    ("meter", "electricity", "modbus", ("import_wh_total", "export_wh_total")),
    ("solar", "pv", "echonet", ("energy_wh_total",)),
    ("inverter", "pv", "modbus", ("energy_wh_total",)),
    ("battery", "battery", "echonet", ("charge_wh_total", "discharge_wh_total")),
    ("storage", "battery", "modbus", ("charge_wh_total", "discharge_wh_total")),
    ("fuel_cell", "external_generation", "echonet", ("energy_wh_total",)),
    ("ev_charger", "ev", "echonet", ("charge_wh_total",)),
)
COUNTER_ONLY = (("water_meter", "water"), ("gas_meter", "gas"))
POWER_S, COUNTER_S = 10, 60
PER_HOME_S = len(HOME) / POWER_S + len(COUNTER_ONLY) / COUNTER_S
OWN = "sps.disclosure_to_person"


def household(i: int) -> str:
    return f"hh-{i:06d}"


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (PostgreSQL's postmaster and its backends)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(entry.name) == pid or int(fields[1]) == pid:
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, every process of every user."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


# -- a process of gateways ---------------------------------------------------------------------------


@dataclass
class HomeEmulator:
    """The readings of one home's devices (their values are plausible, not physical)."""

    name: str
    index: int
    rng: random.Random
    totals: dict[str, float] = field(default_factory=dict)

    def due(self, second: int, now: datetime) -> list[Reading]:
        """What the devices say at wall-clock ``second``: each device at its own phase."""
        out: list[Reading] = []
        for d, (device, category, source, counters) in enumerate(HOME):
            phase = (self.index * 7 + d * 3) % POWER_S
            if second % POWER_S != phase:
                continue
            fields: dict[str, float | int | bool | str] = {"power_w": round(self.rng.uniform(0, 3000), 1)}
            if category == "battery":
                fields["soc_pct"] = round(self.rng.uniform(10, 90), 1)
            if second % COUNTER_S == phase:
                for name in counters:
                    fields[name] = self._grow(f"{device}:{name}", 1000.0, 50.0)
            out.append(Reading(self.name, device, category, now, fields, source=source))  # type: ignore[arg-type]
        for k, (device, category) in enumerate(COUNTER_ONLY):
            if second % COUNTER_S == (self.index * 11 + k * 29) % COUNTER_S:
                fields = {"volume_l_total": self._grow(device, 100.0, 5.0)}
                out.append(Reading(self.name, device, category, now, fields))
        return out

    def _grow(self, key: str, start: float, step: float) -> float:
        self.totals[key] = round(self.totals.get(key, start) + self.rng.uniform(0, step), 1)
        return self.totals[key]


def wall_now() -> datetime:
    """Now, to the millisecond: the API shows times in milliseconds, and the probe compares them."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass
class Gateway:
    home: HomeEmulator
    pipeline: Pipeline
    uploader: FleetUploader
    spool: Spool
    acked: int = 0
    held: list[Reading] = field(default_factory=list)


async def run_gateways(args: argparse.Namespace) -> None:
    lines = Path(args.credentials).read_text().splitlines()[args.first : args.first + args.count]
    root = Path(args.spool_root)
    homes: list[Gateway] = []
    for line in lines:
        index_text, credential = line.split("\t")
        i = int(index_text)
        spool = Spool(root / household(i), max_bytes=64 * 2**20, segment_bytes=2**20)
        uploader = FleetUploader(args.url, credential, timeout_s=30.0)
        pipeline = Pipeline(
            uploader,
            spool=spool,
            validator=Validator(),
            max_delay=0.2,  # the readings come in one call per upload interval (see below)
            max_replay_backoff=30.0,
            spool_first=True,
        )
        await pipeline.start()
        homes.append(Gateway(HomeEmulator(household(i), i, random.Random(i)), pipeline, uploader, spool))
    generating = asyncio.Event()
    generating.set()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, generating.clear)
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    pending: set[asyncio.Task[None]] = set()
    generated = Counter[int]()

    async def hand_over(home: Gateway, batch: list[Reading]) -> None:
        result = await home.pipeline.submit(batch)
        home.acked += result.accepted

    def status() -> dict[str, Any]:
        statuses: Counter[int] = Counter()
        for h in homes:
            statuses.update(h.uploader.stats.statuses)
        return {
            "t": time.time(),
            "generated": sum(generated.values()),
            "acked": sum(h.acked for h in homes),
            "uploaded": sum(h.uploader.stats.points for h in homes),
            "depth": sum(h.spool.depth_points for h in homes),
            "unreachable": sum(h.uploader.stats.unreachable for h in homes),
            "statuses": {str(k): v for k, v in statuses.items()},
            "refused": sum(sum(h.uploader.stats.refused_points.values()) for h in homes),
        }

    async def report() -> None:
        while True:
            print(json.dumps(status()), flush=True)
            await asyncio.sleep(2.0)

    def submit(home: Gateway) -> None:
        batch, home.held = home.held, []
        if batch:
            task = asyncio.create_task(hand_over(home, batch))
            pending.add(task)
            task.add_done_callback(pending.discard)

    reporter = asyncio.create_task(report())
    second = int(time.time())
    interval = max(1, round(args.upload_interval))
    while not stopping.is_set():
        second += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=max(0.0, second - time.time()))
        if stopping.is_set():
            break
        if not generating.is_set():
            for home in homes:
                submit(home)
            continue
        now = wall_now()
        for home in homes:
            batch = home.home.due(second, now)
            if batch:
                generated[home.home.index] += len(batch)
                home.held += batch
            # A gateway's writer holds readings for upload_interval_s and then spools and uploads them:
            # here each home's readings of one interval are handed over in one call, at the home's own
            # moment (homes spread over the interval), which spares the simulator most of its calls.
            if (second + home.home.index) % interval == 0:
                submit(home)
    if pending:
        await asyncio.gather(*pending)
    await asyncio.gather(*(h.pipeline.close() for h in homes))
    await asyncio.gather(*(h.uploader.close() for h in homes))
    reporter.cancel()
    final = status()
    final["per_household"] = {h.home.name: h.acked for h in homes}
    final["left_in_spool"] = sum(h.spool.depth_points for h in homes)
    Path(args.result).write_text(json.dumps(final))


# -- the parent ----------------------------------------------------------------------------------------


class Children:
    """The gateway processes and their latest status lines (read on threads: pipes never fill)."""

    def __init__(self, procs: list[subprocess.Popen[str]]) -> None:
        self.procs = procs
        self.latest: list[dict[str, Any]] = [{} for _ in procs]
        for k, proc in enumerate(procs):
            threading.Thread(target=self._read, args=(k, proc), daemon=True).start()

    def _read(self, k: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with contextlib.suppress(ValueError):
                self.latest[k] = json.loads(line)

    def total(self, key: str) -> int:
        return sum(int(s.get(key, 0)) for s in self.latest)

    def statuses(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for s in self.latest:
            out.update(s.get("statuses", {}))
        return out

    def signal(self, sig: int) -> None:
        for proc in self.procs:
            proc.send_signal(sig)


def hems_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hems", *args]


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer in {timeout} s")
        time.sleep(0.2)


@dataclass
class Replicas:
    argv: list[str]
    env: dict[str, str]
    logs: Path
    count: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started: int = 0

    def start(self, url: str) -> None:
        for _ in range(self.count):
            log = (self.logs / f"ingest-{self.started}.log").open("wb")
            self.procs.append(subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT))
            self.started += 1
        wait_http(url + "/healthz")
        time.sleep(1.0)  # the last one to bind has started too

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(60)
        self.procs = []

    def cpu(self) -> float:
        return sum(cpu_s(p.pid) for p in self.procs)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def probe(
    base: str,
    tokens: dict[str, str],
    every: float,
    stop: threading.Event,
    out: list[float],
    answers: Counter[int],
) -> None:
    """Latency samples: the first time the API returns a point, minus the point's time (points made
    after the probe started; each household's last two minutes asked every ``every`` seconds)."""
    import aiohttp

    started = time.time()
    seen: dict[str, set[tuple[str, float]]] = {hh: set() for hh in tokens}
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            t_round = time.monotonic()
            for hh, token in tokens.items():
                start = (datetime.now(UTC) - timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
                stop_at = (datetime.now(UTC) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
                url = (
                    f"{base}/api/v1/households/{hh}/series/pv?purpose={OWN}&fields=power_w&format=csv&every=raw"
                    f"&start={start}&stop={stop_at}"
                )
                async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
                    text = await resp.text()
                    answers[resp.status] += 1
                    if resp.status != 200:
                        continue
                now = time.time()
                for row in text.splitlines()[1:]:
                    cells = row.split(",")
                    ts = datetime.fromisoformat(cells[0].replace("Z", "+00:00")).timestamp()
                    key = (cells[2], ts)
                    if ts >= started and key not in seen[hh]:
                        seen[hh].add(key)
                        out.append(now - ts)
            await asyncio.sleep(max(0.0, every - (time.monotonic() - t_round)))


async def influx_counts(url: str, org: str, bucket: str, token: str) -> dict[str, int]:
    from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

    flux = (
        f'from(bucket: "{bucket}") |> range(start: 2000-01-01T00:00:00Z) '
        '|> filter(fn: (r) => r._field == "power_w" or r._field == "volume_l_total") '
        '|> group(columns: ["household"]) |> count()'
    )
    async with InfluxDBClientAsync(url=url, token=token, org=org, timeout=600_000) as client:
        tables = await client.query_api().query(flux)
    return {r.values["household"]: int(r.get_value()) for t in tables for r in t.records}


async def direct_baseline(
    url: str, org: str, bucket: str, token: str, homes: int, seconds: int
) -> tuple[int, float]:
    """CPU per reading of the pipeline writing the same kind of readings straight to InfluxDB in one
    process (``hems collect --influx-url``): ``seconds`` of ``homes`` homes, as fast as it goes."""
    from pipeline.influx_store import InfluxStore

    store = InfluxStore(url, org, bucket, token)
    pipeline = Pipeline(store, validator=Validator(), max_delay=1.0)
    await pipeline.start()
    emulators = [HomeEmulator(f"base-{i:06d}", i, random.Random(i)) for i in range(homes)]
    first = int(time.time()) - seconds
    t0 = time.process_time()
    n = 0
    for second in range(first, first + seconds):
        now = datetime.fromtimestamp(second, UTC)
        n += (await pipeline.submit([r for home in emulators for r in home.due(second, now)])).accepted
    await pipeline.close()
    cpu = time.process_time() - t0
    await store.close()
    return n, cpu / n * 1e6


async def _write_history(url: str, org: str, bucket: str, token: str, homes: int, hours: float) -> int:
    """``hours`` of ``homes`` homes' readings (the simulator's values, times in the past), through the
    pipeline into InfluxDB; returns the number of field values written."""
    from pipeline.influx_store import InfluxStore

    store = InfluxStore(url, org, bucket, token)
    pipeline = Pipeline(store, validator=Validator(), max_delay=1.0, batch_size=20_000)
    await pipeline.start()
    emulators = [HomeEmulator(f"hist-{i:06d}", i, random.Random(i)) for i in range(homes)]
    first = int(time.time() - hours * 3600) - 600
    values = 0
    batch: list[Reading] = []
    for second in range(first, first + int(hours * 3600)):
        now = datetime.fromtimestamp(second, UTC)
        for home in emulators:
            batch += home.due(second, now)
        if len(batch) >= 20_000:
            values += sum(len(r.fields) for r in batch)
            await pipeline.submit(batch)
            batch = []
    values += sum(len(r.fields) for r in batch)
    await pipeline.submit(batch)
    await pipeline.close()
    await store.close()
    return values


def storage_per_value(homes: int, hours: float) -> None:
    """InfluxDB's compressed size per field value: a separate influxd told to write its cache to TSM
    files and compact them after a few idle seconds (instead of 10 minutes and 4 hours)."""
    from tests.influx_server import InfluxServer, find_influxd
    from tests.loopback import free_port

    class CompactingServer(InfluxServer):
        def _command(self) -> list[str]:
            return [
                *super()._command(),
                "--storage-cache-snapshot-write-cold-duration",
                "2s",
                "--storage-compact-full-write-cold-duration",
                "5s",
            ]

    binary, reason = find_influxd()
    if binary is None:
        raise SystemExit(f"no influxd: {reason}")
    server = CompactingServer(
        binary=binary, data_dir=Path(tempfile.mkdtemp(prefix="bench-storage-")), port=free_port()
    )
    server.start()
    try:
        server.setup()
        values = asyncio.run(
            _write_history(server.url, server.org, server.bucket, server.token, homes, hours)
        )
        engine = Path(server.data_dir, "engine")
        wal = tsm = 0
        for _ in range(60):  # until the write-ahead log is folded into TSM files
            time.sleep(2.0)
            wal = sum(f.stat().st_size for f in (engine / "wal").rglob("*") if f.is_file())
            tsm = sum(f.stat().st_size for f in (engine / "data").rglob("*.tsm"))
            if tsm and wal < 0.05 * tsm:
                break
        print(
            f"\n== storage: {homes} homes x {hours:g} h, {values:,} field values ==\n"
            f"   TSM files {tsm / 2**20:.1f} MiB = {tsm / values:.1f} bytes per field value (WAL left: "
            f"{wal / 2**20:.1f} MiB); the simulator's values are random, real meters compress better"
        )
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


def setup_access(db: AccessDb, gateways: int, probes: list[int], credentials: Path) -> dict[str, str]:
    from access.gateways import GatewayCredentials
    from access.relationships import RelationshipStore
    from access.tokens import TokenStore

    creds = GatewayCredentials(db)
    with credentials.open("w") as out:
        for i in range(gateways):
            _, text = creds.issue([household(i)], label=f"bench {i}")
            out.write(f"{i}\t{text}\n")
    creds.close()
    rel = RelationshipStore(db)
    tokens = TokenStore(db)
    issued = {}
    rel.add_households([household(i) for i in probes])
    rel.add_contracts([(household(i), "sps", "service") for i in probes], since=0)
    for i in probes:
        owner = f"owner{i}"
        rel.add_principal(owner, "homeowner", f"Owner {i}", [OWN])
        rel.link(owner, household(i), "homeowner", since=0)
        # A homeowner reads their own data with a token issued after an identity check.
        _, issued[household(i)] = tokens.create(
            owner, [OWN], frozenset({OWN}), identity_verified_at=time.time(), identity_method="documents"
        )
    tokens.close()
    rel.close()
    return issued


def wait_until(check: Any, timeout: float, every: float = 1.0) -> float:
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise RuntimeError("timed out")
        time.sleep(every)
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--gateways", type=int, default=5000)
    ap.add_argument("--procs", type=int, default=4, help="gateway processes")
    ap.add_argument("--replicas", type=int, default=2, help="ingest replicas")
    ap.add_argument("--warmup", type=float, default=60.0)
    ap.add_argument("--measure", type=float, default=180.0)
    ap.add_argument("--cut", type=float, default=120.0, help="seconds the fleet is cut off (0: no cut)")
    ap.add_argument("--upload-interval", type=float, default=10.0, help="[fleet] upload_interval_s")
    ap.add_argument("--probe", type=int, default=10, help="households whose readings are timed")
    ap.add_argument("--probe-every", type=float, default=0.5)
    ap.add_argument("--baseline-homes", type=int, default=1000)
    ap.add_argument(
        "--access-db",
        choices=("postgresql", "sqlite"),
        default="postgresql",
        help="where the access database is: a PostgreSQL server (a fleet's) or a SQLite file",
    )
    ap.add_argument(
        "--storage-hours",
        type=float,
        default=0.0,
        help="only measure InfluxDB's compressed bytes per field value: this many hours of 100 homes",
    )
    # one process of gateways (started by the parent)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--url", default="", help=argparse.SUPPRESS)
    ap.add_argument("--credentials", default="", help=argparse.SUPPRESS)
    ap.add_argument("--spool-root", default="", help=argparse.SUPPRESS)
    ap.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.storage_hours > 0:
        storage_per_value(100, args.storage_hours)
        return 0
    if args.child:
        from common.loop import run

        # Thousands of gateways each logging every failed attempt during the cut would flood the
        # terminal: failures are counted in the status lines instead.
        logging.basicConfig(level=logging.ERROR)
        run(run_gateways(args))
        return 0
    return run_bench(args)


@contextlib.contextmanager
def influx_server() -> Iterator[Any]:
    from tests.influx_server import find_influxd, start_server

    binary, reason = find_influxd()
    if binary is None:
        raise SystemExit(f"no influxd: {reason}")
    server = start_server(binary)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def access_database(kind: str, tmp: Path) -> Iterator[tuple[AccessDb, int | None]]:
    """(where the access database is, PostgreSQL's postmaster pid or None for a SQLite file)."""
    if kind == "sqlite":
        yield tmp / "access.sqlite", None
        return
    from tests.pg_server import find_pg_bin, start_pg_server

    bin_dir, reason = find_pg_bin()
    if bin_dir is None:
        raise SystemExit(f"PostgreSQL not available: {reason} (or run with --access-db sqlite)")
    server = start_pg_server(bin_dir, durable=True)
    os.environ["PGPASSWORD"] = server.password
    try:
        url = server.create_database("fleet")
        assert server._proc is not None
        yield url, server._proc.pid
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@dataclass
class Fleet:
    """What runs during the benchmark: replicas, the API, the gateway processes."""

    tmp: Path
    env: dict[str, str]
    replicas: Replicas
    ingest_url: str
    api: subprocess.Popen[bytes]
    api_url: str
    tokens: dict[str, str]
    children: Children | None = None
    postgres_pid: int | None = None  # the access database's postmaster, when on PostgreSQL


def start_fleet(args: argparse.Namespace, influx: Any, tmp: Path, shm: Path, db: AccessDb) -> Fleet:
    from tests.loopback import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("HEMS_")}
    env.update(
        HEMS_INFLUX_URL=influx.url,
        HEMS_INFLUX_ORG=influx.org,
        HEMS_INFLUX_BUCKET=influx.bucket,
        HEMS_INFLUX_TOKEN=influx.token,
        HEMS_DATA_DIR=str(tmp),
        POLARS_MAX_THREADS="1",
    )
    if "PGPASSWORD" in os.environ:
        env["PGPASSWORD"] = os.environ["PGPASSWORD"]
    credentials = tmp / "credentials.tsv"
    probes = random.Random(7).sample(range(args.gateways), min(args.probe, args.gateways))
    t0 = time.monotonic()
    tokens = setup_access(db, args.gateways, probes, credentials)
    print(f"{args.gateways} gateway credentials issued in {time.monotonic() - t0:.1f} s")
    ingest_port, api_port = free_port(), free_port()
    ingest_url, api_url = f"http://127.0.0.1:{ingest_port}", f"http://127.0.0.1:{api_port}"
    serve = ["serve", "--store", "influx", "--host", "127.0.0.1", "--db", str(db)]
    ingest = [*serve, "--role", "ingest", "--port", str(ingest_port), "--reuse-port", "--negawatt-every", "0"]
    replicas = Replicas(hems_cmd(*ingest, "--spool-dir", str(tmp / "ingest-spool")), env, tmp, args.replicas)
    replicas.start(ingest_url)
    with (tmp / "api.log").open("wb") as log:
        api_cmd = hems_cmd(*serve, "--port", str(api_port), "--rate", "0")
        api = subprocess.Popen(api_cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_http(api_url + "/healthz")
    fleet = Fleet(tmp, env, replicas, ingest_url, api, api_url, tokens)
    per = -(-args.gateways // args.procs)
    procs = []
    for k in range(args.procs):
        first, count = k * per, min(per, args.gateways - k * per)
        child = ["--child", "--first", str(first), "--count", str(count), "--url", ingest_url]
        child += ["--credentials", str(credentials), "--spool-root", str(shm)]
        child += ["--result", str(tmp / f"gateways-{k}.json"), "--upload-interval", str(args.upload_interval)]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.fleet", *child], env=env, stdout=subprocess.PIPE, text=True
            )
        )
    fleet.children = Children(procs)
    print(f"{args.gateways} gateways in {args.procs} processes -> {args.replicas} ingest replicas")
    return fleet


def steady_state(args: argparse.Namespace, fleet: Fleet, influx: Any) -> None:
    """Figures 1-3 over ``--measure`` seconds, with the same-run baseline."""
    children = fleet.children
    assert children is not None
    samples: list[float] = []
    answers: Counter[int] = Counter()
    stop_probe = threading.Event()
    prober = threading.Thread(
        target=lambda: asyncio.run(
            probe(fleet.api_url, fleet.tokens, args.probe_every, stop_probe, samples, answers)
        ),
        daemon=True,
    )
    influxd = influx._proc.pid
    pg = fleet.postgres_pid
    load0, busy0 = os.getloadavg(), machine_busy()
    cpu0 = fleet.replicas.cpu(), cpu_s(influxd), tree_cpu_s(pg) if pg else 0.0
    up0, gen0, t0 = children.total("uploaded"), children.total("generated"), time.monotonic()
    prober.start()
    time.sleep(args.measure)
    up1, gen1, t1 = children.total("uploaded"), children.total("generated"), time.monotonic()
    cpu1 = fleet.replicas.cpu(), cpu_s(influxd), tree_cpu_s(pg) if pg else 0.0
    busy1, load1 = machine_busy(), os.getloadavg()
    stop_probe.set()
    prober.join(30)
    stored = up1 - up0
    busy = 100.0 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
    print(f"\n== steady state, {t1 - t0:.0f} s ==")
    print(
        f"machine: {os.cpu_count()} cores shared with other work; load average {load0[0]:.2f} -> "
        f"{load1[0]:.2f}; all cores {busy:.0f}% busy over the window (every process on the machine)"
    )
    print(
        f"1. readings stored      {stored / (t1 - t0):8,.0f} /s   baseline: the homes produce "
        f"{(gen1 - gen0) / (t1 - t0):,.0f} /s (of the {args.gateways * PER_HOME_S:,.0f} /s asked, "
        f"{args.gateways} x {PER_HOME_S:.3f}: less when the simulators do not get the CPU)"
    )
    if set(answers) - {200} or not samples:
        print(f"   the probe's API answers: {dict(answers)}")
    if samples:
        print(
            f"2. reading -> queryable p50 {statistics.median(samples):.2f} s, "
            f"p99 {percentile(samples, 0.99):.2f} s, max {max(samples):.2f} s ({len(samples)} readings of "
            f"{len(fleet.tokens)} homes, API polled every {args.probe_every:g} s)"
        )
        print(
            "   baseline: the floor this configuration sets, a gateway batching up to "
            f"{args.upload_interval:g} s and the ingest up to 1 s"
        )
    if stored:
        us_ingest = (cpu1[0] - cpu0[0]) / stored * 1e6
        us_influx = (cpu1[1] - cpu0[1]) / stored * 1e6
        us_pg = (cpu1[2] - cpu0[2]) / stored * 1e6
        print(
            f"3. CPU per reading      {us_ingest:.1f} us in the ingest ({args.replicas} replicas together); "
            f"influxd {us_influx:.1f} us (with the probe's queries); the access database "
            f"({args.access_db}) {us_pg:.2f} us" + ("" if pg else " (in the replicas' own processes)")
        )
    influx.create_bucket("baseline")
    n, us = asyncio.run(
        direct_baseline(influx.url, influx.org, "baseline", influx.token, args.baseline_homes, 60)
    )
    print(
        f"   baseline: the pipeline straight to InfluxDB in one process, {us:.1f} us per reading "
        f"({n:,} readings)"
    )


def cut_off(args: argparse.Namespace, fleet: Fleet) -> None:
    """Figure 4: both replicas stopped for ``--cut`` seconds while the homes keep producing."""
    children = fleet.children
    assert children is not None
    before = children.statuses()
    print(f"\n== the fleet cut off for {args.cut:g} s ==")
    fleet.replicas.stop()
    t_cut = time.monotonic()
    peak = 0
    while time.monotonic() - t_cut < args.cut:
        peak = max(peak, children.total("depth"))
        time.sleep(1.0)
    fleet.replicas.start(fleet.ingest_url)
    # The backlog is delivered once the fleet has stored every reading acknowledged before the return
    # (the spools are never all empty while the homes keep producing).
    backlog = children.total("acked")
    drained = wait_until(lambda: children.total("uploaded") >= backlog, timeout=3600)
    after = children.statuses()
    told = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}
    print(
        f"4. spool peak {peak:,} readings over all gateways; all {backlog:,} readings acknowledged before "
        f"the return stored {drained:.0f} s after the replicas returned"
    )
    print(f"   answers other than 200 during the cut and the catch-up: {told or 'none'}")


def every_reading_once(args: argparse.Namespace, fleet: Fleet, influx: Any) -> bool:
    """The homes stop, the spools drain, the gateways close: InfluxDB's count per household must be
    what each gateway acknowledged."""
    children = fleet.children
    assert children is not None
    children.signal(signal.SIGUSR1)
    time.sleep(args.upload_interval + 2)
    wait_until(lambda: children.total("depth") == 0, timeout=3600)
    children.signal(signal.SIGTERM)
    for proc in children.procs:
        proc.wait(600)
    acked: dict[str, int] = {}
    left = 0
    for k in range(args.procs):
        result = json.loads((fleet.tmp / f"gateways-{k}.json").read_text())
        acked.update(result["per_household"])
        left += result["left_in_spool"]
    fleet.replicas.stop()  # each replica drains its own pipeline first
    counts = asyncio.run(influx_counts(influx.url, influx.org, influx.bucket, influx.token))
    differ = {hh: (n, counts.get(hh, 0)) for hh, n in acked.items() if counts.get(hh, 0) != n}
    print(
        f"   acknowledged by the gateways {sum(acked.values()):,}; in InfluxDB {sum(counts.values()):,}; "
        f"households that differ {len(differ)}; left in spools {left}"
    )
    if differ:
        print(f"   e.g. (acknowledged, stored): {list(differ.items())[:5]}")
    ok = not differ and left == 0 and set(counts) == set(acked)
    print("   every reading exactly once: " + ("yes" if ok else "NO"))
    engine = sum(f.stat().st_size for f in Path(influx.data_dir, "engine").rglob("*") if f.is_file())
    stored = sum(counts.values())
    print(
        f"   influxd engine directory {engine / 2**20:,.0f} MiB for {stored:,} readings "
        f"({engine / max(1, stored):.0f} bytes per reading, WAL not yet compacted included)"
    )
    return ok


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_bench(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    shm_root = "/dev/shm" if Path("/dev/shm").is_dir() else None
    shm = Path(tempfile.mkdtemp(prefix="bench-fleet-spools-", dir=shm_root))
    print(f"work dir {tmp}, gateway spools in {shm}")
    with influx_server() as influx, access_database(args.access_db, tmp) as (db, postgres_pid):
        fleet = start_fleet(args, influx, tmp, shm, db)
        fleet.postgres_pid = postgres_pid
        try:
            print(f"warm-up {args.warmup:g} s")
            time.sleep(args.warmup)
            steady_state(args, fleet, influx)
            if args.cut > 0:
                cut_off(args, fleet)
            ok = every_reading_once(args, fleet, influx)
        finally:
            if fleet.children is not None:
                for proc in fleet.children.procs:
                    if proc.poll() is None:
                        proc.kill()
            fleet.replicas.stop()
            fleet.api.terminate()
            fleet.api.wait(60)
            shutil.rmtree(shm, ignore_errors=True)  # tmpfs is memory
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
