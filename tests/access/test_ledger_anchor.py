"""The ledger's anchors against a rewrite by someone who can write the database (edited with its own
driver, as an insider would): a dropped tail with a recomputed head, a whole re-chained ledger, the old
unkeyed ledgers, and the head the homeowner keeps; on SQLite and on PostgreSQL."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from access.cli import main as cli_main
from access.compiler import Policy
from access.db import AccessDb
from access.keys import key_file_for, load_key
from access.ledger import Ledger, LedgerError, _canonical
from access.ledger_anchor import GENESIS, ChainKey, KeptHead, household_chain, plain_hash
from tests.access.api_world import NOW, Env, api_policy, start_env, store_path
from tests.access.raw_db import raw, rows

__all__ = ["api_policy", "store_path"]
PV = "sps.pv_after_maintenance"


def _fill(path: AccessDb, n: int = 6, first_at: int = 1_780_010_000) -> Ledger:
    ledger = Ledger(path)
    for i in range(n):
        ledger.record(f"inst{i % 2}", f"h{i % 2}", ["pv"], 1_780_000_000 + i, 1_780_003_600 + i, PV,
                      ["sps-2.2.4"], at=first_at + i)  # fmt: skip
    return ledger


def _rows(path: AccessDb) -> list[tuple[object, ...]]:
    return rows(path, "SELECT * FROM provision_ledger ORDER BY seq")


def _rewrite(path: AccessDb, rows: list[tuple[object, ...]], digest: object, *, anchors: bool = True) -> None:
    """Replace the whole table by ``rows`` re-chained with ``digest(prev, canonical)`` (the way the
    ledger's own code chains), fixing the head row as well: what an insider with the database's own
    client and our source code can do.  ``anchors=False`` also deletes the signed anchors."""
    with raw(path) as db:
        db.drop_append_only()
        db.execute("DELETE FROM provision_ledger")
        prev = GENESIS
        for seq, row in enumerate(rows, start=1):
            cats, clauses = json.loads(str(row[3])), json.loads(str(row[7]))
            canonical = _canonical(seq, row[1], row[2], cats, row[4], row[5], row[6], clauses, row[8])  # type: ignore[arg-type]
            h = digest(prev, canonical)  # type: ignore[operator]
            db.execute(
                "INSERT INTO provision_ledger VALUES (?,?,?,?,?,?,?,?,?,?,?)", (seq, *row[1:9], prev, h)
            )
            prev = h
        db.execute("UPDATE provision_ledger_head SET rows = ?, hash = ?", (len(rows), prev))
        if not anchors:
            db.execute("DELETE FROM provision_ledger_anchor")


def test_a_dropped_tail_with_a_recomputed_head_is_detected(access_db: AccessDb) -> None:
    path = access_db
    _fill(path).close()
    rows = _rows(path)
    with raw(path) as db:
        db.drop_append_only()
        db.execute("DELETE FROM provision_ledger WHERE seq > 4")
        db.execute("UPDATE provision_ledger_head SET rows = 4, hash = ?", (rows[3][10],))
        # Even a head anchor rewritten with a made-up MAC.
        db.execute("UPDATE provision_ledger_anchor SET seq = 4, hash = ?, mac = ? WHERE kind = 'head'",
                   (rows[3][10], "0" * 64))  # fmt: skip
    result = Ledger(path).verify()
    assert not result.ok and result.rows == 4 and "head" in (result.problem or ""), result


@pytest.mark.parametrize("anchors", [True, False], ids=["anchors-kept", "anchors-deleted"])
def test_a_re_chained_file_is_detected(access_db: AccessDb, anchors: bool) -> None:
    """The whole ledger rewritten (one record's recipient changed, one removed) and re-chained the way
    unkeyed ledgers are, head row included."""
    path = access_db
    _fill(path).close()
    rows = _rows(path)
    forged = [rows[0], (*rows[1][:1], "someone_else", *rows[1][2:]), *rows[3:]]
    _rewrite(path, forged, plain_hash, anchors=anchors)
    result = Ledger(path).verify()
    assert not result.ok, result
    assert result.first_bad_seq == 1


def test_a_re_chain_with_the_key_passes_verify_but_not_the_homeowners_head(access_db: AccessDb) -> None:
    """Whoever holds the key can re-chain (``verify`` cannot tell); the head a person kept can."""
    path = access_db
    ledger = _fill(path)
    kept = ledger.household_head("h1").head  # h1's records: seq 2, 4, 6
    ledger.close()
    key = ChainKey(load_key(key_file_for(path)))
    rows = _rows(path)
    _rewrite(path, [r for r in rows if r[0] != 2], key.row_hash)
    with raw(path) as db:
        last = db.execute("SELECT seq, hash FROM provision_ledger ORDER BY seq DESC LIMIT 1").fetchone()
        db.execute("UPDATE provision_ledger_anchor SET seq = ?, hash = ?, mac = ? WHERE kind = 'head'",
                   (*last, key.anchor_mac("head", *last)))  # fmt: skip
    again = Ledger(path)
    assert again.verify().ok  # the limit of a key the operator holds
    assert again.household_head("h1").verdict(kept) == "changed"
    assert again.household_head("h0").verdict(again.household_head("h0").head) == "intact"


def test_intact_ledgers_verify_and_the_chain_is_keyed(access_db: AccessDb) -> None:
    path = access_db
    ledger = _fill(path)
    assert ledger.verify().ok and ledger.verify().rows == 6
    rows = _rows(path)
    key = ChainKey(load_key(key_file_for(path)))
    assert rows[0][10] == key.row_hash(GENESIS, _canonical(*ledger.all()[0][:9]))
    assert rows[0][10] != plain_hash(GENESIS, _canonical(*ledger.all()[0][:9]))
    ledger.close()


def test_without_the_key_verify_says_so_and_nothing_is_written(access_db: AccessDb, tmp_path: Path) -> None:
    path = access_db
    _fill(path).close()
    key_file_for(path).rename(tmp_path / "elsewhere.key")
    ledger = Ledger(path)
    result = ledger.verify()
    assert not result.ok and "key file" in (result.problem or "")
    with pytest.raises(ValueError, match="key file"):
        ledger.record("inst0", "h0", ["pv"], 0, 1, PV, ["sps-2.2.4"], at=2)
    assert not key_file_for(path).exists()  # a new key would have been silently different
    assert Ledger(path, key_file=tmp_path / "elsewhere.key").verify().ok


# -- ledgers written before keys --------------------------------------------------------------------
def _legacy(path: AccessDb, n: int) -> None:
    """A ledger as the unkeyed version wrote it: plain SHA-256 chain, head row, no anchors."""
    ledger = _fill(path, n)
    ledger.close()
    rows = _rows(path)
    _rewrite(path, rows, plain_hash, anchors=False)
    key_file_for(path).unlink()


def test_an_old_ledger_is_checked_then_sealed_with_a_checkpoint(access_db: AccessDb) -> None:
    path = access_db
    _legacy(path, 4)
    ledger = Ledger(path)
    unsealed = ledger.verify()
    assert not unsealed.ok and "checkpoint" in (unsealed.problem or "")
    assert ledger.seal() == 4 and ledger.seal() == 4
    ledger.record("inst0", "h0", ["pv"], 0, 1, PV, ["sps-2.2.4"], at=2)
    assert ledger.verify().ok and ledger.verify().rows == 5
    rows = _rows(path)
    assert rows[3][10] == plain_hash(
        str(rows[3][9]), _canonical(*ledger.all()[3][:9])
    )  # old rows as they were
    ledger.close()
    # The sealed prefix re-chained (plain, as it was written) no longer ends where the checkpoint says.
    forged = [(*rows[0][:1], "someone_else", *rows[0][2:]), *rows[1:4]]
    _rewrite(path, forged, plain_hash)
    result = Ledger(path).verify()
    assert not result.ok


def test_a_tampered_old_ledger_is_not_sealed(access_db: AccessDb) -> None:
    path = access_db
    _legacy(path, 3)
    with raw(path) as db:
        db.execute("UPDATE provision_ledger SET recipient = 'x' WHERE seq = 2")  # (triggers gone already)
    ledger = Ledger(path)
    with pytest.raises(LedgerError, match="cannot be sealed: record 2"):
        ledger.seal()
    with pytest.raises(LedgerError):
        ledger.record("inst0", "h0", ["pv"], 0, 1, PV, ["sps-2.2.4"], at=2)
    assert not ledger.sealed()


def _cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cli_main(["ledger", *args])
    return code, out.getvalue()


def test_the_cli_seals_verifies_and_shows_a_households_head(access_db: AccessDb) -> None:
    path = access_db
    _legacy(path, 3)
    code, out = _cli("verify", "--db", str(path))
    assert code == 1 and "checkpoint" in out
    assert _cli("seal", "--db", str(path)) == (
        0,
        "sealed: records 1-3 checked and anchored; later records are keyed\n",
    )
    code, out = _cli("verify", "--db", str(path))
    assert code == 0 and out.startswith("ok: 3 records")
    code, out = _cli("list", "--household", "h1", "--db", str(path))
    head = Ledger(path).household_head("h1").head
    assert code == 0 and out.rstrip().endswith(f"head {head.text()}") and head.records == 1


# -- the homeowner's head ------------------------------------------------------------------------------
def test_the_household_chain_is_plain_sha256_over_its_records(access_db: AccessDb) -> None:
    ledger = _fill(access_db)
    mine = ledger.household_head("h1")
    assert [r.seq for r in mine.records] == [2, 4, 6]
    expected = GENESIS
    for r in mine.records:
        expected = plain_hash(expected, _canonical(*r[:9]))
    assert mine.chain[-1] == expected == mine.head.hash
    assert household_chain([]) == [] and ledger.household_head("h9").head == KeptHead(0, GENESIS)
    assert KeptHead.parse(mine.head.text()) == mine.head
    for bad in ("", "3", "x:" + "0" * 64, "3:" + "g" * 64, "-1:" + "0" * 64, "3:" + "0" * 63):
        assert KeptHead.parse(bad) is None, bad


@pytest.fixture
async def env(tmp_path: Path, store_path: Path, api_policy: Policy) -> AsyncIterator[Env]:
    async for e in start_env(tmp_path, store_path, api_policy):
        yield e


async def test_the_homeowner_sees_and_checks_their_head(env: Env) -> None:
    for i in range(3):
        await env.state.record_provision(
            "inst1", "h1", ("pv",), NOW - 3600 * (i + 1), NOW, PV, ("sps-2.2.4",)
        )
    url = "/api/v1/households/h1/ledger"
    body = await (await env.client.get(url, headers=env.auth("alice"))).json()
    head = body["head"]
    assert head["records"] == 3 and len(head["hash"]) == 64 and head["text"] == f"3:{head['hash']}"
    assert [r["chain"] for r in body["records"]][-1] == head["hash"]
    r = await env.client.get(url, params={"kept": head["text"]}, headers=env.auth("alice"))
    assert (await r.json())["kept"] == {"text": head["text"], "verdict": "intact"}
    r = await env.client.get(url, params={"kept": "nonsense"}, headers=env.auth("alice"))
    assert r.status == 400 and (await r.json())["field"] == "kept"
    # Another homeowner sees nothing of it.
    r = await env.client.get(url, params={"kept": head["text"]}, headers=env.auth("bob"))
    assert r.status == 403
    # The insider drops the household's first record and re-chains with the key, while we serve.
    key = ChainKey(load_key(key_file_for(env.db)))
    _rewrite(env.db, _rows(env.db)[1:], key.row_hash)
    r = await env.client.get(url, params={"kept": head["text"]}, headers=env.auth("alice"))
    assert (await r.json())["kept"]["verdict"] == "changed"


async def test_the_ledger_page_shows_the_head_and_the_check(env: Env) -> None:
    password = "correct horse battery"
    env.state.web.set_password("alice", password)
    await env.state.record_provision("inst1", "h1", ("pv",), NOW - 3600, NOW, PV, ("sps-2.2.4",))
    r = await env.client.post(
        "/login", data={"principal": "alice", "password": password}, allow_redirects=False
    )
    assert r.status == 303
    page = await (await env.client.get("/ledger")).text()
    m = re.search(r'<code id="ledger-head" class="hash">(\d+:[0-9a-f]{64})</code>', page)
    assert m is not None and m.group(1).startswith("1:")
    page = await (await env.client.get("/ledger", params={"household": "h1", "kept": m.group(1)})).text()
    assert 'id="kept-verdict">Intact' in page
    wrong = "1:" + "0" * 64
    page = await (await env.client.get("/ledger", params={"household": "h1", "kept": wrong})).text()
    assert 'id="kept-verdict">Changed' in page


def test_a_wiped_ledger_with_its_anchors_removed_is_detected(access_db: AccessDb) -> None:
    """Every row and both anchors deleted: the file then looks like a ledger nobody ever wrote, which
    needs no key to fake.  The key file beside it was made when the ledger was sealed, so a ledger
    with a key and no checkpoint had its anchors removed."""
    path = access_db
    _fill(path).close()
    _rewrite(path, [], plain_hash, anchors=False)
    result = Ledger(path).verify()
    assert not result.ok and "checkpoint" in (result.problem or ""), result
    code, out = _cli("verify", "--db", str(path))
    assert code == 1 and "checkpoint" in out, out


def test_a_new_ledger_without_a_key_still_verifies(access_db: AccessDb) -> None:
    assert Ledger(access_db).verify().ok


async def test_the_head_of_a_household_with_no_records_yet_stands(env: Env) -> None:
    """Before any provision the page and the API show ``0:<64 zeros>``; kept then, it must read intact
    later (records added since do not change an empty beginning), not as a rewrite."""
    url = "/api/v1/households/h1/ledger"
    empty = (await (await env.client.get(url, headers=env.auth("alice"))).json())["head"]
    assert empty["text"] == f"0:{GENESIS}"
    r = await env.client.get(url, params={"kept": empty["text"]}, headers=env.auth("alice"))
    assert (await r.json())["kept"]["verdict"] == "intact"
    await env.state.record_provision("inst1", "h1", ("pv",), NOW - 3600, NOW, PV, ("sps-2.2.4",))
    r = await env.client.get(url, params={"kept": empty["text"]}, headers=env.auth("alice"))
    assert (await r.json())["kept"]["verdict"] == "intact"
    r = await env.client.get(url, params={"kept": f"0:{'1' * 64}"}, headers=env.auth("alice"))
    assert (await r.json())["kept"]["verdict"] == "changed"
