"""``hems erasure list|complete|sweep``: the operator carries out the person's erasure requests.

This lives in ``hems`` because it joins two packages: the plan (what is erased, what the law keeps and
why) comes from ``access.erasure``, the deleting from the series store through the pipeline's
``Store.delete`` (InfluxDB's delete API, SQLite ``DELETE``; the rollups of the erased range go with
the points).  Nothing completes by itself: a request stays ``recorded`` until an operator runs
``complete``.  Completing first records the beginning (from then on every decision refuses the erased
data, to anyone), then deletes, then records what each store removed; a completion interrupted (store
down) leaves the request ``erasing`` and is run again the same way.

``sweep`` deletes the erased ranges again: a point recorded in an erased period that reaches the store
later (replayed from a collector's spool after an outage) is never served, since decisions subtract
the period, and a sweep removes it from the store too.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from access.cli import DB_HELP
from access.clock import now
from access.consent import DONE, ERASING, RECORDED, ConsentError, ConsentStore, ErasureRequest
from access.erasure import NOT_STORED, ErasurePlan, plan
from access.location import access_db, data_dir, existing_db
from access.periods import show
from access.relationships import RelationshipStore
from common.loop import run
from pipeline.query import Deletion
from pipeline.store import Store
from pipeline.validate import EARLIEST
from seeds.loader import Seeds, load_seeds
from seeds.vocabulary import STORED_CATEGORIES

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hems erasure", description="carry out erasure requests")
    sub = parser.add_subparsers(dest="what", required=True)
    listing = sub.add_parser("list", help="erasure requests and their status (pending ones by default)")
    listing.add_argument("--all", action="store_true", help="every request, done ones included")
    complete = sub.add_parser(
        "complete", help="erase one request's data from the series store and record what was kept and why"
    )
    complete.add_argument("id", type=int)
    complete.add_argument("--operator", required=True, help="who carries it out (recorded)")
    sub.add_parser("sweep", help="delete every erased range again (points replayed into it since)")
    for p in (listing, complete, sub.choices["sweep"]):
        p.add_argument("--db", default=None, help=f"access database: {DB_HELP}, else in the data directory")
        p.add_argument("--data-dir", default=None, help="data directory (default $HEMS_DATA_DIR, else ./var)")
        p.add_argument("--store", default=None, help="sqlite:PATH or a registered store (as hems serve)")
        p.add_argument("--config", default=None, help="TOML configuration file")
    return parser


def describe(e: ErasureRequest) -> str:
    """One request in a line or three: what was asked, its status, what was erased, kept, removed."""
    asked = datetime.fromtimestamp(e.requested_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    by = f" by {e.requested_by}" if e.requested_by else ""
    lines = [f"#{e.id} {e.household}: asked {asked}{by}: {e.status}"]
    if e.status == RECORDED:
        lines.append("  answer given: " + ", ".join(f"{c} {o}" for c, o in sorted(e.outcome.items())))
    elif e.removed is None and e.status == DONE:
        lines.append("  marked done before erasure was carried out: nothing was erased (run complete again)")
    else:
        lines.append(f"  erased: {', '.join(e.erased) or 'nothing'} over {show(e.periods)}")
        for category, periods in sorted((e.partly or {}).items()):
            lines.append(f"  erased: {category} over {show(periods)} only")
        for category, why in sorted((e.kept or {}).items()):
            lines.append(f"  kept: {category}: {why}")
        for category, what in sorted((e.removed or {}).items()):
            lines.append(f"  removed: {category}: {what}")
    return "\n".join(lines)


async def carry_out(store: Store, p: ErasurePlan) -> dict[str, str]:
    """Delete the plan's series categories over their periods (a category a hold keeps partly, over the
    part erased of it); category -> what the store removed."""
    removed: dict[str, str] = {}
    for category, periods in p.erased():
        if category not in STORED_CATEGORIES:
            removed[category] = NOT_STORED
            continue
        count: int | None = 0
        for a, b in periods:
            start = max(datetime.fromtimestamp(a, UTC) if a != float("-inf") else EARLIEST, EARLIEST)
            stop = datetime.fromtimestamp(b, UTC)
            if not start < stop:
                continue
            n = await store.delete(Deletion(p.request.household, category, start, stop))
            count = None if n is None or count is None else count + n
        removed[category] = (
            "points deleted (the store does not count them)" if count is None else f"{count} points deleted"
        )
        # A loss the policy allows: counted in the request's record (``removed``) and logged here.
        log.warning(
            "erasure %d: %s of %s over %s: %s",
            p.request.id,
            category,
            p.request.household,
            show(periods),
            removed[category],
        )
    return removed


async def complete(
    consent: ConsentStore,
    relationships: RelationshipStore,
    seeds: Seeds,
    store: Store,
    request_id: int,
    operator: str,
    at: float | None = None,
) -> ErasureRequest:
    """Carry out one request (see the module docstring for the order of steps)."""
    request = consent.erasure(request_id)
    if request.status == DONE and request.removed is not None:
        return request
    t = now() if at is None else at
    if request.status == ERASING:  # interrupted: the same plan again, as recorded at the beginning
        begun = request
        the_plan = ErasurePlan(
            request,
            begun.erased,
            begun.kept or {},
            begun.periods,
            begun.completed_at or t,
            begun.partly or {},
        )
    else:
        if request.status == DONE:  # marked done before erasure was carried out: reopen it
            consent.reopen_erasure(request_id)
        facts = relationships.facts()
        the_plan = plan(request, consent.categories_asked(request_id), facts, seeds, t)
        consent.begin_erasure(
            request_id,
            erased=the_plan.erase,
            periods=the_plan.periods,
            kept=dict(the_plan.kept),
            operator=operator,
            at=t,
            partly=the_plan.partly,
        )
    removed = await carry_out(store, the_plan)
    return consent.finish_erasure(request_id, removed)


async def sweep(consent: ConsentStore, store: Store) -> int:
    """Delete every begun or finished erasure's ranges again; the number of requests swept."""
    done = [e for e in consent.erasures() if e.status in (ERASING, DONE) and e.completed_at is not None]
    for e in done:
        p = ErasurePlan(e, e.erased, e.kept or {}, e.periods, e.completed_at or 0.0, e.partly or {})
        await carry_out(store, p)
    return len(done)


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    db = existing_db(access_db(args.db, args.data_dir), "erasure")
    if db is None:
        return 2
    seeds = load_seeds()
    consent, relationships = ConsentStore(db, seeds), RelationshipStore(db, seeds)
    try:
        return _run(args, consent, relationships, seeds)
    except ConsentError as exc:
        print(f"hems erasure: {exc}", file=sys.stderr)
        return 1
    finally:
        consent.close()
        relationships.close()


def _run(
    args: argparse.Namespace, consent: ConsentStore, relationships: RelationshipStore, seeds: Seeds
) -> int:
    if args.what == "list":
        rows = consent.erasures(status=None if args.all else RECORDED)
        if not args.all:
            rows += consent.erasures(status=ERASING)
        for e in sorted(rows, key=lambda e: e.id):
            print(describe(e))
        print(f"{len(rows)} {'requests' if args.all else 'pending requests'}")
        return 0
    return run(_with_store(args, consent, relationships, seeds))


async def _with_store(
    args: argparse.Namespace, consent: ConsentStore, relationships: RelationshipStore, seeds: Seeds
) -> int:
    from hems.serve import open_store

    store = open_store(args.store, args.config, data_dir(args.data_dir))
    try:
        await store.open()
        if args.what == "sweep":
            n = await sweep(consent, store)
            print(f"swept {n} erasures")
            return 0
        done = await complete(consent, relationships, seeds, store, args.id, args.operator)
        print(describe(done))
        return 0
    finally:
        await store.close()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
