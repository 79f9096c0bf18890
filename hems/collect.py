"""``hems collect``: the collector's reading stream fed into the pipeline, and nothing else.

This is the only place where collection meets storage (the collector never writes to a store and the
pipeline never speaks a device protocol), so ``hems demo`` reuses ``pump`` rather than wiring its own.

What a user gets when the store fails: polling keeps its schedule, always.  Readings go to the
store, or to the spool while the store is down; a reading the pipeline refuses (the spool is full
under ``refuse``, or its disk failed) is counted as lost by that reason and logged (at most a line a
minute per reason), never retried in a loop that would stop polling.  The last line of a run says
how many readings were stored, kept in the spool for the store's return, rejected, and lost by
reason; the exit status is 1 when readings were lost, 0 otherwise.  ``--metrics-port`` serves the
same numbers, device health and the spool's fill as Prometheus text while it runs.

As a home gateway (``--upload-url``) the fleet is the store: every batch goes through the spool, the
gateway's outbox (``pipeline.factory.open_gateway_pipeline``); "stored" counts what the fleet
acknowledged, and a line before the last says what was uploaded and what waits in the spool.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import ssl
import sys
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import config
from access.cli import data_dir
from collector.cli import add_collector_arguments, config_from_args
from collector.reading import Reading
from collector.runner import Collector
from common import heap
from common import loop as event_loop
from config import ConfigError
from pipeline import stores
from pipeline.config import SECTION as PIPELINE_SECTION
from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError
from pipeline.exposition import serve_metrics
from pipeline.factory import open_gateway_pipeline, open_pipeline
from pipeline.fleet_config import FleetConfig
from pipeline.losses import QUEUE_FULL, STORE_REFUSED, STORE_UNAVAILABLE, Losses
from pipeline.negawatt import negawatt_loop
from pipeline.store import Store, StoreUnavailable
from pipeline.upload import FleetUploader, UploadStats
from pipeline.writer import Backpressure, Pipeline

log = logging.getLogger("hems.collect")


@dataclass
class PumpStats:
    """What went from the collector into the pipeline, and what the pipeline could not take."""

    submitted: int = 0
    accepted: int = 0
    rejected: int = 0
    losses: Losses = field(default_factory=lambda: Losses(log))

    @property
    def lost(self) -> dict[str, int]:
        """Readings the pipeline refused, by reason (``pipeline.losses`` names)."""
        return self.losses.counts()


async def _hand_over(pipeline: Pipeline, batch: list[Reading], stats: PumpStats) -> None:
    """Submit once.  A refusal is not retried: retrying held readings here while new ones kept coming
    is what used to stop polling; what the pipeline cannot keep is counted and logged instead."""
    try:
        result = await pipeline.submit(batch)
    except Backpressure as exc:
        stats.losses.add(exc.reason, len(batch), str(exc))
        return
    except StoreUnavailable as exc:  # no spool configured
        stats.losses.add(STORE_UNAVAILABLE, len(batch), str(exc))
        return
    except PipelineError as exc:  # the store refuses the data itself (counted and logged there too)
        stats.losses.add(STORE_REFUSED, len(batch), str(exc))
        return
    stats.submitted += len(batch)
    stats.accepted += result.accepted
    stats.rejected += len(result.rejected)


async def pump(
    collector: Collector,
    pipeline: Pipeline,
    *,
    linger_s: float = 0.2,
    max_batch: int = 2000,
    max_held: int = 100_000,
    stats: PumpStats | None = None,
) -> PumpStats:
    """Move readings until the collector's stream ends.

    Readings are grouped for up to ``linger_s`` so the pipeline sees batches.  Each group waits for
    its acknowledgement in a task of its own, so the pump keeps draining the collector's queue while
    the store is slow (the writer bounds a store write, then spools).  Only when ``max_held`` readings
    are waiting at once -- the spool's disk cannot keep up -- does the pump wait, and polling with it
    (visible as the collector's ``queue_waits``).  ``stats`` (else a new one) is filled as it goes.
    """
    stats = stats if stats is not None else PumpStats()
    held = 0
    room = asyncio.Event()
    in_flight: set[asyncio.Task[None]] = set()
    batch: list[Reading] = []

    async def hand_over(items: list[Reading]) -> None:
        nonlocal held
        try:
            await _hand_over(pipeline, items, stats)
        finally:
            held -= len(items)
            room.set()

    async def dispatch() -> None:
        nonlocal batch, held
        if not batch:
            return
        while held and held + len(batch) > max_held:
            room.clear()
            await room.wait()
        held += len(batch)
        task = asyncio.create_task(hand_over(batch))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        batch = []

    loop = asyncio.get_running_loop()
    deadline = loop.time() + linger_s
    while True:
        # one wake-up per group, not per reading (a task and a wait per reading cost more CPU than
        # producing the reading did: bench.collector)
        got = await collector.next_readings(max_batch - len(batch), max(0.0, deadline - loop.time()))
        if got is None:
            break
        batch += got
        if len(batch) < max_batch and loop.time() < deadline:
            continue
        await dispatch()
        deadline = loop.time() + linger_s
    await dispatch()
    if in_flight:
        await asyncio.gather(*in_flight)
    return stats


@dataclass(frozen=True)
class Tally:
    """A run's readings, each counted in exactly one place: what the collector produced is what was
    stored, kept in the spool, rejected as invalid, or lost (by reason)."""

    stored: int  # written to the store during the run (directly or replayed from the spool)
    kept: int  # in the spool at the end, written when the store returns (earlier runs' included)
    rejected: int
    lost: Mapping[str, int]

    @property
    def lost_total(self) -> int:
        return sum(self.lost.values())

    def line(self) -> str:
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self.lost.items()) if n)
        return (
            f"readings: {self.stored} stored, {self.kept} kept in the spool for the store, "
            f"{self.rejected} rejected, {self.lost_total} lost" + (f" ({reasons})" if reasons else "")
        )


def tally(stats: PumpStats, pipeline: Pipeline, collector: Collector) -> Tally:
    m = pipeline.metrics()
    lost: Counter[str] = Counter(stats.lost)
    lost.update(m["lost"])
    if collector.dropped:
        lost[QUEUE_FULL] += collector.dropped
    return Tally(
        stored=int(m["points_written"]) + int(m["replayed_points"]),
        kept=int(m.get("spool_depth_points", 0)),
        rejected=stats.rejected,
        lost=dict(lost),
    )


def _numbers(stats: dict[str, object]) -> dict[str, float]:
    """The collector's flat numeric statistics (lateness, polls, health readings...)."""
    return {k: float(v) for k, v in stats.items() if isinstance(v, int | float)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hems collect",
        description="Poll devices (from a TOML config or a `hems devices` manifest) into the store. "
        "InfluxDB when --influx-url (or HEMS_INFLUX_URL) is given; a home gateway uploading to the "
        "fleet when --upload-url (or HEMS_UPLOAD_URL) is given; else the embedded SQLite store.",
    )
    add_collector_arguments(p)
    p.add_argument(
        "--data-dir",
        default=None,
        help="where the embedded store, spool and counter state live unless [pipeline] names them "
        "(default $HEMS_DATA_DIR, else ./var)",
    )
    p.add_argument(
        "--upload-url",
        default=None,
        help="gateway mode: upload to the fleet's ingest at this URL (default $HEMS_UPLOAD_URL or [fleet] "
        "upload_url); the gateway credential comes from $HEMS_GATEWAY_CREDENTIAL or "
        "$HEMS_GATEWAY_CREDENTIAL_FILE, never a flag",
    )
    p.add_argument(
        "--keep-local",
        action="store_true",
        help="gateway mode: also keep the readings in the embedded store under --data-dir",
    )
    p.add_argument("--influx-url", default=None, help="InfluxDB 2.x URL (default $HEMS_INFLUX_URL)")
    p.add_argument("--influx-org", default=None, help="default $HEMS_INFLUX_ORG")
    p.add_argument("--influx-bucket", default=None, help="default $HEMS_INFLUX_BUCKET")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve device health, pipeline counters, spool fill and losses as Prometheus text on "
        "http://HOST:PORT/metrics (default: off)",
    )
    p.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address of --metrics-port (default 127.0.0.1; 0.0.0.0 in a container; no login: keep it "
        "on a management network)",
    )
    return p


