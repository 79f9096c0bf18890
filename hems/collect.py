"""``hems collect``: the collector's reading stream fed into the pipeline, and nothing else.

This is the only place where collection meets storage (the collector never writes to a store and the
pipeline never speaks a device protocol), so ``hems demo`` reuses ``pump`` rather than wiring its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from access.cli import data_dir
from collector.cli import add_collector_arguments, config_from_args
from collector.reading import Reading
from collector.runner import Collector
from common import loop as event_loop
from config import ConfigError
from pipeline import stores
from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError
from pipeline.exposition import serve_metrics
from pipeline.factory import open_pipeline
from pipeline.negawatt import negawatt_loop
from pipeline.store import StoreUnavailable
from pipeline.writer import Backpressure, Pipeline

log = logging.getLogger("hems.collect")


@dataclass
class PumpStats:
    """What went from the collector into the pipeline; ``unacknowledged`` is non-zero only if the
    run ended while the store was down and the spool was full."""

    submitted: int = 0
    accepted: int = 0
    rejected: int = 0
    backpressure_retries: int = 0
    unacknowledged: int = 0


async def _submit_until_durable(
    pipeline: Pipeline, batch: list[Reading], stats: PumpStats, stopping: asyncio.Event
) -> None:
    """Hand a batch over, retrying on backpressure instead of dropping it: while the store is down and
    the spool is full, holding readings here slows the collector (visible as lateness), loses nothing.

    Any other pipeline error is a refusal a retry cannot fix (a store schema that does not fit): the
    pipeline has counted and logged it; here the batch is counted as not acknowledged."""
    delay = 0.5
    while True:
        try:
            result = await pipeline.submit(batch)
        except Backpressure as exc:
            if stopping.is_set():
                stats.unacknowledged += len(batch)
                log.error("stopping with %d readings not acknowledged: %s", len(batch), exc)
                return
            stats.backpressure_retries += 1
            log.warning("pipeline refused a batch (%s); retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            continue
        except PipelineError as exc:
            stats.unacknowledged += len(batch)
            log.error("pipeline refused %d readings: %s", len(batch), exc)
            return
        stats.submitted += len(batch)
        stats.accepted += result.accepted
        stats.rejected += len(result.rejected)
        return


async def pump(
    collector: Collector,
    pipeline: Pipeline,
    *,
    linger_s: float = 0.2,
    max_batch: int = 2000,
    concurrency: int = 4,
    stopping: asyncio.Event | None = None,
) -> PumpStats:
    """Move readings until the collector's stream ends.

    Readings are grouped for up to ``linger_s`` so the pipeline sees batches, and up to ``concurrency``
    batches wait for their acknowledgement at once, so one slow fsync never stalls collection.
    """
    stats = PumpStats()
    stopping = stopping or asyncio.Event()
    slots = asyncio.Semaphore(concurrency)
    in_flight: set[asyncio.Task[None]] = set()
    stream = collector.readings().__aiter__()
    batch: list[Reading] = []
    pending_next: asyncio.Task[Reading] | None = None

    async def hand_over(items: list[Reading]) -> None:
        try:
            await _submit_until_durable(pipeline, items, stats, stopping)
        finally:
            slots.release()

    async def dispatch() -> None:
        nonlocal batch
        if not batch:
            return
        await slots.acquire()
        task = asyncio.create_task(hand_over(batch))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        batch = []

    loop = asyncio.get_running_loop()
    deadline = loop.time() + linger_s
    try:
        while True:
            if pending_next is None:
                pending_next = asyncio.ensure_future(stream.__anext__())
            timeout = max(0.0, deadline - loop.time())
            done, _ = await asyncio.wait({pending_next}, timeout=timeout)
            if done:
                try:
                    reading = pending_next.result()
                except StopAsyncIteration:
                    pending_next = None
                    break
                pending_next = None
                batch.append(reading)
                if len(batch) < max_batch:
                    continue
            await dispatch()
            deadline = loop.time() + linger_s
        await dispatch()
        if in_flight:
            await asyncio.gather(*in_flight)
    finally:
        if pending_next is not None:
            pending_next.cancel()
    return stats


def _numbers(stats: dict[str, object]) -> dict[str, float]:
    """The collector's flat numeric statistics (lateness, polls, health readings...)."""
    return {k: float(v) for k, v in stats.items() if isinstance(v, int | float)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hems collect",
        description="Poll devices (from a TOML config or a `hems devices` manifest) into the store. "
        "InfluxDB when --influx-url (or HEMS_INFLUX_URL) is given, else the embedded SQLite store.",
    )
    add_collector_arguments(p)
    p.add_argument(
        "--data-dir",
        default=None,
        help="where the embedded store, spool and counter state live (default $HEMS_DATA_DIR, else ./var)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve device health and pipeline counters as Prometheus text on 127.0.0.1:PORT/metrics",
    )
    p.add_argument("--influx-url", default=None, help="InfluxDB 2.x URL (default $HEMS_INFLUX_URL)")
    p.add_argument("--influx-org", default=None, help="default $HEMS_INFLUX_ORG")
    p.add_argument("--influx-bucket", default=None, help="default $HEMS_INFLUX_BUCKET")
    return p


