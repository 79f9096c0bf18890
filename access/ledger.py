"""The provision ledger: a record of every provision of a household's data to a third party.

Japan's privacy law (APPI) asks a provider to keep records of provision to third parties, and the
Kaluza terms promise the person disclosure of those records.  The ledger must therefore survive an
insider with write access to the access database (a SQLite file, or PostgreSQL): each row stores
``sha256(previous hash + canonical JSON of the row)``, so an edit, a deletion or a reordering breaks
the chain at the first touched row, and :func:`Ledger.verify` says where.  A head row (count and last
hash, written in the same transaction) catches the one change a chain alone cannot see: rows dropped
from the end.  Triggers refuse UPDATE and DELETE (``access.db``'s ``append_only``), so only a
deliberate bypass (dropping the triggers, editing the file) can change history, and that is what the
chain detects.  Since rows can be recomputed by whoever writes the database, the chain is keyed and
anchored (``access.ledger_anchor`` says how and what each anchor catches).

:meth:`Ledger.record_many` writes several records in one transaction (one fsync), chained in the order
given: the API batches concurrent provisions this way (group commit) and the chain is the same as if
they had been written one by one.  The transaction is the ledger's write transaction
(``access.db.write_transaction``): on PostgreSQL it holds the ledger's advisory lock while it reads the
chain's last row and appends, so the batches of every replica join one chain, one after another.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, NamedTuple, cast

from access.clock import now, show, to_epoch
from access.db import AccessDb, Db, open_db, write_transaction
from access.keys import KeyFileError, key_file_for, load_key
from access.ledger_anchor import GENESIS, ChainKey, KeptHead, household_chain, plain_hash
from seeds.vocabulary import CATEGORIES, category_items, has_items

_SCHEMA = """
CREATE TABLE IF NOT EXISTS provision_ledger (
    seq INTEGER PRIMARY KEY,
    recipient TEXT NOT NULL, household TEXT NOT NULL, categories TEXT NOT NULL,
    period_start REAL NOT NULL, period_end REAL NOT NULL, purpose TEXT NOT NULL, clause_ids TEXT NOT NULL,
    at REAL NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS provision_ledger_head (
    id INTEGER PRIMARY KEY CHECK (id = 1), rows INTEGER NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS provision_ledger_anchor (
    kind TEXT PRIMARY KEY CHECK (kind IN ('checkpoint', 'head')), seq INTEGER NOT NULL, hash TEXT NOT NULL,
    mac TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS provision_ledger_by_household ON provision_ledger(household);
"""


class LedgerError(ValueError):
    """A provision record that cannot be written as given."""


class ProvisionRecord(NamedTuple):
    """One row of the ledger as written (a tuple: the API writes one for every third-party response)."""

    seq: int
    recipient: str
    household: str
    categories: tuple[str, ...]
    period_start: float
    period_end: float
    purpose: str
    clause_ids: tuple[str, ...]
    at: float
    prev_hash: str
    hash: str

    def describe(self) -> str:
        return (
            f"#{self.seq} {show(self.at)}: {', '.join(self.categories)} data of {self.household} "
            f"({show(self.period_start)} to {show(self.period_end)}) provided to {self.recipient} "
            f"for {self.purpose} under {', '.join(self.clause_ids)}"
        )


class CheckedEntry(NamedTuple):
    """A provision entry as written and hashed: categories sorted and unique, times as epoch seconds."""

    recipient: str
    household: str
    categories: tuple[str, ...]
    period_start: float
    period_end: float
    purpose: str
    clause_ids: tuple[str, ...]
    at: float


@dataclass(frozen=True)
class ProvisionEntry:
    """One provision to record, as the caller has it; :meth:`check` says whether it can be written."""

    recipient: str
    household: str
    categories: Iterable[str]
    period_start: datetime | float | str
    period_end: datetime | float | str
    purpose: str
    clause_ids: Iterable[str]
    at: datetime | float | str | None = None  # None: when it is written

    def __post_init__(self) -> None:
        # Iterables are read once here, so checking an entry twice sees the same values.
        object.__setattr__(self, "categories", tuple(self.categories))
        object.__setattr__(self, "clause_ids", tuple(self.clause_ids))

    def check(self) -> CheckedEntry:
        """The entry as it would be written, or :class:`LedgerError` saying why it cannot be."""
        categories = cast(tuple[str, ...], self.categories)  # both made tuples by __post_init__
        clauses = cast(tuple[str, ...], self.clause_ids)
        start, end = to_epoch(self.period_start), to_epoch(self.period_end)
        t = now() if self.at is None else to_epoch(self.at)
        return checked_entry(self.recipient, self.household, categories, start, end, self.purpose, clauses, t)


def checked_entry(
    recipient: str,
    household: str,
    categories: tuple[str, ...],
    period_start: float,
    period_end: float,
    purpose: str,
    clause_ids: tuple[str, ...],
    at: float,
) -> CheckedEntry:
    """An entry whose times are epoch seconds already, checked (:class:`LedgerError` saying why it
    cannot be written): the API records one per third-party response, with the same few category
    and clause lists again and again, so their check is remembered (``_checked_names``)."""
    cats = _checked_names(categories, clause_ids)
    if not recipient or not household or not purpose:
        raise LedgerError("recipient, household and purpose are required")
    if period_end < period_start:
        raise LedgerError("period_end is before period_start")
    return CheckedEntry(recipient, household, cats, period_start, period_end, purpose, clause_ids, at)


@functools.lru_cache(maxsize=1024)
def _checked_names(categories: tuple[str, ...], clause_ids: tuple[str, ...]) -> tuple[str, ...]:
    """The categories as written (sorted, each once) once both lists are found acceptable."""
    cats = tuple(sorted(set(categories)))
    if not cats:
        raise LedgerError("a provision record names at least one category")
    unknown = [c for c in cats if not _what_was_provided(c)]
    if unknown:
        raise LedgerError(f"unknown categories {unknown}")
    if not clause_ids:
        raise LedgerError("a provision record cites the clause that allowed it")
    return cats


def _what_was_provided(name: str) -> bool:
    """A category, or ``<category>.<item>`` for an item provided under a grant of items (a demand-
    response contractor's negawatt items: the record names them, not the whole category)."""
    if name in CATEGORIES:
        return True
    category, _, item = name.partition(".")
    return has_items(category) and item in category_items(category)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows: int
    first_bad_seq: int | None
    problem: str | None


def _canonical(
    seq: int,
    recipient: str,
    household: str,
    categories: Iterable[str],
    period_start: float,
    period_end: float,
    purpose: str,
    clause_ids: Iterable[str],
    at: float,
) -> str:
    """The row as hashed: the sequence number is included so a reorder or a gap is a hash mismatch too.

    The text is the JSON object of these nine fields with sorted keys, no spaces and no ASCII escaping
    (the times as the strings ``repr(float(t))``), the form every existing ledger was chained with.  It
    is assembled from a template because the API writes one row per third-party response: the JSON of
    recurring values (names, purposes, clause lists) is kept in ``_JSON_TEXT``."""
    return _CANONICAL_TEMPLATE % (
        repr(float(at)),
        _json_text(categories),
        _json_text(clause_ids),
        _json_text(household),
        repr(float(period_end)),
        repr(float(period_start)),
        _json_text(purpose),
        _json_text(recipient),
        _json_text(seq),
    )


# ``write_checked`` hashes ``_canonical(seq, *entry)`` and ``verify`` hashes ``_canonical(*record[:9])``:
# a record is the sequence number, the checked entry's fields in order, then the chain.
assert ProvisionRecord._fields[:9] == ("seq", *CheckedEntry._fields)

# Keys in sorted order.  A float's repr has only digits, '.', 'e', '+', '-', 'inf' or 'nan' in it,
# so quoting it needs no escaping.
_CANONICAL_TEMPLATE = (
    '{"at":"%s","categories":%s,"clause_ids":%s,"household":%s,"period_end":"%s",'
    '"period_start":"%s","purpose":%s,"recipient":%s,"seq":%s}'
)
_JSON_TEXT: dict[object, str] = {}
_JSON_TEXT_MAX = 4096


def _json_text(value: object) -> str:
    """Compact JSON of one canonical field (a sequence becomes an array).  Strings and tuples of
    strings are remembered; only they are ever stored, and nothing else compares equal to them, so a
    value an edit of the file put in a text column (a number, say) is always encoded afresh."""
    if type(value) is int:
        return str(value)
    try:
        text = _JSON_TEXT.get(value)
    except TypeError:  # unhashable (a list)
        text = None
    if text is not None:
        return text
    if type(value) is str or (type(value) is tuple and all(type(v) is str for v in value)):
        if len(_JSON_TEXT) >= _JSON_TEXT_MAX:
            _JSON_TEXT.clear()
        text = _JSON_TEXT[value] = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        return text
    if not isinstance(value, str | bytes | dict) and isinstance(value, Iterable):
        value = list(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# Rows go in by multi-row INSERTs of these sizes.  Each statement is one SQLite step, run with the GIL
# released: ``executemany`` would release and retake the GIL once per row, and each retake waits for
# the event loop's thread to let go of it.
_INSERT_SIZES = (64, 8, 1)
_INSERT_SQL = {
    n: "INSERT INTO provision_ledger VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * n)
    for n in _INSERT_SIZES
}


def _insert_rows(db: Db, rows: Sequence[tuple[object, ...]]) -> None:
    i = 0
    for n in _INSERT_SIZES:
        sql = _INSERT_SQL[n]
        while len(rows) - i >= n:
            db.execute(sql, [value for row in rows[i : i + n] for value in row])
            i += n


@dataclass(frozen=True)
class HouseholdHead:
    """One household's records with the running head of their chain (``access.ledger_anchor``)."""

    records: list[ProvisionRecord]
    chain: list[str]  # chain[i]: the head after records[i]

    @property
    def head(self) -> KeptHead:
        return KeptHead(len(self.chain), self.chain[-1] if self.chain else GENESIS)

    def verdict(self, kept: KeptHead) -> Literal["intact", "changed"]:
        """Whether a head the person kept still stands at its place: the comparison the ledger page
        and the API make."""
        return "intact" if kept.matches(self.chain) else "changed"


class Ledger:
    def __init__(self, where: AccessDb, key_file: Path | str | None = None, *, db: Db | None = None) -> None:
        """``key_file``: where the server key is (default ``access.keys.key_file_for(where)``); it is read
        when first needed, and made only while the ledger is not yet sealed (see ``seal``).  ``db``: a
        connection to ``where`` already open, to read inside its transaction (``hems access migrate``
        verifies what it copied before committing); closing the ledger closes it."""
        self.where = where
        self.key_file = Path(key_file) if key_file is not None else key_file_for(where)
        self._db = db or open_db(where, _SCHEMA, name="ledger", append_only=("provision_ledger",))
        self._key: ChainKey | None = None
        self._sealed_at: int | None = None  # the checkpoint's record, once seen: it never changes
        self.commits = 0  # write transactions committed through this object (one per record_many call)

    def close(self) -> None:
        self._db.close()

    def _chain_key(self, create: bool) -> ChainKey:
        if self._key is None:
            self._key = ChainKey(load_key(self.key_file, create=create))
        return self._key

    def _checkpoint(self) -> tuple[int, str, str] | None:
        row = self._db.execute(
            "SELECT seq, hash, mac FROM provision_ledger_anchor WHERE kind = 'checkpoint'"
        ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]), str(row[2]))

    def sealed(self) -> bool:
        return self._checkpoint() is not None

    def seal(self) -> int:
        """Start the keyed chain: check the rows written so far (a ledger from before keyed chains has
        them chained with plain SHA-256) and record a signed checkpoint at the last of them; returns
        its sequence number.  Sealing a sealed ledger does nothing; a ledger whose plain chain does
        not verify is not sealed (:class:`LedgerError`), since sealing would vouch for the tampering.
        ``hems serve`` seals at start and every write seals first.  A checkpoint signed with another key
        is refused too (:class:`LedgerError`): a replica given a key of its own would otherwise chain
        its records with it, and the chain would not verify with anybody's key."""
        with self._write():
            return self._seal_in_transaction()

    @contextmanager
    def _write(self) -> Iterator[Db]:
        """The ledger's write transaction; a seal it made is forgotten if it rolls back."""
        sealed_at = self._sealed_at
        try:
            with write_transaction(self._db) as db:
                yield db
        except BaseException:
            self._sealed_at = sealed_at
            raise

    def _seal_in_transaction(self) -> int:
        if self._sealed_at is not None:
            return self._sealed_at
        found = self._checkpoint()
        if found is not None:
            if not self._chain_key(create=False).anchor_ok("checkpoint", *found):
                raise LedgerError(
                    f"the ledger was sealed with another key than {self.key_file}: every process writing "
                    "to this access database must read the same key file (HEMS_KEY_FILE)"
                )
            self._sealed_at = found[0]
            return found[0]
        rows = self._rows()
        result = self._verify_rows(rows, None, None)
        if result is not None:
            raise LedgerError(
                f"the ledger cannot be sealed: record {result.first_bad_seq}: {result.problem} "
                "(see 'hems ledger verify')"
            )
        key = self._chain_key(create=True)
        seq, last = (rows[-1].seq, rows[-1].hash) if rows else (0, GENESIS)
        self._db.execute(
            "INSERT INTO provision_ledger_anchor VALUES ('checkpoint', ?, ?, ?), ('head', ?, ?, ?)",
            (
                seq,
                last,
                key.anchor_mac("checkpoint", seq, last),
                seq,
                last,
                key.anchor_mac("head", seq, last),
            ),
        )
        self._sealed_at = seq
        return seq

    def record(
        self,
        recipient: str,
        household: str,
        categories: Iterable[str],
        period_start: datetime | float | str,
        period_end: datetime | float | str,
        purpose: str,
        clause_ids: Iterable[str],
        at: datetime | float | str | None = None,
    ) -> ProvisionRecord:
        entry = ProvisionEntry(
            recipient, household, categories, period_start, period_end, purpose, clause_ids, at
        )
        return self.record_many([entry])[0]

    def record_many(self, entries: Iterable[ProvisionEntry]) -> list[ProvisionRecord]:
        """Write the entries in one transaction, chained in the order given, and return their records.

        Every entry is checked before anything is written: one bad entry raises its :class:`LedgerError`
        and none of them is recorded.  A failed write rolls back whole, so the ledger never holds part of
        a batch and the connection is ready for the next one.
        """
        return self.write_checked([e.check() for e in entries])

    def write_checked(self, checked: Sequence[CheckedEntry]) -> list[ProvisionRecord]:
        """``record_many`` for entries already checked (``ProvisionEntry.check``), e.g. by the API when
        they were queued, so a batch is not checked twice."""
        if not checked:
            return []
        with self._write() as db:
            self._seal_in_transaction()
            key = self._chain_key(create=False)
            last = db.execute("SELECT seq, hash FROM provision_ledger ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (1, GENESIS) if last is None else (last[0] + 1, last[1])
            out: list[ProvisionRecord] = []
            rows = []
            for c in checked:
                digest = key.row_hash(prev, _canonical(seq, *c))
                out.append(ProvisionRecord(seq, *c, prev_hash=prev, hash=digest))
                # The stored lists are the canonical JSON text (json.loads reads them back).
                rows.append(
                    (
                        seq,
                        c.recipient,
                        c.household,
                        _json_text(c.categories),
                        c.period_start,
                        c.period_end,
                        c.purpose,
                        _json_text(c.clause_ids),
                        c.at,
                        prev,
                        digest,
                    )
                )
                seq, prev = seq + 1, digest
            _insert_rows(db, rows)
            head_seq, head_hash = out[-1].seq, out[-1].hash
            db.execute(
                "INSERT INTO provision_ledger_head VALUES (1, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET rows = excluded.rows, hash = excluded.hash",
                (head_seq, head_hash),
            )
            db.execute(
                "UPDATE provision_ledger_anchor SET seq = ?, hash = ?, mac = ? WHERE kind = 'head'",
                (head_seq, head_hash, key.anchor_mac("head", head_seq, head_hash)),
            )
        self.commits += 1
        return out

    def _rows(self, where: str = "", args: tuple[str, ...] = ()) -> list[ProvisionRecord]:
        out = []
        for row in self._db.execute(f"SELECT * FROM provision_ledger {where} ORDER BY seq", args):
            seq, rec, hh, cats, ps, pe, pur, clauses, at, prev, digest = row
            out.append(
                ProvisionRecord(
                    seq,
                    rec,
                    hh,
                    tuple(json.loads(cats)),
                    ps,
                    pe,
                    pur,
                    tuple(json.loads(clauses)),
                    at,
                    prev,
                    digest,
                )
            )
        return out

    def for_household(self, household: str) -> list[ProvisionRecord]:
        """What the homeowner may see: every provision of their household's data."""
        return self._rows("WHERE household = ?", (household,))

    def household_head(self, household: str) -> HouseholdHead:
        """The household's records and the running head of their own chain: what the person keeps."""
        records = self.for_household(household)
        return HouseholdHead(records, household_chain(_canonical(*r[:9]) for r in records))

    def all(self) -> list[ProvisionRecord]:
        return self._rows()

    def verify(self) -> VerifyResult:
        """Walk the chain in storage order; the first row whose links or hash disagree is reported, then
        the anchors (``access.ledger_anchor``).  Needs the key file once the ledger is sealed."""
        rows = self._rows()
        checkpoint = self._checkpoint()
        if checkpoint is None:
            if rows:
                return VerifyResult(
                    False,
                    len(rows),
                    1,
                    "the ledger has no signed checkpoint: written before ledgers were keyed (run "
                    "'hems ledger seal') or its anchors were removed",
                )
            if self.key_file.exists():
                # The key is made only when a ledger is sealed, and sealing writes the checkpoint: an
                # empty ledger beside its key was sealed once, then emptied with its anchors.
                return VerifyResult(
                    False,
                    0,
                    None,
                    f"the ledger has no records and no signed checkpoint, but its key {self.key_file} "
                    "exists: its records and anchors were removed (for a new database, 'hems ledger seal')",
                )
            return VerifyResult(True, 0, None, None)
        try:
            key = self._chain_key(create=False)
        except KeyFileError as exc:
            return VerifyResult(False, len(rows), None, f"cannot check the keyed chain: {exc}")
        if not key.anchor_ok("checkpoint", *checkpoint):
            return VerifyResult(False, len(rows), None, "the ledger's checkpoint is not signed by this key")
        bad = self._verify_rows(rows, checkpoint, key)
        if bad is not None:
            return bad
        head = self._db.execute(
            "SELECT seq, hash, mac FROM provision_ledger_anchor WHERE kind = 'head'"
        ).fetchone()
        last = (rows[-1].seq, rows[-1].hash) if rows else (0, GENESIS)
        if head is None or not key.anchor_ok("head", int(head[0]), str(head[1]), str(head[2])):
            return VerifyResult(
                False, len(rows), len(rows) + 1, "the ledger's head is missing or not signed by this key"
            )
        if (int(head[0]), str(head[1])) != last:
            return VerifyResult(
                False,
                len(rows),
                len(rows) + 1,
                f"the ledger's signed head records {head[0]} rows; {len(rows)} remain",
            )
        return VerifyResult(True, len(rows), None, None)

    def _verify_rows(
        self, rows: list[ProvisionRecord], checkpoint: tuple[int, str, str] | None, key: ChainKey | None
    ) -> VerifyResult | None:
        """The first broken link, or None.  Rows up to the checkpoint (all rows when unsealed) are plain
        SHA-256 and must end at the checkpoint's hash; later rows are keyed."""
        plain_until = len(rows) if checkpoint is None else checkpoint[0]
        prev = GENESIS
        expected_seq = 1
        for r in rows:
            if r.seq != expected_seq:
                return VerifyResult(
                    False, len(rows), r.seq, f"row {r.seq} found where row {expected_seq} belongs"
                )
            if r.prev_hash != prev:
                return VerifyResult(
                    False, len(rows), r.seq, f"row {r.seq} does not link to the row before it"
                )
            canonical = _canonical(*r[:9])
            if key is None or r.seq <= plain_until:
                digest = plain_hash(prev, canonical)
            else:
                digest = key.row_hash(prev, canonical)
            if digest != r.hash:
                return VerifyResult(False, len(rows), r.seq, f"row {r.seq} was altered after it was written")
            if checkpoint is not None and r.seq == plain_until and r.hash != checkpoint[1]:
                return VerifyResult(
                    False, len(rows), r.seq, f"row {r.seq} is not the row the checkpoint sealed"
                )
            prev = r.hash
            expected_seq += 1
        if checkpoint is not None and len(rows) < plain_until:
            return VerifyResult(
                False,
                len(rows),
                len(rows) + 1,
                f"the checkpoint sealed {plain_until} rows; {len(rows)} remain",
            )
        head = self._db.execute("SELECT rows, hash FROM provision_ledger_head WHERE id = 1").fetchone()
        head_rows, head_hash = (0, GENESIS) if head is None else (int(head[0]), str(head[1]))
        if head_rows != len(rows) or head_hash != prev:
            return VerifyResult(
                False,
                len(rows),
                len(rows) + 1,
                f"the ledger head records {head_rows} rows; {len(rows)} remain",
            )
        return None

    def head(self) -> str:
        """The last hash: write it down elsewhere to anchor the chain against a rewrite of the whole file."""
        row = self._db.execute("SELECT hash FROM provision_ledger_head WHERE id = 1").fetchone()
        return GENESIS if row is None else str(row[0])


class LedgerWriter:
    """The ledger as the API uses it: group commit on the ledger's own thread, off the event loop.

    Each caller queues its checked entry and awaits its own future; one flusher task writes everything
    queued so far in one ledger transaction (one fsync) on the ledger's thread, while later arrivals
    queue for the next.  An entry the ledger would refuse fails in its own caller, before it joins a
    batch (``ProvisionEntry.check``).  A failed write fails every caller of that batch (none of it was
    recorded) and the next batch is tried afresh.  The ledger's one SQLite connection is only ever used
    from ``pool``'s one thread.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self.records_written = 0
        self.commits = 0  # batches written (``records_written / commits``: records per commit)
        self._queue: list[tuple[CheckedEntry, asyncio.Future[ProvisionRecord]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def record(self, entry: CheckedEntry) -> ProvisionRecord:
        """Record durably; the caller sends nothing until this returns."""
        loop = asyncio.get_running_loop()
        written: asyncio.Future[ProvisionRecord] = loop.create_future()
        self._queue.append((entry, written))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        return await written

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                entries = [entry for entry, _ in batch]
                try:
                    records = await loop.run_in_executor(self.pool, self.ledger.write_checked, entries)
                except Exception as exc:
                    for _, written in batch:
                        if not written.done():  # a caller that gave up is not waiting
                            written.set_exception(exc)
                    continue
                except BaseException:
                    for _, written in batch:
                        written.cancel()
                    raise
                self.records_written += len(records)
                self.commits += 1
                for (_, written), record in zip(batch, records, strict=True):
                    if not written.done():
                        written.set_result(record)
        finally:
            self._flusher = None
            # Entries are left only when this task was cancelled (the loop is closing): nobody waits forever.
            stranded, self._queue = self._queue, []
            for _, written in stranded:
                written.cancel()

    async def drain(self) -> None:
        """Wait until every queued record is written or has failed (shutdown, before the thread goes)."""
        while (flusher := self._flusher) is not None:
            await asyncio.wait({flusher})

    async def household_head(self, household: str) -> HouseholdHead:
        """Read on the ledger's own thread, like every other use of its connection."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self.ledger.household_head, household)

    async def close(self) -> None:
        await self.drain()
        self.pool.shutdown(wait=True)
