"""A live world for the maintenance tests: emulated homes (``devices.fleet``) polled by the real
collector into the real pipeline and SQLite store, served by the app over HTTP.

Nothing is faked: a fault is injected into a device's server and travels as a protocol failure to the
collector, as a health reading through the pipeline into the store, and out through the API.  Each run
takes a loopback /16 of its own among 127.2-127.19 (the collector tests use 127.30-127.99, the device
tests 127.100 and up) and ephemeral ports.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer

from access.api.state import STATE, AppState
from access.app import make_app
from access.compiler import Policy
from access.maintenance import Rules
from access.relationships import RelationshipStore
from access.tokens import TokenStore
from collector.config import from_manifest
from collector.runner import Collector
from devices.fleet import Fleet
from hems.collect import pump
from pipeline.sqlite_store import SQLiteStore
from pipeline.writer import Pipeline
from tests.loopback import free_prefix

PV = "sps.pv_after_maintenance"
OWN = "sps.disclosure_to_person"
POLL_S = 2.0
QUIET = {"multicast": False, "announce_interval_s": None}
PASSWORD = "correct horse battery"
RULES = Rules(min_silence=timedelta(seconds=1))


@dataclass
class Live:
    fleet: Fleet
    collector: Collector
    state: AppState
    base: str
    token: str
    households: list[str]
    app: Any


async def start_live(
    tmp_path: Path, policy: Policy, homes: int = 3, alert_every_s: float | None = None
) -> AsyncIterator[Live]:
    fleet = Fleet(
        homes,
        5,
        speed=1.0,
        start=datetime.now(UTC),
        modbus_port=0,
        address_prefix=free_prefix(),
        echonet_options=QUIET,
    )
    await fleet.start()
    households = [h.household_id for h in fleet.homes]
    controller = fleet.homes[0].address.rsplit(".", 2)[0] + ".255.1"
    config = from_manifest(
        fleet.manifest(),
        "live-test",
        power_interval_s=POLL_S,
        counter_interval_s=POLL_S,
        timeout_s=0.3,
        backoff_base_s=0.5,
        backoff_max_s=1.0,
        discovery_wait_s=0.3,
        echonet_bind=controller,
        echonet_multicast=False,
        health_interval_s=5.0,
    )
    store = SQLiteStore(tmp_path / "series.sqlite")
    pipeline = Pipeline(store, max_delay=0.1)
    await pipeline.start()
    collector = Collector(config)
    await collector.start()
    pumping = asyncio.create_task(pump(collector, pipeline, linger_s=0.05))
    db = tmp_path / "access.sqlite"
    rel = RelationshipStore(db)
    rel.add_households(households)
    rel.add_contracts([(h, "sps", "service") for h in households], since=0)  # SPS's monitoring customers
    rel.add_principal("inst", "installer", "Roof Installers", [PV])
    rel.add_principal("owner", "homeowner", "Owner", [OWN])
    rel.link_many([("inst", h, "installer") for h in households], since=0)
    rel.link("owner", households[0], "homeowner", since=0)
    tokens = TokenStore(db)
    _, token = tokens.create("inst", [PV], rel.principal("inst").purposes)
    tokens.close()
    rel.close()
    app = make_app(
        store,
        db,
        policy=policy,
        secure_cookies=False,
        rate_per_s=None,
        maintenance_rules=RULES,
        alert_every_s=alert_every_s,
    )
    app[STATE].web.set_password("inst", PASSWORD)
    app[STATE].web.set_password("owner", PASSWORD)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield Live(fleet, collector, app[STATE], str(server.make_url("")).rstrip("/"), token, households, app)
    finally:
        await server.close()
        await collector.stop()
        with contextlib.suppress(Exception):
            await pumping
        await pipeline.close()
        await store.close()
        await fleet.stop()