def under_data_dir(cfg: PipelineConfig, data_dir: str | os.PathLike[str]) -> PipelineConfig:
    """``cfg`` with the embedded store, counter state and spool laid out under ``data_dir``, unless
    the configuration chose the store's file itself (then its paths are kept as given)."""
    if cfg.sqlite_path != PipelineConfig.sqlite_path:
        return cfg
    data = Path(data_dir)
    return replace(
        cfg,
        sqlite_path=str(data / "hems.sqlite"),
        counter_state_path=str(data / "counter_state.sqlite"),
        spool_dir=str(data / "spool"),
    )


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    """The ``[pipeline]`` table of --config (if any), paths under --data-dir, InfluxDB flags last.

    The token is deliberately not a flag (it would show in ``ps``): it comes from $HEMS_INFLUX_TOKEN.
    """
    cfg = under_data_dir(PipelineConfig.load(args.config if args.config else None), data_dir(args.data_dir))
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


async def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    cfg = pipeline_config(args)
    data_dir(args.data_dir).mkdir(parents=True, exist_ok=True)
    store = stores.open_store(cfg)
    try:
        await store.open()  # a store schema from a newer release stops here, before any polling
    except StoreUnavailable as exc:
        log.warning("store unavailable at start, spooling until it returns: %s", exc)
    pipeline = open_pipeline(cfg, store)
    await pipeline.start()
    collector = Collector(config)
    await collector.start()
    stopping = asyncio.Event()
    event_loop.stop_on_signals(stopping)
    job = stores.maintenance(store, cfg)  # SQLite: retention; InfluxDB downsamples with its own tasks
    retention = asyncio.create_task(job) if job is not None else None
    # The negawatt items of every household polled (pipeline.negawatt): what DR contractors are served.
    negawatt = asyncio.create_task(negawatt_loop(store, sorted({d.household for d in config.devices})))
    pumping = asyncio.create_task(pump(collector, pipeline, stopping=stopping))
    metrics = None
    if args.metrics_port is not None:
        metrics = await serve_metrics(
            "127.0.0.1",
            args.metrics_port,
            lambda: {key: h.reason for key, h in collector.health().items()},
            lambda: {**pipeline.metrics(), "collector": _numbers(collector.stats())},
        )
        print(f"metrics on http://127.0.0.1:{args.metrics_port}/metrics", file=sys.stderr)
    print(
        f"collecting {len(config.devices)} devices into {stores.describe(cfg)} (Ctrl-C to stop)",
        file=sys.stderr,
    )
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=args.duration)
    stopping.set()
    if metrics is not None:
        await metrics.cleanup()
    await collector.stop()
    stats = await pumping
    for job_task in (retention, negawatt):
        if job_task is not None:
            job_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job_task
    await pipeline.close()
    await store.close()
    print(
        f"readings: {stats.accepted} stored, {stats.rejected} rejected, "
        f"{stats.unacknowledged} not acknowledged",
        file=sys.stderr,
    )
    return 1 if stats.unacknowledged else 0


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return event_loop.run(run(args))  # hems.cli turns a known error into one line, exit 2