# The files of a deployment that live under --data-dir unless [pipeline] names them.
_DATA_FILES: Mapping[str, str] = {
    "sqlite_path": "hems.sqlite",
    "counter_state_path": "counter_state.sqlite",
    "spool_dir": "spool",
}


def under_data_dir(
    cfg: PipelineConfig, directory: str | os.PathLike[str], given: Collection[str]
) -> PipelineConfig:
    """``cfg`` with each of the embedded store, counter state and spool under ``data_dir`` -- except
    those the configuration file named (``given``), which are used as given, each on its own."""
    data = Path(directory)
    paths: dict[str, Any] = {key: str(data / name) for key, name in _DATA_FILES.items() if key not in given}
    return replace(cfg, **paths)


def given_settings(path: str | os.PathLike[str] | None) -> frozenset[str]:
    """The ``[pipeline]`` keys the configuration file sets (none without a file)."""
    return frozenset(config.read(path).section(PIPELINE_SECTION)) if path else frozenset()


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    """The ``[pipeline]`` table of --config (if any), unnamed paths under --data-dir, InfluxDB flags last.

    The token is deliberately not a flag (it would show in ``ps``): it comes from $HEMS_INFLUX_TOKEN.
    """
    path = args.config if args.config else None
    cfg = under_data_dir(PipelineConfig.load(path), data_dir(args.data_dir), given_settings(path))
    flags = {
        "influx_url": args.influx_url,
        "influx_org": args.influx_org,
        "influx_bucket": args.influx_bucket,
    }
    cfg = replace(cfg, **{k: v for k, v in flags.items() if v})
    if cfg.use_influx and not (cfg.influx_org and cfg.influx_bucket and cfg.influx_token):
        raise ConfigError(
            "InfluxDB needs an org, a bucket and a token: --influx-org/--influx-bucket (or HEMS_INFLUX_ORG/"
            "HEMS_INFLUX_BUCKET) and HEMS_INFLUX_TOKEN"
        )
    return cfg


