"""``hems demo``: the whole product on one machine with no server to install.

Emulated homes (SunSpec Modbus + ECHONET Lite on loopback) are polled by the collectors into the
embedded SQLite store, and the API + web views serve them to sample principals: one homeowner per
home, an installer, a sales company, a wholesaler, an approved company, an analyst, companies' staff
and a retailer.  The homes' past days are filled from the same deterministic physics so the charts
have history at once.  Options may also come from the ``[demo]`` section of ``--config`` (flags win);
its ``[pipeline]`` settings apply too, with the files under ``--data-dir`` unless ``sqlite_path`` is set.

The world has periods, as a real one does: every home is a customer of SPS (the monitoring service)
and ENEX (electricity) for a year, the first also of Kaluza's app; the last home changed hands two days
ago (its former occupant keeps their own period, the new one sees nothing before moving in); the
second changed installers three days ago (the old one keeps nothing, the new one reads from then on).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

import config
from access.app import make_app
from access.auth import WebAuth
from access.cli import data_dir
from access.relationships import RelationshipStore
from access.tariff import load as load_tariff
from access.tokens import TokenStore
from collector.config import COUNTER_INTERVAL_S, POWER_INTERVAL_S, from_manifest
from collector.runner import Collector
from common import loop as event_loop
from devices.fleet import Fleet
from devices.physics import Household
from hems.collect import PumpStats, given_settings, pump, tally, under_data_dir
from hems.history import readings_of, sample_times
from pipeline.config import PipelineConfig
from pipeline.factory import open_pipeline, retention_policy
from pipeline.negawatt import negawatt_loop
from pipeline.query import SeriesQuery
from pipeline.retention import retention_loop
from pipeline.sqlite_store import SQLiteStore
from pipeline.writer import Pipeline

log = logging.getLogger("hems.demo")

MAINTENANCE = "sps.pv_after_maintenance"
DISCLOSURE = "sps.disclosure_to_person"
EV_DISCLOSURE = "kaluza.disclosure_to_person"  # the car's data is under the EV-charging terms
STATISTICS = "enex.marketing"


@dataclass(frozen=True)
class HistoryClock:
    """Wall-clock time, with the physics integrating from ``start`` (days ago) so the past exists."""

    start: datetime

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class Partner:
    id: str
    kind: str
    name: str
    purposes: tuple[str, ...]
    link_role: str | None  # role held for every demo home, or None (approval / statistics / staff)
    company: str | None = None  # for a company's staff


SUPPLY = ("enex.wheeling_contract", "enex.supply_point_check", "enex.grid_operations")
PARTNERS = (
    Partner("sales-demo", "sales_company", "Demo Solar Sales", (MAINTENANCE,), "sales_company"),
    Partner("installer-demo", "installer", "Demo Installer", (MAINTENANCE,), "installer"),
    Partner("wholesaler-demo", "wholesaler", "Demo Wholesaler", (MAINTENANCE,), "wholesaler"),
    Partner("approved-demo", "approved_company", "Demo Monitoring Co.", (MAINTENANCE,), None),
    Partner("analyst-demo", "analyst", "ENEX Analytics", (STATISTICS,), None, "enex"),
    Partner("sps-staff", "operator", "SPS Operations", ("sps.service_provision",), None, "sps"),
    Partner("retail-demo", "retailer", "Demo Retail Power", SUPPLY, "retailer"),
)
OLD_INSTALLER = Partner("installer-old", "installer", "Former Installer", (MAINTENANCE,), None)
YEAR = timedelta(days=365)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hems demo", description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--homes", type=int, default=3, help="emulated homes (default 3)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--host", default="127.0.0.1", help="address of the web views and API")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--modbus-port", type=int, default=5020)
    p.add_argument("--address-prefix", default="127.10", help="loopback /16 of the emulated homes")
    p.add_argument("--echonet-bind", default="127.0.0.1", help="local address of the ECHONET controller")
    p.add_argument(
        "--data-dir",
        default=None,
        help="store, access database and spool (default $HEMS_DATA_DIR, else ./var: the same rule as every "
        "hems command, so 'hems principals' and 'hems ledger' find the demo's database)",
    )
    p.add_argument("--history-days", type=int, default=7, help="days of past readings to fill (0: none)")
    p.add_argument("--power-interval", type=float, default=POWER_INTERVAL_S)
    p.add_argument("--counter-interval", type=float, default=COUNTER_INTERVAL_S)
    p.add_argument("--summary-every", type=float, default=10.0, help="seconds between summary lines")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--config", default=None, help="TOML file ([demo] options, [pipeline] settings)")
    p.add_argument(
        "--control-port",
        type=int,
        default=None,
        help="serve the emulated devices' fault-injection API on 127.0.0.1:PORT (see devices/control.py)",
    )
    return p


def history_start(days: int) -> datetime:
    """Midnight UTC ``days`` ago: a fixed anchor, so restarting the demo the same day replays the same
    physics and the stored counters continue instead of starting a new segment."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days)


