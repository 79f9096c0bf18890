"""Build the configured store and pipeline from ``PipelineConfig`` (one place for ``hems demo``,
``hems collect`` and ``hems serve`` to share)."""

from __future__ import annotations

from typing import Literal, cast

from pipeline.config import PipelineConfig
from pipeline.counters import CounterStateFile
from pipeline.retention import RetentionPolicy
from pipeline.spool import Spool
from pipeline.sqlite_store import SQLiteStore
from pipeline.store import Store
from pipeline.validate import Validator
from pipeline.writer import Pipeline


def open_store(cfg: PipelineConfig) -> Store:
    """InfluxDB when ``HEMS_INFLUX_URL`` (or ``influx_url``) is set, else the embedded SQLite store."""
    if cfg.use_influx:
        from pipeline.influx_store import InfluxStore  # imported lazily: the embedded path needs no client

        return InfluxStore.from_config(cfg)
    return SQLiteStore(cfg.sqlite_path, synchronous=cfg.sqlite_synchronous)


def open_pipeline(cfg: PipelineConfig, store: Store) -> Pipeline:
    """A writer with a durable spool and persistent counter state; call ``await p.start()``."""
    policy = cast(Literal["refuse", "drop_oldest"], cfg.spool_policy)
    return Pipeline(
        store,
        spool=Spool(
            cfg.spool_dir,
            max_bytes=cfg.spool_max_bytes,
            segment_bytes=cfg.spool_segment_bytes,
            policy=policy,
        ),
        counter_state=CounterStateFile(cfg.counter_state_path),
        validator=Validator(max_future_skew=cfg.max_future_skew),
        batch_size=cfg.batch_size,
        max_delay=cfg.max_delay_s,
    )


def retention_policy(cfg: PipelineConfig) -> RetentionPolicy:
    return RetentionPolicy(raw_days=cfg.raw_days, hourly_days=cfg.hourly_days, daily_days=cfg.daily_days)
