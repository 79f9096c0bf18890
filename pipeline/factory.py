"""Build the configured store and pipeline from ``PipelineConfig`` (one place for ``hems demo``,
``hems collect`` and ``hems serve`` to share).  Which store: ``pipeline.stores``, the registry.

A spool directory or counter-state file that cannot be used (read-only volume, no permission) is a
``ConfigError`` naming the setting, raised here before anything is polled: the person who has to
fix it gets one line saying which setting and why, not a traceback at the first outage."""

from __future__ import annotations

import sqlite3

from config import ConfigError
from pipeline.config import SECTION, PipelineConfig
from pipeline.counters import CounterStateFile
from pipeline.retention import retention_policy as retention_policy  # re-exported for the commands
from pipeline.spool import Spool
from pipeline.store import Store
from pipeline.stores import open_store as open_store  # re-exported: the registry opens stores
from pipeline.validate import Validator
from pipeline.writer import Pipeline


def _unusable(key: str, path: str, exc: Exception) -> ConfigError:
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return ConfigError(f"cannot use {path}: {why}", section=SECTION, key=key)


def open_pipeline(cfg: PipelineConfig, store: Store) -> Pipeline:
    """A writer with a durable spool and persistent counter state; call ``await p.start()``."""
    try:
        spool = Spool(
            cfg.spool_dir,
            max_bytes=cfg.spool_max_bytes,
            segment_bytes=cfg.spool_segment_bytes,
            policy=cfg.spool_policy,
        )
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
        max_delay=cfg.max_delay_s,
        store_write_timeout=cfg.store_write_timeout_s,
    )