async def fill_history(
    pipeline: Pipeline, households: Sequence[Household], start: datetime, every: timedelta
) -> int:
    """Store the homes' past readings; replays are harmless (same series + timestamp = same point)."""
    stop = datetime.now(UTC)
    stored = 0
    for household in households:
        batch = []
        for t in sample_times(start, stop, every):
            batch.extend(readings_of(household.household_id, household.state(t)))
            if len(batch) >= 5000:
                stored += (await pipeline.submit(batch)).accepted
                batch = []
        if batch:
            stored += (await pipeline.submit(batch)).accepted
    await pipeline.flush()
    return stored


def seed_principals(db: Path, households: Sequence[str]) -> dict[str, str]:
    """Create the sample world (once: companies, contracts, links with their periods) and give each
    principal a fresh credential for this run.

    Returns principal id -> credential: a password for homeowners and the installer (web sign-in), an
    API token for the partners.  Credentials are new at each start so none is ever committed or reused.
    """
    rel = RelationshipStore(db)
    tokens = TokenStore(db)
    auth = WebAuth(db)
    creds: dict[str, str] = {}
    now = datetime.now(UTC).replace(microsecond=0)
    moved = now - timedelta(days=2)  # the last home changed hands
    changed = now - timedelta(days=3)  # the second home changed installers
    try:
        fresh = rel.find_principal("sales-demo") is None
        rel.add_households(households)
        if fresh:
            rel.add_contracts([(h, "sps", "service") for h in households], since=now - YEAR)
            rel.add_contracts([(h, "enex", "supply") for h in households], since=now - YEAR)
            rel.add_contract(households[0], "kaluza", "app", since=now - timedelta(days=30))
        for i, hid in enumerate(households, start=1):
            owner = f"owner-{i}"
            last = i == len(households) and len(households) > 1
            if rel.find_principal(owner) is None:
                rel.add_principal(owner, "homeowner", f"Homeowner of home {i}", (DISCLOSURE, EV_DISCLOSURE))
                rel.link(owner, hid, "homeowner", since=moved if last else now - YEAR)
                if last:
                    rel.add_principal(
                        "former-owner", "homeowner", f"Former homeowner of home {i}", (DISCLOSURE,)
                    )
                    rel.link("former-owner", hid, "homeowner", since=now - YEAR, until=moved)
            creds[owner] = secrets.token_urlsafe(9)
            auth.set_password(owner, creds[owner])
        if rel.find_principal("former-owner") is not None:
            creds["former-owner"] = secrets.token_urlsafe(9)
            auth.set_password("former-owner", creds["former-owner"])
        if fresh:
            rel.add_principal(
                OLD_INSTALLER.id, OLD_INSTALLER.kind, OLD_INSTALLER.name, OLD_INSTALLER.purposes
            )
        for partner in PARTNERS:
            if rel.find_principal(partner.id) is None:
                rel.add_principal(partner.id, partner.kind, partner.name, partner.purposes, partner.company)
                if partner.link_role == "installer" and len(households) > 1:
                    second = households[1]
                    rel.link_many(
                        [(partner.id, h, "installer") for h in households if h != second], since=now - YEAR
                    )
                    rel.link(OLD_INSTALLER.id, second, "installer", since=now - YEAR, until=changed)
                    rel.link(partner.id, second, "installer", since=changed)
                elif partner.link_role is not None:
                    rel.link_many(
                        [(partner.id, hid, partner.link_role) for hid in households], since=now - YEAR
                    )
                if partner.kind == "approved_company":
                    rel.approve(
                        "sales-demo",
                        partner.id,
                        ("pv", "battery", "equipment"),
                        (MAINTENANCE,),
                        valid_from=now - timedelta(days=30),
                        valid_to=now + YEAR,
                    )
            if partner.kind == "installer":
                creds[partner.id] = secrets.token_urlsafe(9)
                auth.set_password(partner.id, creds[partner.id])
            principal = rel.principal(partner.id)
            _, text = tokens.create(
                partner.id, partner.purposes, principal.purposes, ttl_s=86400, label="hems demo"
            )
            creds[f"{partner.id}:token"] = text
    finally:
        rel.close()
        tokens.close()
        auth.close()
    return creds


