"""An ingest replica (``hems serve --role ingest``): the fleet's upload endpoint over the pipeline.

Wiring only: the store and the pipeline come from ``pipeline``, the endpoint and the gateway
credentials from ``access``.  A replica keeps nothing another replica needs: the store and the access
database are shared, and its spool is its own.

The spool is one of the numbered slots under ``--spool-dir`` (``pipeline.factory.claim_spool``): any
number of replicas, or ``--workers``, share one volume, and a replica that restarts (under another
container name) takes a free slot and replays whatever a replica that died before it left there.
Scaling down leaves the highest slots: start a replica once more to drain one that still holds points
(``hems_pipeline_spool_depth_points`` on its /metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from access.api.ingest import IngestService, make_ingest_app
from access.db import AccessDb
from access.gateways import GatewayCredentials
from pipeline.config import PipelineConfig
from pipeline.factory import open_ingest_pipeline
from pipeline.fleet_config import FleetConfig
from pipeline.negawatt import negawatt_loop
from pipeline.store import Store
from pipeline.writer import Pipeline

log = logging.getLogger(__name__)


# The leader lock of the negawatt derivation (``Db.leads``): one replica of all derives.
NEGAWATT_JOB = "negawatt items"


@dataclass
class IngestReplica:
    app: web.Application
    pipeline: Pipeline
    credentials: GatewayCredentials
    negawatt: asyncio.Task[None] | None = None

    async def close(self) -> None:
        """Stop deriving; drain the pipeline (what is accepted is durable: in the store or in this
        slot's spool)."""
        if self.negawatt is not None:
            self.negawatt.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.negawatt
        await self.pipeline.close()
        self.credentials.close()


async def open_replica(
    store: Store,
    access_db: AccessDb,
    spool_dir: Path,
    config_path: str | None,
    metrics_dir: Path | None = None,
    negawatt_every_s: float | None = None,
) -> IngestReplica:
    """The replica's app, pipeline and credentials; with ``negawatt_every_s`` it also derives the
    negawatt items of the households gateways upload (``pipeline.negawatt``; a demand-response
    contractor is served those, never the raw series) every that many seconds, when it holds the job's
    lock among all replicas on the access database."""
    cfg = PipelineConfig.load(config_path)
    fleet = FleetConfig.load(config_path)
    pipeline = open_ingest_pipeline(cfg, store, spool_dir)
    spool = pipeline.spool
    assert spool is not None
    log.info("ingest replica spooling in %s (%d points waiting from before)", spool.dir, spool.depth_points)
    await pipeline.start()
    credentials = GatewayCredentials(access_db)
    service = IngestService(credentials, pipeline, store.ping, fleet)
    negawatt = None
    if negawatt_every_s is not None:
        negawatt = asyncio.create_task(
            negawatt_loop(
                store,
                credentials.uploading_households,
                every_s=negawatt_every_s,
                leads=lambda: credentials.leads(NEGAWATT_JOB),
            )
        )
    return IngestReplica(make_ingest_app(service, metrics_dir), pipeline, credentials, negawatt)
