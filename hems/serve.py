"""``hems serve``: the API and web views over the configured store, or (``--role ingest``) the
endpoint home gateways upload to (``hems.ingest``).

This wiring lives in ``hems`` because it joins two packages: the store is opened here (through the
pipeline's store registry) and handed to the access app, which only ever sees the ``Store``
interface.  Options may also come from the ``[serve]`` section of ``--config`` (flags win).  The loop
is ``common.loop.run`` (uvloop where installed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import shutil
import socket
import ssl
import sys
import tempfile
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path

from aiohttp import web

import config
from access.api import multiproc
from access.api.state import DEFAULT_PAGE_CACHE_BYTES
from access.db import AccessDb, check_location, describe, is_url
from access.keys import key_file_for
from access.location import access_db, data_dir, exists
from access.tariff import Tariff
from access.tariff import load as load_tariff
from common import heap
from common.loop import run, stop_on_signals
from hems.errors import KNOWN_ERRORS, UsageError
from hems.ingest import IngestReplica, open_replica
from pipeline.store import Store, StoreUnavailable

# The workers' shared page file: in memory where the system offers a tmpfs for it.
SHARED_PAGES_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None
DEFAULT_PAGE_CACHE_MB = DEFAULT_PAGE_CACHE_BYTES / 2**20


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hems serve",
        description="HTTP API and web views, or (--role ingest) the endpoint home gateways upload to",
    )
    parser.add_argument(
        "--role",
        choices=("api", "ingest"),
        default="api",
        help="api: the API and web views (default); ingest: POST /api/v1/ingest for home gateways",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--db",
        default=None,
        help="access database: a SQLite file, or a postgresql:// URL shared by every replica (its "
        "password in PGPASSWORD or PGPASSFILE, never here); default $HEMS_ACCESS_DB, else "
        "access.sqlite in the data directory",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="data directory (default $HEMS_DATA_DIR, else ./var), as for every command",
    )
    parser.add_argument(
        "--store",
        default=None,
        help="sqlite:PATH (embedded store), or a registered store's name such as influx (settings from "
        "[pipeline] and HEMS_INFLUX_*); default: configuration",
    )
    parser.add_argument("--config", default=None, help="TOML configuration file")
    parser.add_argument(
        "--tls-cert", type=Path, default=None, help="serve HTTPS with this PEM certificate chain"
    )
    parser.add_argument("--tls-key", type=Path, default=None, help="the PEM private key of --tls-cert")
    parser.add_argument(
        "--trust-forwarded",
        action="store_true",
        help="behind a TLS proxy of your own that sets X-Forwarded-For and X-Forwarded-Proto: take the "
        "client address and scheme from them (never when clients can reach this port directly)",
    )
    parser.add_argument(
        "--insecure-cookies",
        action="store_true",
        help="send the session cookie over plain HTTP (local demos only)",
    )
    parser.add_argument(
        "--rate", type=float, default=20.0, help="requests per second per credential (0: no limit)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes serving the port (SO_REUSEPORT); each keeps its own page cache and rate limits, "
        "/metrics adds up every worker's counters (default 1)",
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="share the port with other processes (SO_REUSEPORT): several replicas behind one address",
    )
    parser.add_argument(
        "--spool-dir",
        type=Path,
        default=None,
        help="ingest: where replicas keep their spools, one numbered slot each "
        "(default: ingest-spool beside the access database)",
    )
    parser.add_argument(
        "--negawatt-every",
        type=float,
        default=900.0,
        help="ingest: seconds between passes deriving the negawatt items of the households gateways "
        "upload (default 900; one replica of all does it; 0: none)",
    )
    parser.add_argument(
        "--alert-every",
        type=float,
        default=10.0,
        help="seconds between rounds of the installers' alert webhooks (default 10; 0: send none)",
    )
    parser.add_argument(
        "--page-cache-mb",
        type=float,
        default=DEFAULT_PAGE_CACHE_MB,
        help="memory for rendered data pages reused while the store is unchanged "
        f"(0: off; default {DEFAULT_PAGE_CACHE_MB:g})",
    )
    return parser


def open_store(spec: str | None, config_path: str | None, data: Path) -> Store:
    """The ``[pipeline]`` settings of the configuration, with ``--store`` choosing the store; the
    embedded store is the data directory's (the one ``hems demo`` and ``hems collect`` write)."""
    from dataclasses import replace

    from hems.collect import given_settings, under_data_dir
    from pipeline import stores
    from pipeline.config import PipelineConfig

    cfg = under_data_dir(PipelineConfig.load(config_path), data, given_settings(config_path))
    if spec is not None:
        name, _, path = spec.partition(":")
        if name not in stores.names() or (path and name != "sqlite"):
            known = ", ".join(stores.names())
            raise UsageError(f"--store {spec!r}: use sqlite:PATH or a registered store ({known})")
        cfg = replace(cfg, store=name, sqlite_path=path or cfg.sqlite_path)
    return stores.open_store(cfg)


