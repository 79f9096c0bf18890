"""``hems principals``: who may sign in or call the API, and with which credentials.

Kept apart from ``access.cli`` (which only dispatches) so the credential code has one home.  A token's
text is printed once, at creation; afterwards only its id and metadata can be listed.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from access.auth import WebAuth
from access.relationships import RelationshipStore
from access.tokens import TokenError, TokenStore


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hems principals", description="principals and their credentials")
    parser.add_argument("--db", type=Path, default=None, help="access database (default: $HEMS_DATA_DIR/...)")
    sub = parser.add_subparsers(dest="what", required=True)
    add = sub.add_parser("add", help="register a principal")
    add.add_argument("id")
    add.add_argument("--kind", required=True)
    add.add_argument("--name", required=True, help="display name")
    add.add_argument("--purpose", action="append", default=[], help="a purpose it is registered for (repeat)")
    sub.add_parser("list", help="principals with their kinds and purposes")
    link = sub.add_parser("link", help="record a relationship with a household (created if new)")
    link.add_argument("id")
    link.add_argument("household")
    link.add_argument("role")
    token = sub.add_parser("token", help="API tokens")
    tsub = token.add_subparsers(dest="action", required=True)
    create = tsub.add_parser("create", help="issue a token (printed once)")
    create.add_argument("id")
    create.add_argument("--purpose", action="append", required=True, help="purpose the token may declare")
    create.add_argument("--ttl-days", type=float, default=90.0)
    create.add_argument("--label", default="")
    revoke = tsub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("token_id")
    tlist = tsub.add_parser("list", help="tokens (never their secrets)")
    tlist.add_argument("id", nargs="?")
    password = sub.add_parser("password", help="set the web sign-in password (read from stdin or a prompt)")
    password.add_argument("id")
    password.add_argument("--stdin", action="store_true", help="read the password from standard input")
    return parser


def principals(argv: Sequence[str], default_db: Path) -> int:
    args = _parser().parse_args(argv)
    db: Path = args.db or default_db
    if args.what == "add" and not db.exists():
        print(f"hems principals: new access database at {db.resolve()}", file=sys.stderr)
    elif args.what != "add":
        from access.cli import existing_db

        if existing_db(db, "principals") is None:
            return 2
    rel = RelationshipStore(db)
    try:
        if args.what == "add":
            p = rel.add_principal(args.id, args.kind, args.name, args.purpose)
            print(f"added {p.id} ({p.kind}) purposes: {', '.join(sorted(p.purposes)) or 'none'}")
        elif args.what == "list":
            for p in rel.principals():
                print(f"{p.id}\t{p.kind}\t{p.display_name}\t{','.join(sorted(p.purposes))}")
        elif args.what == "link":
            rel.add_household(args.household)
            rel.link(args.id, args.household, args.role)
            print(f"linked {args.id} to {args.household} as {args.role}")
        elif args.what == "token":
            return _token(args, rel, db)
        elif args.what == "password":
            return _password(args, rel, db)
    finally:
        rel.close()
    return 0


def _token(args: argparse.Namespace, rel: RelationshipStore, db: Path) -> int:
    tokens = TokenStore(db)
    try:
        if args.action == "create":
            principal = rel.principal(args.id)
            info, text = tokens.create(
                principal.id, args.purpose, principal.purposes, ttl_s=args.ttl_days * 86400, label=args.label
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


def _password(args: argparse.Namespace, rel: RelationshipStore, db: Path) -> int:
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
