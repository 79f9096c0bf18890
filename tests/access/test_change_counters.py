"""Long-running readers learn that *their* tables changed, whoever changed them, and only then: the
ledger commits to the same database for every third-party response, and that must not make every
worker rebuild its policy snapshot or forget its tokens (a real SQLite file or PostgreSQL database,
several connections)."""

from __future__ import annotations

from access.consent import ConsentStore
from access.db import AccessDb
from access.ledger import Ledger
from access.relationships import RelationshipStore
from access.tokens import TokenStore
from tests.access.conftest import settle, within
from tests.access.raw_db import raw

PV = "sps.pv_after_maintenance"


def _versions(rel: RelationshipStore, consent: ConsentStore, tokens: TokenStore) -> tuple[int, int, int]:
    settle()
    return rel.data_version(), consent.data_version(), tokens.data_version()


def test_ledger_writes_change_no_reader_version(access_db: AccessDb) -> None:
    db = access_db
    rel, consent, tokens, ledger = RelationshipStore(db), ConsentStore(db), TokenStore(db), Ledger(db)
    rel.add_households(["h1"])
    rel.add_principal("inst", "installer", "Inst", [PV])
    before = _versions(rel, consent, tokens)
    for _ in range(5):
        ledger.record("inst", "h1", ["pv"], 0.0, 1.0, PV, ["sps.2.2.4"], at=2.0)
    assert _versions(rel, consent, tokens) == before
    for store in (rel, consent, tokens, ledger):
        store.close()


def test_each_reader_sees_changes_to_its_tables_from_any_connection(access_db: AccessDb) -> None:
    db = access_db
    rel, consent, tokens = RelationshipStore(db), ConsentStore(db), TokenStore(db)
    r0, c0, t0 = _versions(rel, consent, tokens)
    other_rel, other_consent, other_tokens = RelationshipStore(db), ConsentStore(db), TokenStore(db)
    # A change is heard within the second the replicas promise (at once on SQLite, by NOTIFY on
    # PostgreSQL); the absence of one only after a pause long enough for it to have arrived.
    other_rel.add_households(["h9"])
    assert within(1.0, lambda: rel.data_version() != r0) is not None
    settle()
    assert consent.data_version() == c0
    other_consent.suspend("h9", "provision", at=1.0)
    assert within(1.0, lambda: consent.data_version() != c0) is not None
    other_rel.add_principal("inst", "installer", "Inst", [PV])
    other_tokens.create("inst", {PV}, frozenset({PV}), at=0.0)
    assert within(1.0, lambda: tokens.data_version() != t0) is not None
    # Even a hand edit with the database's own client counts (triggers, not our code, keep the count).
    r1 = rel.data_version()
    with raw(db) as hand:
        hand.execute("UPDATE links SET until = 5 WHERE 1 = 0")  # touches no row: no change
        hand.execute("DELETE FROM households WHERE id = 'nobody'")
    settle()
    assert rel.data_version() == r1
    with raw(db) as hand:
        hand.execute("INSERT INTO households VALUES ('h10', 0)")
    assert within(1.0, lambda: rel.data_version() != r1) is not None
    for store in (rel, consent, tokens, other_rel, other_consent, other_tokens):
        store.close()
