"""``hems policy|ledger|principals``: the access package's commands (``hems serve`` is in ``hems``).

``hems.cli`` hands over the command name as ``argv[0]``; each command is one entry in ``COMMANDS`` so
one command's options never touch the others.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from access.compiler import ALLOW, PERIOD_WORDS, WHOLE, Policy, Rule, check_policy, compile_seeds
from access.db import AccessDb
from access.location import DB_NAME, data_dir, default_db, existing_db, exists

# The rule of where things are (``access.location``), named here too for the commands' callers.
__all__ = ["DB_NAME", "data_dir", "default_db", "existing_db", "main"]
DB_HELP = "a SQLite file or a postgresql:// URL (password in PGPASSWORD); default $HEMS_ACCESS_DB"


def _load_policy(seeds_dir: str | None) -> Policy:
    from seeds.loader import load_seeds

    return compile_seeds(load_seeds(Path(seeds_dir) if seeds_dir else None))


# -- policy ------------------------------------------------------------------------------------------
def _policy(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="hems policy", description="the access policy compiled from seeds/")
    parser.add_argument("--seeds", help="directory of seed YAML files (default: the packaged seeds)")
    sub = parser.add_subparsers(dest="what", required=True)
    show = sub.add_parser("show", help="every rule with the clause it comes from")
    show.add_argument(
        "--format",
        choices=("table", "csv", "markdown"),
        default="table",
        help="markdown: rules grouped by who/what/why, the table in the README",
    )
    show.add_argument(
        "--db", default=None, help="also list the approval and suspension lines in force now (a file or URL)"
    )
    explain = sub.add_parser("explain", help="decide one request and say why, with companies and periods")
    for name in ("principal", "household", "category", "action", "purpose"):
        explain.add_argument(f"--{name}", required=True)
    explain.add_argument("--db", default=None, help=f"access database: {DB_HELP} (default: {default_db()})")
    explain.add_argument("--at", default=None, help="ISO instant to decide at (default: now)")
    explain.add_argument("--start", default=None, help="ISO start of the data window (default: open)")
    explain.add_argument("--stop", default=None, help="ISO stop of the data window (default: open)")
    explain.add_argument(
        "--items", default=None, help="fields of the category, comma-separated (default: the whole category)"
    )
    explain.add_argument(
        "--identity-verified",
        action="store_true",
        help="decide as for a caller whose identity was verified recently (the person's rights need it)",
    )
    sub.add_parser(
        "check",
        help="traceability (every granting clause yields rules, every rule cites a clause) and every "
        "condition and limit of the seeds enforced or listed as informational",
    )
    args = parser.parse_args(argv)
    policy = _load_policy(args.seeds)
    if args.what == "show":
        return _show(policy, _rules_in_force(policy, args.db) if args.db else list(policy.rules), args.format)
    if args.what == "check":
        result = check_policy(policy)
        for problem in result.problems:
            print(f"problem: {problem}")
        for note in result.notes:
            print(f"note: {note}")
        granting = sum(1 for c in policy.seeds.clauses if c.grants)
        print(
            f"{'ok' if result.ok else 'FAILED'}: {len(policy.rules)} rules from {granting} granting clauses"
        )
        return 0 if result.ok else 1
    return _explain(policy, args)


def _rules_in_force(policy: Policy, db: AccessDb) -> list[Rule]:
    from access.consent import ConsentStore
    from access.decision import Authorizer
    from access.relationships import RelationshipStore

    if not exists(db):
        raise ValueError(f"no access database at {db}")
    relationships, consent = RelationshipStore(db, policy.seeds), ConsentStore(db, policy.seeds)
    try:
        return list(Authorizer(policy, relationships, consent).rules())
    finally:
        relationships.close()
        consent.close()


def markdown_table(policy: Policy, rules: Sequence[Rule]) -> str:
    """Rules grouped by (who, company, households, action, purpose, effect, clause) with their categories
    joined, so a reader sees each clause's grant on one line, with the company whose terms it is and
    the periods it reaches; the README's policy table is exactly this text."""
    groups: dict[tuple[str, str, str, str, str, str, str, str], list[tuple[str, str]]] = {}
    for r in rules:
        basis = policy.bases.get(r.sub)
        if r.eft == ALLOW and basis is not None:
            who = basis.recipient + (" (registered)" if basis.registered else "")
            company, periods = basis.company, PERIOD_WORDS[basis.kind]
            if basis.after_end:
                periods = "contract, also after it ends"
            if r.idc != "none":
                periods += "; identity verified"
        else:
            who, company, periods = r.sub, "all", "-"
        key = (who, company, r.dom, periods, r.act, r.pur, r.eft, r.clause)
        groups.setdefault(key, []).append((r.cat, r.item))
    lines = [
        "| who | company | households | periods served | action | purpose | effect | categories | clause |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, granted in sorted(groups.items()):
        who, company, dom, periods, act, pur, eft, clause = key
        lines.append(
            f"| {who} | {company} | {dom} | {periods} | {act} | {pur} | {eft} | {_what(granted)} | {clause} |"
        )
    return "\n".join(lines)


def _what(granted: Sequence[tuple[str, str]]) -> str:
    """Categories, each whole or with the items granted of it: ``electricity (baseline_w, ...)``."""
    items: dict[str, list[str]] = {}
    for category, item in granted:
        items.setdefault(category, []).append(item)
    return ", ".join(
        c if WHOLE in its else f"{c} ({', '.join(dict.fromkeys(its))})" for c, its in sorted(items.items())
    )


def _show(policy: Policy, rules: list[Rule], fmt: str) -> int:
    if fmt == "markdown":
        print(markdown_table(policy, rules))
        return 0
    # The clause last, as people read it ("... because of this clause"); Casbin's order is in model.conf.
    header = ["sub", "dom", "cat", "act", "pur", "eft", "idc", "clause"]
    # A line granting one item shows it with its category: ``electricity.baseline_w``.
    rows = [
        [
            r.sub,
            r.dom,
            r.cat if r.item == WHOLE else f"{r.cat}.{r.item}",
            r.act,
            r.pur,
            r.eft,
            r.idc,
            r.clause,
        ]
        for r in rules
    ]
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return 0
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _explain(policy: Policy, args: argparse.Namespace) -> int:
    from access.clock import to_epoch
    from access.consent import ConsentStore
    from access.decision import Authorizer
    from access.periods import show
    from access.relationships import RelationshipStore
    from access.request import AccessRequest
    from seeds.vocabulary import item_of

    db = existing_db(args.db or default_db(), "policy explain")
    if db is None:
        return 2
    relationships, consent = RelationshipStore(db, policy.seeds), ConsentStore(db, policy.seeds)
    try:
        at = None if args.at is None else to_epoch(args.at)
        window = (
            float("-inf") if args.start is None else to_epoch(args.start),
            float("inf") if args.stop is None else to_epoch(args.stop),
        )
        items = None
        if args.items:
            items = tuple(dict.fromkeys(item_of(f.strip()) for f in args.items.split(",") if f.strip()))
        req = AccessRequest(
            args.principal,
            args.household,
            args.category,
            args.action,
            args.purpose,
            window,
            identity_verified=args.identity_verified,
            items=items,
        )
        authorizer = Authorizer(policy, relationships, consent)
        print(authorizer.explain(req, at=at))
        d = authorizer.decide(req, at=at)
        print(f"decision: {'allow' if d.allowed else 'deny'} ({', '.join(d.clause_ids) or 'no clause'})")
        print(f"served: {show(d.served)}")
        if d.allowed and d.refused:
            print(f"not served: {show(d.refused)}")
        if items is None and not d.allowed:
            granted = authorizer.items_served(req, at=at)
            if granted:
                print(f"items granted: {', '.join(granted)}")
    finally:
        relationships.close()
        consent.close()
    return 0


# -- ledger ------------------------------------------------------------------------------------------
def _ledger(argv: Sequence[str]) -> int:
    from access.ledger import Ledger, LedgerError

    parser = argparse.ArgumentParser(prog="hems ledger", description="the provision ledger (APPI records)")
    sub = parser.add_subparsers(dest="what", required=True)
    verify = sub.add_parser(
        "verify", help="check the keyed hash chain and its signed anchors; exit 1 if anything was changed"
    )
    seal = sub.add_parser(
        "seal", help="start the keyed chain of a ledger written before ledgers were keyed (checks it first)"
    )
    listing = sub.add_parser("list", help="the provisions of one household's data, and their head")
    listing.add_argument("--household", required=True)
    releases = sub.add_parser(
        "releases",
        help="the statistics releases (each with its epsilon) and the chain's check; exit 1 if broken",
    )
    releases.add_argument("--principal", default=None, help="only this principal's, with its budget")
    for p in (verify, seal, listing, releases):
        p.add_argument("--db", default=None, help=f"access database: {DB_HELP}")
        p.add_argument("--key-file", type=Path, default=None, help="the server key (default: beside --db)")
    args = parser.parse_args(argv)
    db = existing_db(args.db or default_db(), "ledger")
    if db is None:
        return 2
    if args.what == "releases":
        return _releases(db, args.principal)
    ledger = Ledger(db, key_file=args.key_file)
    try:
        if args.what == "verify":
            result = ledger.verify()
            if result.ok:
                print(f"ok: {result.rows} records, keyed chain and anchors intact, head {ledger.head()}")
                return 0
            where = f"at record {result.first_bad_seq}" if result.first_bad_seq is not None else "anchor"
            print(f"TAMPERED {where}: {result.problem}")
            return 1
        if args.what == "seal":
            try:
                seq = ledger.seal()
            except LedgerError as exc:
                print(f"hems ledger seal: {exc}", file=sys.stderr)
                return 1
            print(f"sealed: records 1-{seq} checked and anchored; later records are keyed")
            return 0
        household = ledger.household_head(args.household)
        for record in household.records:
            print(record.describe())
        print(
            f"{len(household.records)} records for household {args.household}, head {household.head.text()}"
        )
        return 0
    finally:
        ledger.close()


def _releases(db: AccessDb, principal: str | None) -> int:
    """The release ledger: who released which statistic, when, with which epsilon."""
    from access.budget import BudgetStore, describe_holder
    from access.clock import show

    budgets = BudgetStore(db)
    try:
        holders: set[str] = set()
        for r in budgets.releases(principal):
            holders.add(r.budget_holder)
            print(
                f"#{r.seq} {show(r.at)}: {r.principal} released {r.category} ({', '.join(r.fields)}) over "
                f"{show(r.start)} to {show(r.stop)}, {r.windows} windows of {r.every_s:g} s, for {r.purpose} "
                f"under {', '.join(r.clause_ids)}: epsilon {r.epsilon:g} "
                f"of {describe_holder(r.budget_holder)}"
            )
        for holder in sorted(holders) if principal is not None else ():
            b = budgets.budget(holder)
            print(f"{describe_holder(holder)}: spent {b.spent:g} of {b.total:g}, left {b.left:g}")
        broken = budgets.verify()
    finally:
        budgets.close()
    if broken is not None:
        print(f"TAMPERED at release {broken}: its chain link or hash is wrong")
        return 1
    print("release chain intact")
    return 0


# -- access database -----------------------------------------------------------------------------------
def _access(argv: Sequence[str]) -> int:
    from access.db import describe
    from access.db_migrate import migrate

    parser = argparse.ArgumentParser(prog="hems access", description="the access database itself")
    sub = parser.add_subparsers(dest="what", required=True)
    move = sub.add_parser(
        "migrate",
        help="copy an access database from its SQLite file into an empty PostgreSQL database "
        "(run with the services stopped; the file is left as it was)",
    )
    move.add_argument("--to", required=True, help="the PostgreSQL URL (password in PGPASSWORD or PGPASSFILE)")
    move.add_argument("--db", type=Path, default=None, help="the SQLite file (default: as for every command)")
    move.add_argument("--key-file", type=Path, default=None, help="the server key (default: beside --db)")
    args = parser.parse_args(argv)
    source = args.db or default_db()
    if not isinstance(source, Path):
        raise ValueError(f"hems access migrate copies from a SQLite file; the access database is {source}")
    done = migrate(source, args.to, args.key_file)
    for table, n in sorted(done.rows.items()):
        print(f"{table}\t{n} rows")
    print(
        f"copied {describe(source)} to {args.to}: {done.ledger_records} ledger records, verified there with "
        f"the same key, head {done.ledger_head}; every replica must read that key file (HEMS_KEY_FILE)"
    )
    return 0


def _principals(argv: Sequence[str]) -> int:
    from access.principals_cli import principals

    return principals(argv, default_db())


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "access": _access,
    "policy": _policy,
    "ledger": _ledger,
    "principals": _principals,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        print(f"usage: hems {{{'|'.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args[0]](args[1:])
    except BrokenPipeError:  # `hems policy show | head`
        return 0
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    except ValueError as exc:  # SeedError, CompileError, RelationshipError...: a clear message, no trace
        print(f"hems {args[0]}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
