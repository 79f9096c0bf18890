"""``hems access migrate``: an access database in use on SQLite (every store holding rows) moved into a
real PostgreSQL database, and everything it decided, authenticated and recorded is the same there."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from access.alerts import WebhookStore
from access.auth import WebAuth
from access.budget import BudgetStore
from access.cli import main as cli_main
from access.compiler import Policy
from access.consent import ConsentStore
from access.db import AccessDbError
from access.db_migrate import migrate
from access.decision import Authorizer
from access.ledger import Ledger
from access.relationships import RelationshipStore
from access.signin_throttle import SignInThrottle
from access.tokens import TokenStore
from seeds.loader import Seeds
from tests.access.conftest import PV, T, ask, populate

pytestmark = pytest.mark.postgresql

REQUESTS = [
    ("inst1", "h1", "pv", PV),
    ("appr1", "h1", "pv", PV),
    ("appr_narrow", "h1", "battery", PV),
    ("body1", "h1", "pv", PV),
    ("partner1", "h1", "identity", "enex.billing"),
    ("sales1", "h1", "pv", PV),
    ("inst1", "h2", "pv", PV),
]


def _fill(path: Path, seeds: Seeds) -> dict[str, str]:
    """A file with rows in every store; returns the credentials issued."""
    rel, consent = RelationshipStore(path, seeds), ConsentStore(path, seeds)
    populate(rel, seeds)
    consent.suspend("h1", "provision", recipient="sales1", at=T - 86400)
    consent.request_erasure("h2", seeds, at=T - 3600)
    tokens = TokenStore(path)
    _, token = tokens.create("inst1", {PV}, rel.principal("inst1").purposes, at=T - 10)
    web = WebAuth(path)
    web.set_password("alice", "correct horse battery")
    sid, _ = web.sign_in("alice", "correct horse battery", at=T - 5)
    SignInThrottle(path, clock=lambda: T).reserve("someone", "127.0.0.9")
    WebhookStore(path).put("inst1", "https://example.test/hook", at=T)
    budgets = BudgetStore(path)
    budgets.set_budget("ana", 5.0, by="ops", at=T - 50)
    budgets.spend(
        "ana", "enex.marketing", "electricity", ["power_w"], (T - 3600, T), 3600.0, 1, 0.5, ["enex-2.7"]
    )
    ledger = Ledger(path)
    for i in range(5):
        ledger.record("inst1", f"h{i % 2 + 1}", ["pv"], T - 7200, T - 3600, PV, ["sps-2.2.4"], at=T - 100 + i)
    for store in (rel, consent, tokens, web, ledger, budgets):
        store.close()
    return {"token": token, "session": sid}


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cli_main(["access", *argv])
    return code, out.getvalue()


def test_everything_moves_and_decides_authenticates_and_verifies_the_same(
    tmp_path: Path, pg_url: str, seeds: Seeds, policy: Policy
) -> None:
    source = tmp_path / "access.sqlite"
    issued = _fill(source, seeds)
    code, out = _cli("migrate", "--db", str(source), "--to", pg_url)
    assert code == 0, out
    assert "provision_ledger\t5 rows" in out and "5 ledger records, verified there" in out

    old = Authorizer(policy, RelationshipStore(source, seeds), ConsentStore(source, seeds))
    new = Authorizer(policy, RelationshipStore(pg_url, seeds), ConsentStore(pg_url, seeds))
    assert new.relationships.facts() == old.relationships.facts()
    assert new.consent.suspensions() == old.consent.suspensions()
    assert [e.outcome for e in new.consent.erasures("h2")] == [e.outcome for e in old.consent.erasures("h2")]
    for who, household, category, purpose in REQUESTS:
        request = ask(who, household, category, "read", purpose)
        assert new.decide(request, at=T) == old.decide(request, at=T), request
    # The same credentials work there: the token, the session, the password.
    assert TokenStore(pg_url).authenticate(issued["token"], at=T).principal == "inst1"
    web = WebAuth(pg_url)
    session = web.session(issued["session"], at=T)
    assert session is not None and session.principal == "alice"
    assert web.check_password("alice", "correct horse battery")
    assert SignInThrottle(pg_url, clock=lambda: T).failures("someone") == 1
    assert WebhookStore(pg_url).get("inst1") is not None
    # The statistics releases: the same budget left, the same chain, which goes on there.
    moved = BudgetStore(pg_url)
    assert moved.releases() == BudgetStore(source).releases() and moved.verify() is None
    assert moved.budget("ana").left == 4.5
    moved.spend("ana", "enex.marketing", "electricity", ["power_w"], (T - 60, T), 60.0, 1, 0.5, ["enex-2.7"])
    assert len(moved.releases()) == 2 and moved.verify() is None
    # The chain verifies with the same key, and goes on from where it was: ids and seqs continue.
    key = source.parent / "hems.key"
    ledger = Ledger(pg_url, key_file=key)
    assert ledger.verify().ok and ledger.head() == Ledger(source).head()
    assert ledger.record("inst1", "h1", ["pv"], T - 60, T, PV, ["sps-2.2.4"], at=T).seq == 6
    assert ledger.verify().ok and ledger.verify().rows == 6
    rel = RelationshipStore(pg_url, seeds)
    assert rel.add_contract("h2", "sps", "service", since=T).id == len(old.relationships.contracts()) + 1


def test_a_target_with_data_is_refused_and_keeps_what_it_had(
    tmp_path: Path, pg_url: str, seeds: Seeds
) -> None:
    source = tmp_path / "access.sqlite"
    _fill(source, seeds)
    RelationshipStore(pg_url, seeds).add_households(["already-here"])
    code, out = _cli("migrate", "--db", str(source), "--to", pg_url)
    assert code == 1 and "already holds data (in households)" in out
    assert RelationshipStore(pg_url, seeds).households() == ["already-here"]


def test_a_tampered_ledger_is_not_carried_over(tmp_path: Path, pg_url: str, seeds: Seeds) -> None:
    from tests.access.raw_db import tamper

    source = tmp_path / "access.sqlite"
    _fill(source, seeds)
    tamper(source, "UPDATE provision_ledger SET recipient = 'x' WHERE seq = 2")
    with pytest.raises(AccessDbError, match="does not verify"):
        migrate(source, pg_url)
    assert RelationshipStore(pg_url, seeds).households() == []


def test_the_target_must_be_a_url_and_the_source_a_file(tmp_path: Path, pg_url: str) -> None:
    code, out = _cli("migrate", "--db", str(tmp_path / "none.sqlite"), "--to", pg_url)
    assert code == 1 and "no access database" in out
    code, out = _cli("migrate", "--db", str(tmp_path / "none.sqlite"), "--to", str(tmp_path / "b.sqlite"))
    assert code == 1 and "postgresql:// URL" in out