def fleet_config(args: argparse.Namespace, cfg: PipelineConfig) -> FleetConfig | None:
    """The ``[fleet]`` settings when this collector is a home gateway (an upload URL is given)."""
    fleet = FleetConfig.load(args.config if args.config else None)
    if args.upload_url:
        fleet = replace(fleet, upload_url=args.upload_url)
    if args.keep_local:
        fleet = replace(fleet, keep_local=True)
    if fleet.upload_url is None:
        if args.keep_local:
            raise ConfigError("--keep-local is for gateway mode (--upload-url)")
        return None
    if cfg.use_influx:
        raise ConfigError("a gateway uploads to the fleet: give --upload-url or an InfluxDB, not both")
    return fleet


def open_uploader(fleet: FleetConfig) -> FleetUploader:
    assert fleet.upload_url is not None
    context = ssl.create_default_context(cafile=fleet.ca_file) if fleet.ca_file else None
    return FleetUploader(
        fleet.upload_url,
        fleet.credential(),
        timeout_s=fleet.upload_timeout_s,
        max_points=fleet.upload_max_points,
        ssl_context=context,
    )


async def run(args: argparse.Namespace) -> int:
    collector_config = config_from_args(args)
    cfg = pipeline_config(args)
    fleet = fleet_config(args, cfg)
    data_dir(args.data_dir).mkdir(parents=True, exist_ok=True)
    # A gateway keeps its own copy (if asked) in the embedded store; otherwise the store is the target.
    store_cfg = cfg if fleet is None else replace(cfg, store="sqlite")
    store: Store | None = None if fleet is not None and not fleet.keep_local else stores.open_store(store_cfg)
    if store is not None:
        try:
            await store.open()  # a store schema from a newer release stops here, before any polling
        except StoreUnavailable as exc:
            log.warning("store unavailable at start, spooling until it returns: %s", exc)
    uploader: FleetUploader | None = None
    try:  # an unusable spool directory (or a missing gateway credential) stops here, one line
        if fleet is None:
            assert store is not None
            pipeline = open_pipeline(cfg, store)
        else:
            uploader = open_uploader(fleet)
            pipeline = open_gateway_pipeline(cfg, fleet, uploader, store)
    except BaseException:
        if store is not None:
            await store.close()
        raise
    await pipeline.start()
    collector = Collector(collector_config)
    await collector.start()
    settle = heap.settle_later(collector.warm_up_s)  # start-up's objects out of the GC's way
    stopping = asyncio.Event()
    event_loop.stop_on_signals(stopping)
    # SQLite: retention; InfluxDB downsamples with its own tasks
    job = stores.maintenance(store, store_cfg) if store is not None else None
    retention = asyncio.create_task(job) if job is not None else None
    # The negawatt items of every household polled (pipeline.negawatt): what DR contractors are served.
    # A gateway derives them only into the home's own copy (--keep-local); the fleet's are not its job.
    households = sorted({d.household for d in collector_config.devices})
    negawatt = asyncio.create_task(negawatt_loop(store, households)) if store is not None else None
    stats = PumpStats()
    pumping = asyncio.create_task(pump(collector, pipeline, stats=stats))
    metrics = None
    if args.metrics_port is not None:
        metrics = await serve_metrics(
            args.metrics_host,
            args.metrics_port,
            lambda: {key: h.reason for key, h in collector.health().items()},
            lambda: {
                **pipeline.metrics(),
                "collector": _numbers(collector.stats()),
                "lost": tally(stats, pipeline, collector).lost,  # the pipeline's, the pump's, the queue's
                **({"upload": uploader.stats.as_dict()} if uploader is not None else {}),
            },
        )
        print(f"metrics on http://{args.metrics_host}:{args.metrics_port}/metrics", file=sys.stderr)
    target = fleet.upload_url if fleet is not None else stores.describe(cfg)
    print(
        f"collecting {len(collector_config.devices)} devices into {target} (Ctrl-C to stop)",
        file=sys.stderr,
    )
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=args.duration)
    stopping.set()
    settle.cancel()
    await collector.stop()
    await pumping
    for job_task in (retention, negawatt):
        if job_task is not None:
            job_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job_task
    await pipeline.close()
    if metrics is not None:
        await metrics.cleanup()
    if store is not None:
        await store.close()
    if uploader is not None:
        await uploader.close()
    stats.losses.flush()
    if uploader is not None:
        print(upload_summary(uploader.stats, pipeline), file=sys.stderr)
    result = tally(stats, pipeline, collector)
    print(result.line(), file=sys.stderr)  # the last line, gateway or not
    return 1 if result.lost_total else 0


def upload_summary(stats: UploadStats, pipeline: Pipeline) -> str:
    """What reached the fleet in this run, and what waits in the spool for the next."""
    spool = pipeline.spool
    waiting = spool.depth_points if spool is not None else 0
    refused = sum(stats.refused_points.values())
    return (
        f"uploaded: {stats.points} points in {stats.batches} batches ({stats.duplicates} already stored), "
        f"{refused} refused by the fleet{f' {dict(stats.refused_points)}' if refused else ''}, "
        f"{waiting} waiting in the spool"
    )


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return event_loop.run(run(args))  # hems.cli turns a known error into one line, exit 2
