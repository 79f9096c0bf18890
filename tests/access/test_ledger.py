"""The provision ledger: append-only by trigger, tamper-evident by hash chain (tampered with the
database's own driver), on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from access.db import AccessDb
from access.ledger import Ledger, LedgerError, ProvisionEntry
from tests.access.raw_db import DATABASE_ERRORS, raw, rows, tamper

PV = "sps.pv_after_maintenance"
GOOD_ENTRY: dict[str, object] = {
    "recipient": "inst1",
    "household": "h1",
    "categories": ["pv"],
    "period_start": 0,
    "period_end": 1,
    "purpose": PV,
    "clause_ids": ["sps-2.2.4"],
}


def _fill(path: AccessDb, n: int = 5) -> Ledger:
    ledger = Ledger(path)
    for i in range(n):
        ledger.record(
            recipient=f"inst{i % 2}",
            household=f"h{i % 3}",
            categories=["pv", "electricity"],
            period_start=1_780_000_000 + i,
            period_end=1_780_003_600 + i,
            purpose=PV,
            clause_ids=["sps-2.2.4"],
            at=1_780_010_000 + i,
        )
    return ledger


def test_intact_ledger_verifies_and_lists_per_household(access_db: AccessDb) -> None:
    ledger = _fill(access_db)
    result = ledger.verify()
    assert result.ok and result.rows == 5 and result.first_bad_seq is None
    mine = ledger.for_household("h1")
    assert [r.seq for r in mine] == [2, 5]
    assert mine[0].categories == ("electricity", "pv") and mine[0].clause_ids == ("sps-2.2.4",)
    assert "inst1" in mine[0].describe()
    ledger.close()


def test_the_chain_survives_a_reopen(access_db: AccessDb) -> None:
    _fill(access_db).close()
    again = Ledger(access_db)
    again.record("inst0", "h0", ["pv"], 0, 1, PV, ["sps-2.2.4"], at=2)
    assert again.verify().ok and again.verify().rows == 6
    again.close()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE provision_ledger SET recipient = 'x' WHERE seq = 1",
        "DELETE FROM provision_ledger WHERE seq = 1",
    ],
)
def test_update_and_delete_are_refused_by_triggers(access_db: AccessDb, sql: str) -> None:
    _fill(access_db).close()
    with pytest.raises(DATABASE_ERRORS, match="append-only"), raw(access_db) as db:
        db.execute(sql)
    assert Ledger(access_db).verify().ok
    assert not hasattr(Ledger, "delete") and not hasattr(Ledger, "update")


@pytest.mark.parametrize(
    ("sql", "bad_seq"),
    [
        (["UPDATE provision_ledger SET recipient = 'someone_else' WHERE seq = 3"], 3),
        (["UPDATE provision_ledger SET categories = '[\"pv\"]' WHERE seq = 2"], 2),
        (["UPDATE provision_ledger SET at = at + 1 WHERE seq = 1"], 1),
        (["DELETE FROM provision_ledger WHERE seq = 3"], 4),
        (["DELETE FROM provision_ledger WHERE seq = 5"], 5),  # a dropped tail: caught by the head row
        # Reorder: swap the contents of rows 2 and 4 (hashes travel with their rows).
        (
            [
                "UPDATE provision_ledger SET seq = -2 WHERE seq = 2",
                "UPDATE provision_ledger SET seq = 2 WHERE seq = 4",
                "UPDATE provision_ledger SET seq = 4 WHERE seq = -2",
            ],
            2,
        ),
    ],
    ids=["edit-recipient", "edit-categories", "edit-time", "delete-middle", "delete-last", "reorder"],
)
def test_tampering_is_detected(access_db: AccessDb, sql: list[str], bad_seq: int) -> None:
    path = access_db
    _fill(path).close()
    tamper(path, *sql)
    result = Ledger(path).verify()
    assert not result.ok
    assert result.first_bad_seq == bad_seq, result
    assert result.problem


def test_rehashing_one_row_still_breaks_the_next_link(access_db: AccessDb) -> None:
    """An insider who recomputes row 2's hash after editing it must rewrite every later row too."""
    import hashlib

    path = access_db
    _fill(path).close()
    (row,) = rows(path, "SELECT prev_hash FROM provision_ledger WHERE seq = 2")
    forged = hashlib.sha256((row[0] + "forged").encode()).hexdigest()
    tamper(path, f"UPDATE provision_ledger SET recipient = 'x', hash = '{forged}' WHERE seq = 2")
    result = Ledger(path).verify()
    assert not result.ok and result.first_bad_seq == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"categories": []},
        {"categories": ["rain"]},
        {"clause_ids": []},
        {"period_start": 10, "period_end": 5},
        {"recipient": ""},
    ],
)
def test_bad_records_are_refused_and_lose_nothing(access_db: AccessDb, kwargs: dict[str, object]) -> None:
    ledger = _fill(access_db, 2)
    args = {**GOOD_ENTRY, **kwargs}
    with pytest.raises(LedgerError):
        ledger.record(**args)  # type: ignore[arg-type]
    assert ledger.verify().ok and ledger.verify().rows == 2
    ledger.close()