async def _check_store(args: argparse.Namespace) -> None:
    """Refuse to start on a store this release must not use (``SchemaError``); an unreachable one
    is fine: readiness says so until it is back."""
    store = open_store(args.store, args.config, data_dir(args.data_dir))
    try:
        await store.open()
    except StoreUnavailable as exc:
        print(f"hems serve: store unavailable at start: {exc}", file=sys.stderr)
    finally:
        await store.close()


async def _run(
    args: argparse.Namespace,
    db: AccessDb,
    tariff: Tariff,
    children: Sequence[BaseProcess] = (),
    is_worker: bool = False,
    metrics_dir: Path | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (or, in the first worker, until another worker dies)."""
    from access.app import make_app

    stop = asyncio.Event()
    stop_on_signals(stop)
    store = open_store(args.store, args.config, data_dir(args.data_dir))
    replica: IngestReplica | None = None
    if args.role == "ingest":
        # A replica's spool is its own disk's: beside the access database file, or in the data
        # directory when the access database is a PostgreSQL server.
        spool_dir = (
            args.spool_dir or (data_dir(args.data_dir) if is_url(db) else Path(db).parent) / "ingest-spool"
        )
        replica = await open_replica(
            store,
            db,
            spool_dir,
            args.config,
            metrics_dir,
            # Derived by one process of a host (the first), and by one replica of all (a lock).
            negawatt_every_s=args.negawatt_every if not is_worker and args.negawatt_every > 0 else None,
        )
        app = replica.app
    else:
        app = make_app(
            store,
            db,
            secure_cookies=not args.insecure_cookies,
            rate_per_s=args.rate if args.rate > 0 else None,
            page_cache_bytes=int(args.page_cache_mb * 2**20),
            # The alert webhooks are sent by one process only (the first): workers would each send them.
            alert_every_s=args.alert_every if not is_worker and args.alert_every > 0 else None,
            trust_forwarded=args.trust_forwarded,
            tariff=tariff,
            metrics_dir=metrics_dir,
            key_file=key_file_for(db, data_dir(args.data_dir)),
            shared_pages=getattr(args, "shared_pages", None),
            live_ahead=True,
        )
    # No access log: a reverse proxy in front keeps one, and /metrics counts requests by route and status.
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # A deep accept queue: hundreds of clients connecting at once must not have SYNs dropped (a dropped
    # SYN costs the client a one-second retransmit).  The kernel caps it at net.core.somaxconn.
    site = web.TCPSite(
        runner,
        args.host,
        args.port,
        reuse_port=args.workers > 1 or args.reuse_port,
        backlog=1024,
        ssl_context=_tls(args),
    )
    await site.start()
    # Everything built so far (libraries, policy, index) lives as long as the process: out of the
    # garbage collector's sight, with a wider young generation (common.heap says why).
    heap.settle()
    if children:
        watch = asyncio.create_task(_watch_workers(children, stop))
    scheme = "https" if args.tls_cert else "http"
    print(
        f"serving on {scheme}://{args.host}:{args.port} ({args.role}, access db {describe(db)}, "
        f"{args.workers} worker(s))",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        if children:
            watch.cancel()
        await runner.cleanup()
        if replica is not None:
            await replica.close()  # what was accepted is stored or in this replica's spool
        await store.close()


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """HTTPS straight from ``hems serve`` (then HSTS is sent too); None for plain HTTP."""
    if args.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.tls_cert, args.tls_key)
    return context


async def _watch_workers(children: Sequence[BaseProcess], stop: asyncio.Event) -> None:
    """A worker that dies takes the service down loudly rather than leaving it at reduced strength
    (a supervisor such as systemd or Docker then restarts the whole service)."""
    while not stop.is_set():
        for child in children:
            if child.exitcode is not None:
                print(f"hems serve: {child.name} exited with {child.exitcode}; stopping", file=sys.stderr)
                if child.pid is not None:
                    multiproc.forget(child.pid)  # its live gauges leave /metrics
                stop.set()
                return
        await asyncio.sleep(0.5)


def _worker(args: argparse.Namespace, db: AccessDb, tariff: Tariff, metrics_dir: Path | None) -> None:
    """A further server process on the same port (the kernel spreads connections across them)."""
    with contextlib.suppress(KeyboardInterrupt):
        run(_run(args, db, tariff, is_worker=True, metrics_dir=metrics_dir))


def serve(argv: Sequence[str]) -> int:
    args, cfile = config.parse_args_with_config(_parser(), argv, "serve")
    tariff = load_tariff(cfile.section("tariff"), cfile.path)
    if args.page_cache_mb < 0:
        raise ValueError("--page-cache-mb must be >= 0")
    if args.workers < 1:
        raise ValueError("--workers must be >= 1")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if (args.workers > 1 or args.reuse_port) and not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("--workers > 1 and --reuse-port need SO_REUSEPORT (Linux, BSD, macOS)")
    db = check_location(access_db(args.db, args.data_dir))
    run(_check_store(args))  # before anything is created: a bad setting or store leaves no trace
    if not exists(db):
        # A fresh deployment starts with no principals: serve (health and readiness work) but say
        # loudly that every data request will be refused until principals are added.
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        what = (
            "no gateway credentials yet, so every upload is refused; issue them with "
            "'hems principals gateway issue'"
            if args.role == "ingest"
            else "no principals yet, so every data request is refused; add them with 'hems principals add'"
        )
        print(f"hems serve: new access database at {db}: {what} (same --db / HEMS_DATA_DIR)", file=sys.stderr)
    # With several workers /metrics merges every worker's counters (access.api.multiproc): in the
    # directory PROMETHEUS_MULTIPROC_DIR names, else in a fresh one removed at exit.
    metrics_dir: Path | None = None
    made_dir = False
    if args.workers > 1:
        given = os.environ.get(multiproc.ENV)
        made_dir = not given
        metrics_dir = Path(given) if given else Path(tempfile.mkdtemp(prefix="hems-metrics-"))
        multiproc.prepare(metrics_dir)
    # Workers hand each other the pages they make (after a write, each would make the same page again).
    pages_dir = (
        Path(tempfile.mkdtemp(prefix="hems-pages-", dir=SHARED_PAGES_DIR)) if args.workers > 1 else None
    )
    args.shared_pages = pages_dir / "pages.sqlite" if pages_dir is not None else None
    ctx = multiprocessing.get_context("spawn")
    children = [
        ctx.Process(target=_worker, args=(args, db, tariff, metrics_dir), name=f"worker-{i}", daemon=True)
        for i in range(1, args.workers)
    ]
    try:
        for child in children:
            child.start()
        run(_run(args, db, tariff, children, metrics_dir=metrics_dir))
        # Stopped by a signal, every worker is still running (or stopped cleanly by the same Ctrl-C).
        failed = any(child.exitcode not in (None, 0) for child in children)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"hems serve: {exc}", file=sys.stderr)
        return 1
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
        for child in children:
            child.join(timeout=10)
        if made_dir and metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if pages_dir is not None:
            shutil.rmtree(pages_dir, ignore_errors=True)
    return 1 if failed else 0


def main(argv: Sequence[str]) -> int:
    try:
        return serve(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    except KNOWN_ERRORS as exc:  # configuration, a store schema from a newer release: one line
        print(f"hems serve: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # an impossible option value (--workers 0): a clear message, no trace
        print(f"hems serve: {exc}", file=sys.stderr)
        return 1
