"""Long-running readers learn that *their* tables changed, whoever changed them, and only then: the
ledger commits to the same file for every third-party response, and that must not make every worker
rebuild its policy snapshot or forget its tokens (real SQLite file, several connections)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from access.consent import ConsentStore
from access.ledger import Ledger
from access.relationships import RelationshipStore
from access.tokens import TokenStore

PV = "sps.pv_after_maintenance"


def _versions(rel: RelationshipStore, consent: ConsentStore, tokens: TokenStore) -> tuple[int, int, int]:
    return rel.data_version(), consent.data_version(), tokens.data_version()


def test_ledger_writes_change_no_reader_version(tmp_path: Path) -> None:
    db = tmp_path / "a.sqlite"
    rel, consent, tokens, ledger = RelationshipStore(db), ConsentStore(db), TokenStore(db), Ledger(db)
    rel.add_households(["h1"])
    rel.add_principal("inst", "installer", "Inst", [PV])
    before = _versions(rel, consent, tokens)
    for _ in range(5):
        ledger.record("inst", "h1", ["pv"], 0.0, 1.0, PV, ["sps.2.2.4"], at=2.0)
    assert _versions(rel, consent, tokens) == before


def test_each_reader_sees_changes_to_its_tables_from_any_connection(tmp_path: Path) -> None:
    db = tmp_path / "a.sqlite"
    rel, consent, tokens = RelationshipStore(db), ConsentStore(db), TokenStore(db)
    r0, c0, t0 = _versions(rel, consent, tokens)
    other_rel = RelationshipStore(db)
    other_rel.add_households(["h9"])
    assert rel.data_version() != r0 and consent.data_version() == c0
    ConsentStore(db).suspend("h9", "provision", at=1.0)
    assert consent.data_version() != c0
    other_rel.add_principal("inst", "installer", "Inst", [PV])
    TokenStore(db).create("inst", {PV}, frozenset({PV}), at=0.0)
    assert tokens.data_version() != t0
    # Even a hand edit with the sqlite3 shell counts (triggers, not our code, keep the count).
    r1 = rel.data_version()
    raw = sqlite3.connect(db)
    raw.execute("UPDATE links SET until = 5 WHERE 0")  # touches no row: no change
    raw.execute("DELETE FROM households WHERE id = 'nobody'")
    raw.commit()
    assert rel.data_version() == r1
    raw.execute("INSERT INTO households VALUES ('h10', 0)")
    raw.commit()
    assert rel.data_version() != r1