def _entries(n: int, first_at: int = 1_780_010_000) -> list[ProvisionEntry]:
    return [
        ProvisionEntry(
            f"inst{i % 2}",
            f"h{i % 3}",
            ["pv", "electricity"],
            1_780_000_000 + i,
            1_780_003_600 + i,
            PV,
            ["sps-2.2.4"],
            at=first_at + i,
        )
        for i in range(n)
    ]


def test_record_many_writes_one_transaction_with_the_same_chain_as_one_by_one(
    access_db: AccessDb, tmp_path: Path
) -> None:
    """One by one on a SQLite file, batched on the database under test: the same rows and hashes
    (both chains keyed with the same key file)."""
    key_file = tmp_path / "hems.key"
    one_by_one = Ledger(tmp_path / "a.sqlite", key_file=key_file)
    for entry in _entries(7):
        one_by_one.record_many([entry])
    batched = Ledger(access_db, key_file=key_file)
    first = batched.record_many(_entries(3))
    rest = batched.record_many(_entries(7)[3:])
    assert batched.commits == 2 and one_by_one.commits == 7
    assert [r.seq for r in first + rest] == list(range(1, 8))
    assert first + rest == one_by_one.all() == batched.all()  # same rows, same hashes
    assert batched.verify().ok and batched.head() == one_by_one.head()
    assert batched.record_many([]) == [] and batched.commits == 2
    one_by_one.close()
    batched.close()


def test_records_written_in_a_batch_are_tamper_evident_too(access_db: AccessDb) -> None:
    path = access_db
    ledger = Ledger(path)
    ledger.record_many(_entries(5))
    ledger.close()
    tamper(path, "DELETE FROM provision_ledger WHERE seq = 3")
    result = Ledger(path).verify()
    assert not result.ok and result.first_bad_seq == 4


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"categories": []}, "at least one category"),
        ({"categories": ["rain"]}, r"unknown categories \['rain'\]"),
        ({"clause_ids": []}, "cites the clause"),
        ({"period_start": 10, "period_end": 5}, "period_end is before period_start"),
        ({"purpose": ""}, "recipient, household and purpose are required"),
    ],
)
def test_one_bad_entry_refuses_the_whole_batch_with_records_message(
    access_db: AccessDb, bad: dict[str, object], message: str
) -> None:
    ledger = _fill(access_db, 2)
    good = _entries(3, first_at=1_780_020_000)
    args = {**GOOD_ENTRY, **bad}
    with pytest.raises(LedgerError, match=message):
        ledger.record(**args)  # type: ignore[arg-type]
    with pytest.raises(LedgerError, match=message):
        ledger.record_many([good[0], ProvisionEntry(**args), good[1]])  # type: ignore[arg-type]
    assert ledger.verify().ok and ledger.verify().rows == 2 and ledger.commits == 2
    assert [r.seq for r in ledger.record_many(good)] == [3, 4, 5]
    ledger.close()


