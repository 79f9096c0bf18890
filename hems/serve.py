"""``hems serve``: the API and web views over the configured store.

The store is opened here (by the pipeline's factory or ``SQLiteStore``), not by the app, so access
code never chooses or opens a store itself.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from pipeline.store import Store


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hems serve", description="HTTP API and web views")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--db", type=Path, default=None, help="access database")
    parser.add_argument(
        "--store",
        default=None,
        help="sqlite:PATH (embedded store) or influx (settings from HEMS_INFLUX_*); default: configuration",
    )
    parser.add_argument("--config", default=None, help="TOML configuration file")
    parser.add_argument(
        "--insecure-cookies",
        action="store_true",
        help="send the session cookie over plain HTTP (local demos only)",
    )
    parser.add_argument(
        "--rate", type=float, default=20.0, help="requests per second per credential (0: no limit)"
    )
    return parser


def _open_store(spec: str | None, config: str | None) -> Store:
    from pipeline.config import PipelineConfig
    from pipeline.factory import open_store
    from pipeline.sqlite_store import SQLiteStore

    if spec is not None and spec.startswith("sqlite:"):
        return SQLiteStore(spec.removeprefix("sqlite:"))
    cfg = PipelineConfig.load(config)
    if spec == "influx" and not cfg.use_influx:
        raise ValueError("--store influx needs HEMS_INFLUX_URL (and ORG, BUCKET, TOKEN)")
    if spec not in (None, "influx"):
        raise ValueError(f"--store {spec!r}: use sqlite:PATH or influx")
    return open_store(cfg)


async def _run(args: argparse.Namespace, db: Path) -> None:
    from access.app import make_app

    store = _open_store(args.store, args.config)
    app = make_app(
        store, db, secure_cookies=not args.insecure_cookies, rate_per_s=args.rate if args.rate > 0 else None
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    print(f"serving on http://{args.host}:{args.port} (access db {db})", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await store.close()


def serve(argv: Sequence[str], default_db: Path) -> int:
    args = _parser().parse_args(argv)
    db: Path = args.db or default_db
    if not db.exists():
        # A fresh deployment starts with no principals: serve (health and readiness work) but say
        # loudly that every data request will be refused until principals are added.
        db.parent.mkdir(parents=True, exist_ok=True)
        print(
            f"hems serve: new access database at {db}: no principals yet, so every data request is "
            "refused; add them with 'hems principals add' (same --db / HEMS_DATA_DIR)",
            file=sys.stderr,
        )
    try:
        asyncio.run(_run(args, db))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"hems serve: {exc}", file=sys.stderr)
        return 1
    return 0