def sign_in_text(base: str, households: Sequence[str], creds: dict[str, str]) -> str:
    lines = [f"web views and API on {base}/", ""]
    for i, hid in enumerate(households, start=1):
        moved = " (moved in 2 days ago)" if i == len(households) and "former-owner" in creds else ""
        lines.append(f"  homeowner  owner-{i} / {creds[f'owner-{i}']}   (household {hid}){moved}")
    if "former-owner" in creds:
        lines.append(
            f"  homeowner  former-owner / {creds['former-owner']}   (left {households[-1]} 2 days ago)"
        )
    lines.append(f"  installer  installer-demo / {creds['installer-demo']}")
    lines.append("")
    lines.append("API tokens (valid 24 h, shown once):")
    for partner in PARTNERS:
        lines.append(f"  {partner.id:<16} {creds[partner.id + ':token']}")
    first = households[0]
    lines += [
        "",
        "try:",
        f"  curl -H 'Authorization: Bearer {creds['installer-demo:token']}' \\",
        f"       '{base}/api/v1/households/{first}/series/pv?purpose={MAINTENANCE}&every=1h'",
    ]
    return "\n".join(lines)


async def summary_line(store: SQLiteStore, collector: Collector, pipeline: Pipeline, household: str) -> str:
    now = datetime.now(UTC)
    health = collector.health()
    ok = sum(1 for h in health.values() if h.reason == "ok")
    trouble = Counter(
        "pending (not polled yet)" if h.reason == "pending" else h.reason
        for h in health.values()
        if h.reason != "ok"
    )
    metrics = pipeline.metrics()
    parts = [
        now.astimezone().strftime("%H:%M:%S"),
        f"devices ok {ok}/{len(health)}" + (f" ({dict(trouble)})" if trouble else ""),
        f"stored {metrics['points_written']}",
        f"spool {metrics.get('spool_depth_points', 0)}",
    ]
    for category, field, label, unit in (
        ("pv", "power_w", "PV", "W"),
        ("electricity", "power_w", "grid", "W"),
        ("battery", "soc_pct", "battery", "%"),
    ):
        q = SeriesQuery(
            (household,),
            category,
            (field,),
            now - timedelta(minutes=5),
            now + timedelta(seconds=1),
            devices=("solar", "smart_meter", "battery"),
        )
        df = await store.query(q)
        value = df[field].drop_nulls()
        parts.append(f"{label} {value[-1]:.0f} {unit}" if len(value) else f"{label} -")
    return " | ".join(parts)


