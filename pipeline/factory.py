"""Build the configured store and pipeline from ``PipelineConfig`` (one place for ``hems demo``,
``hems collect`` and ``hems serve`` to share).  Which store: ``pipeline.stores``, the registry."""

from __future__ import annotations

from pipeline.config import PipelineConfig
from pipeline.counters import CounterStateFile
from pipeline.retention import retention_policy as retention_policy  # re-exported for the commands
from pipeline.spool import Spool
from pipeline.store import Store
from pipeline.stores import open_store as open_store  # re-exported: the registry opens stores
from pipeline.validate import Validator
from pipeline.writer import Pipeline


def open_pipeline(cfg: PipelineConfig, store: Store) -> Pipeline:
    """A writer with a durable spool and persistent counter state; call ``await p.start()``."""
    return Pipeline(
        store,
        spool=Spool(
            cfg.spool_dir,
            max_bytes=cfg.spool_max_bytes,
            segment_bytes=cfg.spool_segment_bytes,
            policy=cfg.spool_policy,
        ),
        counter_state=CounterStateFile(cfg.counter_state_path),
        validator=Validator(max_future_skew=cfg.max_future_skew),
        batch_size=cfg.batch_size,
        max_delay=cfg.max_delay_s,
    )
