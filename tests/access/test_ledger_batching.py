"""Group commit of provision records: concurrent responses share ledger transactions, never records.

Everything runs on a real access database (a SQLite file, and a PostgreSQL database) and a real app;
the one failure injected is a real error of the database (a trigger another connection installs,
refusing inserts), so the flush fails inside its transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from access.api.state import AppState
from access.clock import to_epoch
from access.compiler import Policy
from access.db import AccessDb, is_url
from access.ledger import Ledger, LedgerError, ProvisionRecord
from tests.access.api_world import PV, RANGE, SERIES, Env, api_policy, start_env, store_path
from tests.access.raw_db import DATABASE_ERRORS, raw

__all__ = ["api_policy", "store_path"]

CLAUSES = ("sps-2.2.4",)


@pytest.fixture
async def env(
    tmp_path: Path, store_path: Path, api_policy: Policy, access_db: AccessDb
) -> AsyncIterator[Env]:
    async for e in start_env(tmp_path, store_path, api_policy, db=access_db, rate_per_s=None):
        yield e


async def _provide(
    state: AppState, i: int, categories: tuple[str, ...] = ("pv",), start: float = 0.0
) -> ProvisionRecord:
    return await state.record_provision(f"r{i}", "h1", categories, start, start + 3600.0, PV, CLAUSES)


_REFUSE = {
    "sqlite": [
        "CREATE TRIGGER refuse_all BEFORE INSERT ON provision_ledger "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_all() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'refused by the test'; END $$",
        "CREATE TRIGGER refuse_all BEFORE INSERT ON provision_ledger FOR EACH ROW "
        "EXECUTE FUNCTION refuse_all()",
    ],
}
_ALLOW = {
    "sqlite": ["DROP TRIGGER refuse_all"],
    "postgresql": ["DROP TRIGGER refuse_all ON provision_ledger"],
}


def _refuse_inserts(db: AccessDb) -> AccessDb:
    with raw(db) as other:
        for statement in _REFUSE["postgresql" if is_url(db) else "sqlite"]:
            other.execute(statement)
    return db


def _allow_inserts(db: AccessDb) -> None:
    with raw(db) as other:
        for statement in _ALLOW["postgresql" if is_url(db) else "sqlite"]:
            other.execute(statement)


async def test_concurrent_provisions_each_get_their_own_record_in_shared_transactions(env: Env) -> None:
    state, n = env.state, 300
    commits = state.ledger.commits
    records = await asyncio.gather(*(_provide(state, i, start=float(i)) for i in range(n)))
    # Each caller got the record of its own provision, and every record has its own place in the chain.
    assert [(r.recipient, r.period_start) for r in records] == [(f"r{i}", float(i)) for i in range(n)]
    assert sorted(r.seq for r in records) == list(range(1, n + 1))
    assert state.ledger.all() == sorted(records, key=lambda r: r.seq)
    result = state.ledger.verify()
    assert result.ok and result.rows == n
    assert state.metrics.ledger_records == n
    transactions = state.ledger.commits - commits
    assert state.metrics.ledger_commits == state.ledger_writer.commits == transactions  # hems_ledger_commits
    assert 1 <= transactions < n, transactions  # batched: fewer transactions (fsyncs) than records


async def test_a_refused_entry_fails_only_its_own_caller(env: Env) -> None:
    state = env.state
    calls = [
        _provide(state, i, categories=("rain",))
        if i == 7
        else state.record_provision("r12", "h1", ("pv",), 10.0, 5.0, PV, CLAUSES)
        if i == 12
        else _provide(state, i)
        for i in range(20)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[7], LedgerError) and "unknown categories" in str(results[7])
    assert isinstance(results[12], LedgerError) and "period_end is before" in str(results[12])
    good = [r for i, r in enumerate(results) if i not in (7, 12)]
    assert all(isinstance(r, ProvisionRecord) for r in good)
    assert sorted(r.seq for r in good if isinstance(r, ProvisionRecord)) == list(range(1, 19))
    assert state.ledger.verify().ok and state.ledger.verify().rows == 18
    assert state.metrics.ledger_records == 18


async def test_a_failed_flush_fails_all_its_callers_and_the_next_flush_succeeds(env: Env) -> None:
    state = env.state
    await asyncio.gather(*(_provide(state, i) for i in range(5)))
    commits = state.ledger.commits
    other = _refuse_inserts(env.db)
    results = await asyncio.gather(*(_provide(state, i) for i in range(30)), return_exceptions=True)
    assert all(isinstance(r, DATABASE_ERRORS) and "refused by the test" in str(r) for r in results)
    assert state.ledger.commits == commits and state.metrics.ledger_records == 5
    assert state.ledger.verify().ok and state.ledger.verify().rows == 5  # nothing of the failed batches
    _allow_inserts(other)
    records = await asyncio.gather(*(_provide(state, i) for i in range(30)))
    assert sorted(r.seq for r in records) == list(range(6, 36))
    assert state.ledger.verify().ok and state.ledger.verify().rows == 35
    assert state.metrics.ledger_records == 35


async def test_shutdown_writes_every_queued_provision_first(env: Env) -> None:
    tasks = [asyncio.create_task(_provide(env.state, i)) for i in range(100)]
    await asyncio.sleep(0)  # every caller has queued its entry; the flusher may not have started yet
    await env.client.close()  # app cleanup: the queue is drained, then the ledger's thread stops
    assert all(t.done() and not t.cancelled() and t.exception() is None for t in tasks)
    ledger = Ledger(env.db)
    assert ledger.verify().ok and ledger.verify().rows == 100
    ledger.close()


async def test_parallel_partner_reads_leave_one_record_each(env: Env) -> None:
    before = env.ledger_rows()
    starts = [f"2026-06-01T00:{i:02d}:00Z" for i in range(50)]
    responses = await asyncio.gather(
        *(
            env.client.get(
                SERIES.format(hh="h1", cat="pv"),
                params={**RANGE, "start": start, "every": "15m", "purpose": PV},
                headers=env.auth("inst1"),
            )
            for start in starts
        )
    )
    for r in responses:
        assert r.status == 200, await r.text()
    records = env.state.ledger.all()[before:]
    assert len(records) == 50
    assert {r.recipient for r in records} == {"inst1"}
    periods = sorted(r.period_start for r in records)
    assert periods == sorted(to_epoch(s) for s in starts)  # one record per response, each its own
    assert env.state.ledger.verify().ok


async def test_a_failed_ledger_write_sends_no_data(env: Env) -> None:
    before = env.ledger_rows()
    other = _refuse_inserts(env.db)
    r = await env.client.get(
        SERIES.format(hh="h1", cat="pv"),
        params={**RANGE, "every": "15m", "purpose": PV},
        headers=env.auth("inst1"),
    )
    assert r.status == 500
    body = await r.json(content_type=None)
    assert body["code"] == "internal_error" and "columns" not in body
    _allow_inserts(other)
    assert env.ledger_rows() == before
    r = await env.client.get(
        SERIES.format(hh="h1", cat="pv"),
        params={**RANGE, "every": "15m", "purpose": PV},
        headers=env.auth("inst1"),
    )
    assert r.status == 200, await r.text()
    assert env.ledger_rows() == before + 1


@pytest.mark.parametrize("sizes", [(1,), (7, 8, 9), (63, 64, 65), (73, 1, 150)])
def test_batches_of_any_size_are_written_whole_and_chained(
    access_db: AccessDb, sizes: tuple[int, ...]
) -> None:
    """Rows go in by INSERTs of 64, 8 and 1 rows; every split must land every row, in order."""
    from access.ledger import ProvisionEntry

    ledger = Ledger(access_db)
    seq = 0
    for size in sizes:
        entries = [
            ProvisionEntry(f"r{seq + i}", "h1", ["pv"], seq + i, seq + i + 60, PV, CLAUSES, at=1e9 + seq + i)
            for i in range(size)
        ]
        written = ledger.record_many(entries)
        assert [r.seq for r in written] == list(range(seq + 1, seq + size + 1))
        seq += size
    stored = ledger.all()
    assert [r.recipient for r in stored] == [f"r{i}" for i in range(seq)]
    assert [r.period_start for r in stored] == [float(i) for i in range(seq)]
    result = ledger.verify()
    assert result.ok and result.rows == seq
    ledger.close()