async def run(args: argparse.Namespace) -> int:
    data = data_dir(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    # always the embedded store (the environment's InfluxDB settings are ignored here)
    cfg = under_data_dir(PipelineConfig.load(args.config, env={}), data, given_settings(args.config))
    start = history_start(args.history_days)
    clock = HistoryClock(start)

    simulated: list[Household] = []

    def household(hid: str, seed: int, _clock: Any) -> Household:
        simulated.append(Household(hid, seed, clock))  # type: ignore[arg-type]  # duck-typed clock
        return simulated[-1]

    fleet = Fleet(
        args.homes,
        args.seed,
        speed=1.0,
        modbus_port=args.modbus_port,
        address_prefix=args.address_prefix,
        household_factory=household,
        control_port=args.control_port,
    )
    households = [h.household_id for h in fleet.homes]
    store = SQLiteStore(cfg.sqlite_path, synchronous=cfg.sqlite_synchronous)
    await store.open()  # creates or migrates the file; a file from a newer release stops the demo here
    pipeline = open_pipeline(cfg, store)
    await pipeline.start()
    if args.history_days > 0:
        print(f"filling {args.history_days} days of history for {len(households)} homes...", file=sys.stderr)
        stored = await fill_history(pipeline, simulated, start, timedelta(minutes=5))
        print(f"history: {stored} readings", file=sys.stderr)
    await fleet.start()
    manifest = data / "manifest.json"
    fleet.write_manifest(manifest)
    config = from_manifest(
        fleet.manifest(),
        str(manifest),
        power_interval_s=args.power_interval,
        counter_interval_s=args.counter_interval,
        echonet_bind=args.echonet_bind,
    )
    collector = Collector(config)
    await collector.start()
    stopping = asyncio.Event()
    pump_stats = PumpStats()
    pumping = asyncio.create_task(pump(collector, pipeline, stats=pump_stats))
    retention = asyncio.create_task(retention_loop(store, retention_policy(cfg)))
    backfill = timedelta(days=max(args.history_days, 1))
    negawatt = asyncio.create_task(negawatt_loop(store, households, backfill=backfill))

    db = data / "access.sqlite"
    creds = seed_principals(db, households)
    app = make_app(
        store,
        db,
        secure_cookies=False,  # plain HTTP on localhost
        collector_health=lambda: {key: h.reason for key, h in collector.health().items()},
        # the pump's refusals and the queue's drops with the spool's losses, as hems collect shows them
        pipeline_stats=lambda: {**pipeline.metrics(), "lost": tally(pump_stats, pipeline, collector).lost},
        alert_every_s=args.power_interval,  # installers' alert webhooks: told within a poll or two
        tariff=args.tariff,
        live_ahead=True,
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    print(sign_in_text(f"http://{args.host}:{args.port}", households, creds), flush=True)
    if fleet.control_url:
        example = f"{fleet.control_url}/faults/{households[0]}/inverter"
        print(f"fault injection: curl -X PUT -d '{{\"no_reply\": true}}' {example}", flush=True)
    print(
        f"data directory: {data.resolve()} (hems principals / hems ledger use it with HEMS_DATA_DIR)",
        flush=True,
    )

    loop = asyncio.get_running_loop()
    event_loop.stop_on_signals(stopping)
    deadline = None if args.duration is None else loop.time() + args.duration
    try:
        while not stopping.is_set():
            wait = args.summary_every
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - loop.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=wait)
            if stopping.is_set():
                break
            print(await summary_line(store, collector, pipeline, households[0]), flush=True)
            if deadline is not None and loop.time() >= deadline:
                break
    finally:
        stopping.set()
        await runner.cleanup()
        await collector.stop()
        stats = await pumping
        for job in (retention, negawatt):
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
        await pipeline.close()
        await fleet.stop()
        await store.close()
    print(f"demo stopped: {tally(stats, pipeline, collector).line()}")
    return 0


def main(argv: Sequence[str]) -> int:
    args, cfile = config.parse_args_with_config(build_parser(), list(argv), "demo")
    args.tariff = load_tariff(cfile.section("tariff"), cfile.path)  # [tariff]: the homeowner's prices
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return event_loop.run(run(args))
    except OSError as exc:
        print(f"hems demo: {exc}", file=sys.stderr)
        return 1
