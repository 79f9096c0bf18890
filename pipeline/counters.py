"""Turn raw meter counters into monotonic totals per (household, device, field).

Meters wrap (an ECHONET meter with 6 significant digits at 0.1 kWh rolls over at 99999.9 kWh) and
get replaced (the new one starts near zero).  Both look like a drop; they differ in what the energy
in between was.  A drop is a wrap when the device told us its modulus (``Reading.counter_wrap``) and
the implied consumption across the wrap is small against that modulus; any other drop is a reset:
a new segment starts and the total carries on from the last total with no jump (the energy used
between the last old-meter reading and the first new-meter reading is unknown, so it is not
invented).  ``raw_<field>`` keeps the meter's own value for diagnosis.

State must outlive the process, otherwise a restart would forget the offsets and the total would
fall back to the raw value.  ``CounterStateFile`` keeps it in a small SQLite file; the writer saves
it before a batch computed from it is written (see ``pipeline.writer``), so a crash can only leave
state that is *ahead* of the stored points, which still yields monotonic totals.
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from collector.reading import COUNTER_FIELDS, FieldValue, Reading

SeriesKey = tuple[str, str, str]  # household, device, field

_EPS: Final = 1e-9
_NUMBER: Final = (int, float)
_RAW_NAME: Final = {name: f"raw_{name}" for name in COUNTER_FIELDS}


@dataclass(slots=True)
class SeriesState:
    """``total = raw + offset`` within a segment; ``offset`` grows by the modulus on each wrap and is
    re-based on each reset."""

    last_raw: float
    offset: float
    last_ts_ns: int
    segment: int = 0

    @property
    def last_total(self) -> float:
        return self.last_raw + self.offset


@dataclass
class CounterTracker:
    """``max_wrap_fraction``: a drop counts as a wrap only if the consumption it implies
    (``modulus - last + new``) is below this fraction of the modulus; a meter that really used a
    tenth of its whole range between two polls is far more likely to have been replaced."""

    max_wrap_fraction: float = 0.1
    states: dict[SeriesKey, SeriesState] = field(default_factory=dict)
    stats: Counter[str] = field(default_factory=Counter)
    dirty: set[SeriesKey] = field(default_factory=set)

    def apply(self, reading: Reading, ts_ns: int) -> dict[str, FieldValue]:
        """Fields of ``reading`` with each counter replaced by its monotonic total (plus ``raw_*``).

        A counter older than the series' last sample cannot be placed (its total would need history
        we no longer have) and is dropped and counted; the same sample again gives the same total.
        A reading without counters gets its own ``fields`` back (not a copy: do not change it).

        Runs for every reading with counters at fleet rates, so the common case (a known series,
        a later sample, no drop) is handled inline; anything else goes through ``_total``."""
        fields = reading.fields
        if COUNTER_FIELDS.isdisjoint(fields):
            return fields
        out: dict[str, FieldValue] = {}
        states, dirty, raw_names = self.states, self.dirty, _RAW_NAME
        household, device = reading.household, reading.device
        for name, value in fields.items():
            raw_name = raw_names.get(name)
            kind = type(value)
            if raw_name is None or (
                kind is not float and kind is not int and (kind is bool or not isinstance(value, _NUMBER))
            ):
                out[name] = value
                continue
            raw = float(value)
            key = (household, device, name)
            state = states.get(key)
            if state is not None and ts_ns > state.last_ts_ns and raw + _EPS >= state.last_raw:
                state.last_raw = raw
                state.last_ts_ns = ts_ns
                dirty.add(key)
                out[name] = raw + state.offset
                out[raw_name] = raw
                continue
            total = self._total(key, raw, ts_ns, reading.counter_wrap.get(name))
            if total is not None:
                out[name] = total
                out[raw_name] = raw
        return out

    def _total(self, key: SeriesKey, raw: float, ts_ns: int, modulus: float | None) -> float | None:
        state = self.states.get(key)
        if state is None:
            self.states[key] = SeriesState(last_raw=raw, offset=0.0, last_ts_ns=ts_ns)
            self.dirty.add(key)
            self.stats["series_started"] += 1
            return raw
        if ts_ns <= state.last_ts_ns:
            if ts_ns == state.last_ts_ns and abs(raw - state.last_raw) <= _EPS:
                return state.last_total
            self.stats["out_of_order"] += 1
            return None
        if raw + _EPS < state.last_raw:
            wrapped = modulus is not None and 0.0 <= modulus - state.last_raw + raw < (
                modulus * self.max_wrap_fraction
            )
            if wrapped and modulus is not None:
                state.offset += modulus
                self.stats["wraps"] += 1
            else:
                state.offset = state.last_total - raw
                state.segment += 1
                self.stats["resets"] += 1
        state.last_raw = raw
        state.last_ts_ns = ts_ns
        self.dirty.add(key)
        return state.last_total

    def take_dirty(self) -> dict[SeriesKey, SeriesState]:
        """Snapshot of the series changed since the last call (for persisting)."""
        snap = {
            k: SeriesState(s.last_raw, s.offset, s.last_ts_ns, s.segment)
            for k in self.dirty
            if (s := self.states.get(k)) is not None
        }
        self.dirty.clear()
        return snap


_STATE_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS counter_state (household TEXT NOT NULL, device TEXT NOT NULL, "
    "field TEXT NOT NULL, last_raw REAL NOT NULL, offset REAL NOT NULL, last_ts_ns INTEGER NOT NULL, "
    "segment INTEGER NOT NULL, PRIMARY KEY (household, device, field)) WITHOUT ROWID"
)


class CounterStateFile:
    """Durable per-series counter state in its own small SQLite file (synchronous=FULL: it is tiny,
    and losing it would put a spike into every counter after a power cut)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(_STATE_SCHEMA)

    def load(self) -> dict[SeriesKey, SeriesState]:
        rows = self._conn.execute(
            "SELECT household, device, field, last_raw, offset, last_ts_ns, segment FROM counter_state"
        ).fetchall()
        return {(h, d, f): SeriesState(raw, off, ts, seg) for h, d, f, raw, off, ts, seg in rows}

    def save(self, changed: dict[SeriesKey, SeriesState]) -> None:
        if not changed:
            return
        rows = [(h, d, f, s.last_raw, s.offset, s.last_ts_ns, s.segment) for (h, d, f), s in changed.items()]
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(
                "INSERT INTO counter_state (household, device, field, last_raw, offset, last_ts_ns, segment) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (household, device, field) DO UPDATE SET "
                "last_raw = excluded.last_raw, offset = excluded.offset, "
                "last_ts_ns = excluded.last_ts_ns, segment = excluded.segment",
                rows,
            )
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()
