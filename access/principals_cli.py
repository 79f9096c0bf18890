"""``hems principals``: who may sign in or call the API, what ties them to households and companies,
when, and with which credentials.

Kept apart from ``access.cli`` (which only dispatches) so the credential code has one home.  A token's
text is printed once, at creation; afterwards only its id and metadata can be listed.  Every period
option takes an ISO instant (``2026-04-01T00:00:00+09:00``); a missing start means now, a missing end
open-ended.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections.abc import Sequence
from typing import Any

from access.auth import WebAuth
from access.clock import show, to_epoch
from access.db import AccessDb, describe
from access.gateways import GatewayCredentials, GatewayError
from access.location import existing_db, exists
from access.relationships import VERIFICATION_METHODS, RelationshipStore
from access.tokens import TokenError, TokenStore
from access.world import CONTRACT_KINDS


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else show(epoch)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hems principals", description="principals and their credentials")
    parser.add_argument(
        "--db",
        default=None,
        help="access database: a SQLite file or a postgresql:// URL, password in PGPASSWORD "
        "(default: $HEMS_ACCESS_DB, else access.sqlite in $HEMS_DATA_DIR)",
    )
    sub = parser.add_subparsers(dest="what", required=True)
    add = sub.add_parser("add", help="register a principal")
    add.add_argument("id")
    add.add_argument("--kind", required=True)
    add.add_argument("--name", required=True, help="display name")
    add.add_argument("--purpose", action="append", default=[], help="a purpose it is registered for (repeat)")
    add.add_argument("--company", default=None, help="for staff (operator, analyst): the company it acts for")
    sub.add_parser("list", help="principals with their kinds, companies and purposes")
    company = sub.add_parser("company", help="set the company a staff principal acts for")
    company.add_argument("id")
    company.add_argument("company")
    link = sub.add_parser("link", help="record a relationship with a household (created if new)")
    link.add_argument("id")
    link.add_argument("household")
    link.add_argument("role")
    _period_options(link)
    unlink = sub.add_parser("unlink", help="end a relationship (kept as history)")
    unlink.add_argument("id")
    unlink.add_argument("household")
    unlink.add_argument("role")
    unlink.add_argument("--at", default=None, help="when it ends (default: now)")
    contract = sub.add_parser("contract", help="a household's contracts with the companies of the terms")
    csub = contract.add_subparsers(dest="action", required=True)
    cadd = csub.add_parser("add", help="the household becomes a customer of a company")
    cadd.add_argument("household")
    cadd.add_argument("company")
    cadd.add_argument("--kind", required=True, choices=CONTRACT_KINDS)
    _period_options(cadd)
    _end_option(csub, "contract_id", "end a contract (by id)")
    clist = csub.add_parser("list", help="contracts (of one household)")
    clist.add_argument("household", nargs="?")
    joint = sub.add_parser("joint-use", help="parties a company's clause names (joint users, recipients)")
    jsub = joint.add_subparsers(dest="action", required=True)
    jadd = jsub.add_parser("add", help="a company registers a party for one of its clauses")
    jadd.add_argument("company")
    jadd.add_argument("clause")
    jadd.add_argument("id")
    _period_options(jadd)
    _end_option(jsub, "joint_use_id", "end a registration (by id)")
    jsub.add_parser("list", help="registrations")
    mandate = sub.add_parser("mandate", help="agents acting for a homeowner (SPS 2(6)[3])")
    msub = mandate.add_subparsers(dest="action", required=True)
    madd = msub.add_parser("add", help="record a mandate (it counts once verified)")
    madd.add_argument("person")
    madd.add_argument("agent")
    madd.add_argument("--category", action="append", default=None, help="only these categories (repeat)")
    madd.add_argument(
        "--verified-by", choices=VERIFICATION_METHODS, default=None, help="verified now, this way"
    )
    _period_options(madd)
    mverify = msub.add_parser("verify", help="record that a mandate was checked")
    mverify.add_argument("mandate_id", type=int)
    mverify.add_argument("--method", required=True, choices=VERIFICATION_METHODS)
    _end_option(msub, "mandate_id", "end a mandate (by id)")
    msub.add_parser("list", help="mandates")
    token = sub.add_parser("token", help="API tokens")
    tsub = token.add_subparsers(dest="action", required=True)
    create = tsub.add_parser("create", help="issue a token (printed once)")
    create.add_argument("id")
    create.add_argument("--purpose", action="append", required=True, help="purpose the token may declare")
    create.add_argument("--ttl-days", type=float, default=90.0)
    create.add_argument("--label", default="")
    create.add_argument(
        "--identity-verified",
        choices=VERIFICATION_METHODS,
        default=None,
        help="the person's identity was just checked this way: the token may exercise their rights for a day",
    )
    revoke = tsub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("token_id")
    tlist = tsub.add_parser("list", help="tokens (never their secrets)")
    tlist.add_argument("id", nargs="?")
    budget = sub.add_parser(
        "budget",
        help="the privacy budget a principal's statistics spend (epsilon, for the holder's whole life; spent "
        "shown): its company's, shared by all the company's staff, or its own when it has no company",
    )
    budget.add_argument("id")
    budget.add_argument("epsilon", nargs="?", type=float, help="the new budget (leave out to show it)")
    budget.add_argument("--by", default=None, help="who sets it (recorded; required with EPSILON)")
    gateway = sub.add_parser("gateway", help="credentials home gateways upload with (ingest only)")
    gsub = gateway.add_subparsers(dest="action", required=True)
    issue = gsub.add_parser("issue", help="issue a credential bound to households (printed once)")
    issue.add_argument("--household", action="append", required=True, help="a household it writes (repeat)")
    issue.add_argument("--label", default="", help="e.g. the gateway's serial number")
    grevoke = gsub.add_parser(
        "revoke", help="revoke a credential by id (every replica refuses it within 1 s)"
    )
    grevoke.add_argument("credential_id")
    gsub.add_parser("list", help="credentials and their households (never their secrets)")
    password = sub.add_parser("password", help="set the web sign-in password (read from stdin or a prompt)")
    password.add_argument("id")
    password.add_argument("--stdin", action="store_true", help="read the password from standard input")
    return parser


def _end_option(sub: Any, id_name: str, help_text: str) -> None:
    end = sub.add_parser("end", help=help_text)
    end.add_argument(id_name, type=int)
    end.add_argument("--at", default=None, help="when it ends (default: now)")


def _period_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", default=None, help="ISO instant it starts (default: now)")
    parser.add_argument("--until", default=None, help="ISO instant it ends (default: open-ended)")


def principals(argv: Sequence[str], default_db: AccessDb) -> int:
    args = _parser().parse_args(argv)
    db: AccessDb = args.db or default_db
    # Adding a principal or issuing a gateway credential may start a deployment's access database.
    creates = args.what == "add" or (args.what == "gateway" and args.action == "issue")
    if creates and not exists(db):
        print(f"hems principals: new access database at {describe(db)}", file=sys.stderr)
    elif not creates and existing_db(db, "principals") is None:
        return 2
    rel = RelationshipStore(db)
    try:
        if args.what == "add":
            p = rel.add_principal(args.id, args.kind, args.name, args.purpose, args.company)
            of = f" of {p.company}" if p.company else ""
            print(f"added {p.id} ({p.kind}{of}) purposes: {', '.join(sorted(p.purposes)) or 'none'}")
        elif args.what == "list":
            for p in rel.principals():
                print(
                    f"{p.id}\t{p.kind}\t{p.company or '-'}\t{p.display_name}\t{','.join(sorted(p.purposes))}"
                )
            for problem in rel.problems():
                print(f"problem: {problem}", file=sys.stderr)
        elif args.what == "company":
            p = rel.set_company(args.id, args.company)
            print(f"{p.id} ({p.kind}) acts for {p.company}")
        elif args.what == "link":
            rel.add_household(args.household)
            rel.link(args.id, args.household, args.role, since=args.since, until=args.until)
            print(
                f"linked {args.id} to {args.household} as {args.role} "
                f"from {_when(_at(args.since) or time.time())}"
            )
        elif args.what == "unlink":
            rel.unlink(args.id, args.household, args.role, at=args.at)
            print(f"ended the {args.role} link of {args.id} to {args.household}")
        elif args.what == "contract":
            _contract(args, rel)
        elif args.what == "joint-use":
            _joint_use(args, rel)
        elif args.what == "mandate":
            _mandate(args, rel)
        elif args.what == "token":
            return _token(args, rel, db)
        elif args.what == "password":
            return _password(args, rel, db)
        elif args.what == "budget":
            return _budget(args, rel, db)
        elif args.what == "gateway":
            return _gateway(args, db)
    finally:
        rel.close()
    return 0


def _at(value: str | None) -> float | None:
    return None if value is None else to_epoch(value)


def _period(since: float, until: float) -> str:
    return f"{_when(since)} to {'open-ended' if until == float('inf') else _when(until)}"


def _contract(args: argparse.Namespace, rel: RelationshipStore) -> None:
    if args.action == "add":
        c = rel.add_contract(args.household, args.company, args.kind, since=args.since, until=args.until)
        print(f"contract {c.id}: {c.household} with {c.company} ({c.kind}), {_period(c.since, c.until)}")
    elif args.action == "end":
        rel.end_contract(args.contract_id, at=args.at)
        print(f"ended contract {args.contract_id}")
    else:
        for c in rel.contracts(args.household):
            print(f"{c.id}\t{c.household}\t{c.company}\t{c.kind}\t{_period(c.since, c.until)}")


def _joint_use(args: argparse.Namespace, rel: RelationshipStore) -> None:
    if args.action == "add":
        j = rel.register_joint_use(args.company, args.clause, args.id, since=args.since, until=args.until)
        print(
            f"joint use {j.id}: {j.company} names {j.principal} for {j.clause}, {_period(j.since, j.until)}"
        )
    elif args.action == "end":
        rel.end_joint_use(args.joint_use_id, at=args.at)
        print(f"ended joint use {args.joint_use_id}")
    else:
        for j in rel.joint_uses():
            print(f"{j.id}\t{j.company}\t{j.clause}\t{j.principal}\t{_period(j.since, j.until)}")


def _mandate(args: argparse.Namespace, rel: RelationshipStore) -> None:
    if args.action == "add":
        m = rel.add_mandate(args.person, args.agent, args.category, since=args.since, until=args.until)
        if args.verified_by is not None:
            m = rel.verify_mandate(m.id, args.verified_by)
        state = "verified" if m.verified_at is not None else "not verified yet"
        print(f"mandate {m.id}: {m.agent} acts for {m.person}, {_period(m.since, m.until)}, {state}")
    elif args.action == "verify":
        m = rel.verify_mandate(args.mandate_id, args.method)
        print(f"mandate {m.id} verified ({m.method})")
    elif args.action == "end":
        rel.end_mandate(args.mandate_id, at=args.at)
        print(f"ended mandate {args.mandate_id}")
    else:
        for m in rel.mandates():
            cats = ",".join(sorted(m.categories)) if m.categories is not None else "all"
            verified = (
                f"verified {_when(m.verified_at)} ({m.method})" if m.verified_at is not None else "unverified"
            )
            print(f"{m.id}\t{m.person}\t{m.agent}\t{cats}\t{_period(m.since, m.until)}\t{verified}")


def _token(args: argparse.Namespace, rel: RelationshipStore, db: AccessDb) -> int:
    tokens = TokenStore(db)
    try:
        if args.action == "create":
            principal = rel.principal(args.id)
            verified = args.identity_verified
            info, text = tokens.create(
                principal.id,
                args.purpose,
                principal.purposes,
                ttl_s=args.ttl_days * 86400,
                label=args.label,
                identity_verified_at=None if verified is None else time.time(),
                identity_method=verified or "",
            )
            print(
                f"token {info.id} for {info.principal}, purposes {', '.join(sorted(info.purposes))}, "
                f"expires {_when(info.expires_at)}"
            )
            print("store it now; it is not shown again:", file=sys.stderr)
            print(text)
        elif args.action == "revoke":
            tokens.revoke(args.token_id)
            print(f"revoked {args.token_id}")
        else:
            for t in tokens.list(args.id):
                state = "revoked" if t.revoked_at is not None else "active"
                purposes = ",".join(sorted(t.purposes))
                print(f"{t.id}\t{t.principal}\t{purposes}\texpires {_when(t.expires_at)}\t{state}")
    except TokenError as exc:
        print(f"hems principals token: {exc}", file=sys.stderr)
        return 1
    finally:
        tokens.close()
    return 0


def _budget(args: argparse.Namespace, rel: RelationshipStore, db: AccessDb) -> int:
    from access.budget import BudgetStore, budget_holder, describe_holder

    principal = rel.principal(args.id)
    holder = budget_holder(principal)  # a company's staff share their company's budget
    budgets = BudgetStore(db)
    try:
        if args.epsilon is not None:
            if not args.by:
                print("hems principals budget: say who sets it (--by)", file=sys.stderr)
                return 2
            b = budgets.set_budget(holder, args.epsilon, by=args.by)
        else:
            b = budgets.budget(holder)
        releases = budgets.releases(holder=holder)
    except ValueError as exc:
        print(f"hems principals budget: {exc}", file=sys.stderr)
        return 1
    finally:
        budgets.close()
    print(
        f"{principal.id}: privacy budget of {describe_holder(holder)}: epsilon {b.total:g}, "
        f"spent {b.spent:g} in {len(releases)} releases, left {b.left:g}"
    )
    return 0


def _gateway(args: argparse.Namespace, db: AccessDb) -> int:
    gateways = GatewayCredentials(db)
    try:
        if args.action == "issue":
            info, text = gateways.issue(args.household, label=args.label)
            print(f"gateway credential {info.id} for {', '.join(sorted(info.households))}")
            print("install it on the gateway now; it is not shown again:", file=sys.stderr)
            print(text)
        elif args.action == "revoke":
            gateways.revoke(args.credential_id)
            print(f"revoked gateway credential {args.credential_id}")
        else:
            for g in gateways.list():
                state = "revoked" if g.revoked_at is not None else "active"
                households = ",".join(sorted(g.households))
                print(f"{g.id}\t{households}\t{g.label or '-'}\tissued {_when(g.created_at)}\t{state}")
    except GatewayError as exc:
        print(f"hems principals gateway: {exc}", file=sys.stderr)
        return 1
    finally:
        gateways.close()
    return 0


def _password(args: argparse.Namespace, rel: RelationshipStore, db: AccessDb) -> int:
    principal = rel.principal(args.id)
    if principal.kind not in ("homeowner", "installer"):
        print("hems principals password: web sign-in is for homeowners and installers", file=sys.stderr)
        return 1
    secret = sys.stdin.readline().rstrip("\n") if args.stdin else getpass.getpass(f"password for {args.id}: ")
    auth = WebAuth(db)
    try:
        auth.set_password(principal.id, secret)
    finally:
        auth.close()
    print(f"password set for {principal.id}")
    return 0