# A trigger another connection installs, refusing the fourth record: a real failure of the database
# inside the ledger's transaction, after the third record was inserted.
_REFUSE_FOURTH = {
    "sqlite": [
        "CREATE TRIGGER refuse_fourth BEFORE INSERT ON provision_ledger WHEN NEW.seq = 4 "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_fourth() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.seq = 4 THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER refuse_fourth BEFORE INSERT ON provision_ledger FOR EACH ROW "
        "EXECUTE FUNCTION refuse_fourth()",
    ],
}
_ALLOW_FOURTH = {
    "sqlite": ["DROP TRIGGER refuse_fourth"],
    "postgresql": ["DROP TRIGGER refuse_fourth ON provision_ledger"],
}


def test_a_failed_write_rolls_the_whole_batch_back_and_the_next_one_goes_through(access_db: AccessDb) -> None:
    path = access_db
    ledger = _fill(path, 2)
    dialect = ledger._db.dialect
    with raw(path) as other:
        for statement in _REFUSE_FOURTH[dialect]:
            other.execute(statement)
    with pytest.raises(DATABASE_ERRORS, match="refused by the test"):
        ledger.record_many(_entries(3, first_at=1_780_020_000))  # seq 3 is inserted, then 4 fails
    assert ledger.verify().ok and ledger.verify().rows == 2
    with raw(path) as other:
        for statement in _ALLOW_FOURTH[dialect]:
            other.execute(statement)
    assert [r.seq for r in ledger.record_many(_entries(3, first_at=1_780_030_000))] == [3, 4, 5]
    assert ledger.verify().ok and ledger.verify().rows == 5
    ledger.close()


def _reference_canonical(
    seq: object, recipient: object, household: object, categories: object, period_start: float,
    period_end: float, purpose: object, clause_ids: object, at: float,
) -> str:  # fmt: skip
    """The canonical form as first defined (a sorted-key JSON dump); every ledger so far is chained
    with it, so the template in ``access.ledger`` must produce exactly this text."""
    import json

    body = {
        "seq": seq,
        "recipient": recipient,
        "household": household,
        "categories": list(categories),  # type: ignore[call-overload]
        "period_start": repr(float(period_start)),
        "period_end": repr(float(period_end)),
        "purpose": purpose,
        "clause_ids": list(clause_ids),  # type: ignore[call-overload]
        "at": repr(float(at)),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_text = st.text(max_size=12)
_scalar = st.one_of(_text, st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False))
_time = st.one_of(st.floats(allow_nan=True), st.integers(-(2**53), 2**53))


@settings(max_examples=300, deadline=None)
@given(
    seq=st.one_of(st.integers(0, 2**62), st.booleans()),
    names=st.tuples(_scalar, _scalar, _scalar),
    lists=st.tuples(st.lists(_scalar, max_size=3), st.lists(_text, max_size=3)),
    times=st.tuples(_time, _time, _time),
    as_tuples=st.booleans(),
)
def test_canonical_text_is_the_sorted_json_dump_it_always_was(
    seq: int,
    names: tuple[object, object, object],
    lists: tuple[list[object], list[str]],
    times: tuple[float, float, float],
    as_tuples: bool,
) -> None:
    """Strings and string tuples are remembered between calls; numbers, booleans and None (what an edit
    of the file could leave in a text column) must never be answered from that memory."""
    from access.ledger import _canonical

    cats, clauses = (tuple(x) for x in lists) if as_tuples else lists
    args = (seq, names[0], names[1], cats, times[0], times[1], names[2], clauses, times[2])
    for _ in range(2):  # the second call may come from the remembered text
        assert _canonical(*args) == _reference_canonical(*args)  # type: ignore[arg-type]
