"""Build the configured store and pipeline from ``PipelineConfig`` (one place for ``hems demo``,
``hems collect``, ``hems serve`` and the ingest replica to share).  Which store: ``pipeline.stores``,
the registry.

A spool directory or counter-state file that cannot be used (read-only volume, no permission) is a
``ConfigError`` naming the setting, raised here before anything is polled: the person who has to
fix it gets one line saying which setting and why, not a traceback at the first outage."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from config import ConfigError
from pipeline.config import SECTION, PipelineConfig
from pipeline.counters import CounterStateFile
from pipeline.fleet_config import FleetConfig
from pipeline.retention import retention_policy as retention_policy  # re-exported for the commands
from pipeline.spool import Spool, SpoolLocked
from pipeline.store import Sink, Store
from pipeline.stores import open_store as open_store  # re-exported: the registry opens stores
from pipeline.validate import Validator
from pipeline.writer import Pipeline

# The ingest replica's spool base is a command-line flag of ``hems serve --role ingest``, not a setting.
INGEST_SPOOL_FLAG = "--spool-dir"


def _unusable(key: str, path: str | Path, exc: Exception, section: str | None = SECTION) -> ConfigError:
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return ConfigError(f"cannot use {path}: {why}", section=section, key=key)


def open_pipeline(cfg: PipelineConfig, store: Store) -> Pipeline:
    """A writer with a durable spool and persistent counter state; call ``await p.start()``."""
    return _pipeline(cfg, store, max_delay=cfg.max_delay_s, store_write_timeout=cfg.store_write_timeout_s)


def open_gateway_pipeline(
    cfg: PipelineConfig, fleet: FleetConfig, uploader: Sink, local: Store | None
) -> Pipeline:
    """A home gateway's writer: every batch (one per ``upload_interval_s`` at most) goes into the
    spool, the gateway's outbox, and from there to the fleet; ``local`` keeps the home's own copy.

    Only the replayer waits on the fleet (polling never does), and the uploader bounds each request
    by ``upload_timeout_s`` itself: the writer's bound on a write is at least that, so an upload the
    fleet may still answer is not cut short and sent again."""
    return _pipeline(
        cfg,
        uploader,
        max_delay=fleet.upload_interval_s,
        max_replay_backoff=fleet.upload_backoff_max_s,
        store_write_timeout=max(cfg.store_write_timeout_s, fleet.upload_timeout_s),
        spool_first=True,
        copy_to=local,
    )


def open_ingest_pipeline(cfg: PipelineConfig, store: Store, spool_dir: Path) -> Pipeline:
    """An ingest replica's writer: points from gateways (counters already applied there) into the
    store, through a spool in the first free numbered slot under ``spool_dir`` (see ``claim_spool``)."""
    return Pipeline(
        store,
        spool=claim_spool(spool_dir, cfg),
        validator=Validator(max_future_skew=cfg.max_future_skew),
        batch_size=cfg.batch_size,
        max_delay=cfg.max_delay_s,
        store_write_timeout=cfg.store_write_timeout_s,
        write_concurrency=cfg.write_concurrency,
    )


def claim_spool(base: Path, cfg: PipelineConfig, max_slots: int = 256) -> Spool:
    """The first of ``base/0``, ``base/1``, ... that no live process holds (the spool's lock): any number
    of replicas share one volume, and one that restarts under another name takes a free slot and
    replays whatever a replica that died before it left there.  A ``base`` that cannot be used is a
    ``ConfigError`` naming ``--spool-dir``."""
    for slot in range(max_slots):
        with contextlib.suppress(SpoolLocked):
            try:
                return _spool(base / str(slot), cfg)
            except OSError as exc:
                raise _unusable(INGEST_SPOOL_FLAG, base, exc, section=None) from None
    raise SpoolLocked(f"all {max_slots} spool slots under {base} are in use")


def _spool(directory: Path | str, cfg: PipelineConfig) -> Spool:
    return Spool(
        directory,
        max_bytes=cfg.spool_max_bytes,
        segment_bytes=cfg.spool_segment_bytes,
        policy=cfg.spool_policy,
    )


def _pipeline(
    cfg: PipelineConfig,
    store: Sink,
    *,
    max_delay: float,
    store_write_timeout: float,
    max_replay_backoff: float = 30.0,
    spool_first: bool = False,
    copy_to: Store | None = None,
) -> Pipeline:
    try:
        spool = _spool(cfg.spool_dir, cfg)
    except OSError as exc:
        raise _unusable("spool_dir", cfg.spool_dir, exc) from None
    try:
        counter_state = CounterStateFile(cfg.counter_state_path)
    except (OSError, sqlite3.Error) as exc:
        spool.close()
        raise _unusable("counter_state_path", cfg.counter_state_path, exc) from None
    return Pipeline(
        store,
        spool=spool,
        counter_state=counter_state,
        validator=Validator(max_future_skew=cfg.max_future_skew),
        batch_size=cfg.batch_size,
        max_delay=max_delay,
        max_replay_backoff=max_replay_backoff,
        store_write_timeout=store_write_timeout,
        spool_first=spool_first,
        copy_to=copy_to,
        write_concurrency=cfg.write_concurrency,
    )
