"""Reject what cannot be true before it reaches a store, and count every rejection.

Names, types, plausible ranges and which counters may wrap come from the one field table
(``seeds.vocabulary.FIELDS``); this module only adds what depends on the category and the device.

A bad field costs only that field: the rest of the reading is kept, because one garbled register
should not erase a good power value.  A reading is refused whole only when what identifies it (ids,
category, timestamp) is unusable.  Every drop is counted by reason so /metrics shows it, and logged
(``pipeline.losses.Losses``: the first of each reason at once, then a tally per minute, so a device
sending garbage all day costs a few log lines, not one per reading); nothing is discarded silently.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, get_args

from collector.reading import Reading, Source
from pipeline.columns import DEVICE, HOUSEHOLD, SOURCE, TS, VALUES, ColumnBatch
from pipeline.errors import PipelineError
from pipeline.losses import Losses
from pipeline.points import Point, PointValue
from pipeline.query import datetime_to_ns, valid_id
from seeds.vocabulary import (
    BOOL_FIELDS,
    COUNTER_FIELDS,
    FIELD_SPECS,
    RAW_FIELDS,
    RAW_PREFIX,
    STORED_CATEGORIES,
    WRAPPING_FIELDS,
)

EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
EARLIEST_NS: Final = datetime_to_ns(EARLIEST)
_ZERO: Final = timedelta(0)
SOURCES: Final = frozenset(get_args(Source))

# Categories whose power can only flow one way (generation, or consumption for meters of media).
_NON_NEGATIVE_POWER: Final = frozenset({"pv", "external_generation", "water", "gas"})
_MAX_TEXT: Final = 64


class RejectedReading(PipelineError, ValueError):
    """Raised by ``Validator.check`` when a whole reading is unusable; ``reason`` is the counted key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


log = logging.getLogger(__name__)
_MAX_DETAIL: Final = 200


def _said(household: object, device: object, what: str) -> str:
    """A log line's detail: the ids quoted (whatever a device or gateway sent, a newline included,
    stays on one line) and the whole cut to ``_MAX_DETAIL`` characters."""
    text = f"{household!r}/{device!r}: {what}"
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


@dataclass
class ValidationStats:
    """Counters for /metrics: whole readings rejected and single fields dropped, by reason; ``refuse``
    and ``drop_field`` count and log each one."""

    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    dropped_fields: Counter[str] = field(default_factory=Counter)
    _refusals: Losses = field(
        default_factory=lambda: Losses(log, what="readings refused", level=logging.WARNING),
        repr=False,
        compare=False,
    )
    _drops: Losses = field(
        default_factory=lambda: Losses(log, what="fields dropped", level=logging.WARNING),
        repr=False,
        compare=False,
    )

    def refuse(self, reason: str, detail: str) -> None:
        self.rejected[reason] += 1
        self._refusals.add(reason, 1, detail)

    def drop_field(self, reason: str, detail: str) -> None:
        self.dropped_fields[reason] += 1
        self._drops.add(reason, 1, detail)

    def flush_log(self) -> None:
        """Log the tallies since each reason's last line (at close, so the log's count is whole)."""
        self._refusals.flush()
        self._drops.flush()

    def as_dict(self) -> dict[str, object]:
        return {
            "accepted": self.accepted,
            "rejected": dict(self.rejected),
            "dropped_fields": dict(self.dropped_fields),
        }


@dataclass
class Validator:
    """``max_future_skew`` tolerates device clocks running a little ahead; ``pv_negative_tolerance_w``
    tolerates inverters that report their own night-time draw as a small negative output.

    ``accept_into`` is the writer's entry point: it runs per reading at fleet rates, so the common case
    (a known category in UTC, numbers within their range, flags) is checked inline with dictionary
    look-ups and comparisons, and anything else takes ``accept``, where ``_field_problem`` names the
    reason."""

    max_future_skew: timedelta = timedelta(minutes=5)
    pv_negative_tolerance_w: float = 50.0
    stats: ValidationStats = field(default_factory=ValidationStats)
    # Ids already seen to be well-formed: the regex is the costliest check and ids repeat forever.  One
    # set of strings for households and devices alike (one rule for both): two look-ups of a string's
    # cached hash per reading, where a (household, device) tuple was made and hashed for each.
    _good_ids: set[str] = field(default_factory=set, repr=False)
    # category -> numeric field -> (low, high): the plausible range there (see ``_field_problem``)
    _limits: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict, repr=False)
    _skew_ns: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self._skew_ns = self.max_future_skew // timedelta(microseconds=1) * 1000
        for category in STORED_CATEGORIES:
            limits = self._limits[category] = {}
            for name, spec in FIELD_SPECS.items():
                # Derived fields are the pipeline's own (``pipeline.negawatt``): not on the fast path, so
                # ``_field_problem`` drops them from a device's reading, counted.
                if spec.type == "float" and not spec.derived:
                    limits[name] = (self._low(category, name, spec.low), spec.high)

    def _low(self, category: str, name: str, low: float) -> float:
        if name == "power_w" and category in _NON_NEGATIVE_POWER:
            return -self.pv_negative_tolerance_w if category == "pv" else 0.0
        return low

    def check(self, reading: Reading, now: datetime | None = None) -> Reading:
        """Return the reading with only valid fields, or raise ``RejectedReading`` (already counted)."""
        return self.accept(reading, datetime_to_ns(now or datetime.now(UTC)))[0]

    def accept(self, reading: Reading, now_ns: int) -> tuple[Reading, int]:
        """``check`` for a caller that also wants the timestamp in nanoseconds (and has ``now`` so)."""
        try:
            cleaned = self._check(reading, now_ns)
        except RejectedReading as exc:
            self.stats.refuse(exc.reason, _said(reading.household, reading.device, exc.detail))
            raise
        self.stats.accepted += 1
        return cleaned

    def accept_into(
        self,
        readings: Sequence[Reading],
        now_ns: int,
        totals: Callable[[Reading, int], Mapping[str, PointValue]],
        add: Callable[[str, str, str, str, int, Mapping[str, PointValue]], None],
    ) -> list[tuple[int, str]]:
        """The writer's intake of a run of readings: each accepted reading's fields, with its counters
        made totals by ``totals`` (``CounterTracker.apply``), are handed to ``add`` (the batch's
        ``ColumnBatch.add``); returns (index, reason) of each reading refused.

        One loop for the whole run, because it is the pipeline's hottest code: a reading that passes
        whole (the rule: known ids, UTC, numbers within range, flags) is checked inline here with
        look-ups and comparisons only; any other goes through ``accept``, which says what is wrong and
        counts it, so the result is the same as ``accept`` reading by reading."""
        limits_of, good_ids, flags = self._limits, self._good_ids, BOOL_FIELDS
        counter_free = COUNTER_FIELDS.isdisjoint
        latest = now_ns + self._skew_ns
        refused: list[tuple[int, str]] = []
        passed = 0
        for i, r in enumerate(readings):
            # (Each attribute read once into a local: they are used again when the reading is added.)
            category, household, device, ts = r.category, r.household, r.device, r.ts_utc
            limits = limits_of.get(category)
            if (
                limits is not None
                and ts.tzinfo is UTC
                and ((household in good_ids and device in good_ids) or self._ids_pass(household, device))
                and not r.counter_wrap
            ):
                d = ts - _EPOCH  # (``datetime_to_ns`` inlined)
                ts_ns = (d.days * 86_400 + d.seconds) * 1_000_000_000 + d.microseconds * 1000
                given = r.fields
                if given and EARLIEST_NS <= ts_ns <= latest:
                    for name, value in given.items():
                        kind = type(value)
                        if kind is float or kind is int:
                            bounds = limits.get(name)
                            if bounds is not None and bounds[0] <= value <= bounds[1]:  # type: ignore[operator]
                                continue
                        elif kind is bool and name in flags:
                            continue
                        break  # anything else: ``accept`` decides
                    else:
                        # (``totals`` gives a reading without a counter its own fields: no call for it.)
                        fields = given if counter_free(given) else totals(r, ts_ns)
                        if fields:
                            passed += 1
                            add(category, household, device, r.source, ts_ns, fields)
                        else:
                            refused.append((i, self._nothing_left(r)))
                        continue
            try:
                clean, ts_ns = self.accept(r, now_ns)
            except RejectedReading as exc:
                refused.append((i, exc.reason))
                continue
            fields = totals(clean, ts_ns)
            if fields:
                add(clean.category, clean.household, clean.device, clean.source, ts_ns, fields)
            else:
                self.stats.accepted -= 1  # (``accept`` counted it; the counters left nothing)
                refused.append((i, self._nothing_left(clean)))
        self.stats.accepted += passed
        return refused

    def _nothing_left(self, r: Reading) -> str:
        """A reading the counter tracker left without a field (it refused every counter the reading
        had, and it had nothing else): refused whole, counted and logged like any other refusal."""
        self.stats.refuse(
            "no_valid_fields", _said(r.household, r.device, "no field left after the counter checks")
        )
        return "no_valid_fields"

    def check_points(
        self, points: Iterable[Point], now: datetime | None = None
    ) -> tuple[list[Point], list[tuple[int, str]]]:
        """The same checks for points that were readings elsewhere (a home gateway ran the counters
        and uploads points to the fleet's ingest): the points with only their valid fields, and
        (index, reason) of each point refused whole (already counted).  A ``raw_*`` field (the
        meter's own counter value) is held to the range of the counter it copies."""
        limit = datetime_to_ns(now or datetime.now(UTC)) + self._skew_ns
        good: list[Point] = []
        refused: list[tuple[int, str]] = []
        for i, point in enumerate(points):
            try:
                good.append(self._check_point(point, limit))
            except RejectedReading as exc:
                self.stats.refuse(exc.reason, _said(point.household, point.device, exc.detail))
                refused.append((i, exc.reason))
        self.stats.accepted += len(good)
        return good, refused

    def check_batch(
        self, batch: ColumnBatch, now: datetime | None = None
    ) -> tuple[ColumnBatch, list[tuple[int, str]]]:
        """``check_points`` on a batch kept in columns (an upload read by ``pipeline.lineparse``),
        without a ``Point`` per row: each shape's category and field names are looked up once and
        each row's ids, timestamp, source and values checked in place.  A batch that passes whole
        (the rule) is returned as it is; one with anything to drop or refuse goes through
        ``check_points``, which says what and counts it, so both give the same result."""
        limit = datetime_to_ns(now or datetime.now(UTC)) + self._skew_ns
        for shape in batch.shapes():
            if not self._shape_passes(shape.measurement, shape.names, shape.rows, limit):
                good, refused = self.check_points(batch, now)
                return ColumnBatch(good), refused
        self.stats.accepted += len(batch)
        return batch, []

    def _shape_passes(
        self, category: str, names: tuple[str, ...], rows: list[tuple[Any, ...]], limit_ns: int
    ) -> bool:
        """True when every row of one shape would pass ``_check_point`` unchanged (nothing counted)."""
        limits = self._limits.get(category)
        if limits is None or not names:
            return False
        counted = [name.removeprefix(RAW_PREFIX) if name in RAW_FIELDS else name for name in names]
        # Per field: the (low, high) of a number, or None for a flag or text (checked by ``_field_problem``).
        bounds = [limits.get(name) for name in counted]
        good_ids, sources = self._good_ids, SOURCES
        for row in rows:
            ts = row[TS]
            if (
                row[HOUSEHOLD] not in good_ids
                or row[DEVICE] not in good_ids
                or type(ts) is not int
                or not EARLIEST_NS <= ts <= limit_ns
                or row[SOURCE] not in sources
            ):
                try:
                    self._check_ids(row[HOUSEHOLD], row[DEVICE])
                except RejectedReading:
                    return False
                if type(ts) is not int or not EARLIEST_NS <= ts <= limit_ns or row[SOURCE] not in sources:
                    return False
            for name, value, bound in zip(counted, row[VALUES:], bounds, strict=True):
                kind = type(value)
                if bound is not None and (kind is float or kind is int) and bound[0] <= value <= bound[1]:
                    continue  # (a number within its range: NaN fails the comparison)
                if self._field_problem(category, name, value) is not None:
                    return False
        return True

    def _check_point(self, p: Point, limit_ns: int) -> Point:
        self._check_ids(p.household, p.device)
        if p.measurement not in self._limits:
            raise RejectedReading("unknown_category", repr(p.measurement))
        ts_ns = p.ts_ns
        if type(ts_ns) is not int:
            raise RejectedReading("bad_timestamp", repr(ts_ns))
        if ts_ns < EARLIEST_NS:
            raise RejectedReading("timestamp_too_old", str(ts_ns))
        if ts_ns > limit_ns:
            raise RejectedReading("timestamp_in_future", str(ts_ns))
        if p.source not in SOURCES:
            raise RejectedReading("unknown_source", repr(p.source))
        good: dict[str, PointValue] = {}
        for name, value in p.fields.items():
            counted = name.removeprefix(RAW_PREFIX) if name in RAW_FIELDS else name
            reason = self._field_problem(p.measurement, counted, value)
            if reason is None:
                good[name] = value
            else:
                self.stats.drop_field(reason, _said(p.household, p.device, f"{name!r}: {value!r}"))
        if not good:
            raise RejectedReading("no_valid_fields", f"{p.household}/{p.device} at {ts_ns}")
        return p if len(good) == len(p.fields) else replace(p, fields=good)

    def _ids_pass(self, household: str, device: str) -> bool:
        """True when the ids of a reading seen for the first time are well-formed (they are then
        known); False leaves the reading to ``accept``, which refuses and counts it.  A new series
        so costs one check of its ids, not the slow path of every check."""
        try:
            self._check_ids(household, device)
        except RejectedReading:
            return False
        return True

    def _check_ids(self, household: str, device: str) -> None:
        good = self._good_ids
        for value, reason in ((household, "bad_household_id"), (device, "bad_device_id")):
            if value not in good:
                if not valid_id(value):
                    raise RejectedReading(reason, repr(value))
                if len(good) > 100_000:
                    good.clear()
                good.add(value)

    def _check(self, r: Reading, now_ns: int) -> tuple[Reading, int]:
        self._check_ids(r.household, r.device)
        category = r.category
        limits = self._limits.get(category)
        if limits is None:
            raise RejectedReading("unknown_category", repr(category))
        ts = r.ts_utc
        if ts.tzinfo is not UTC:
            offset = ts.utcoffset()
            if offset is None or offset != _ZERO:
                raise RejectedReading("non_utc_timestamp", ts.isoformat())
        ts_ns = datetime_to_ns(ts)
        if ts_ns < EARLIEST_NS:
            raise RejectedReading("timestamp_too_old", ts.isoformat())
        if ts_ns > now_ns + self._skew_ns:
            raise RejectedReading("timestamp_in_future", ts.isoformat())
        fields = r.fields
        bad: list[str] = []
        for name, value in fields.items():
            # (The writer's intake, ``accept_into``, checks the common fields inline; this is its
            # slow path, and ``check``'s.)
            reason = self._field_problem(category, name, value)
            if reason is not None:
                self.stats.drop_field(reason, _said(r.household, r.device, f"{name!r}: {value!r}"))
                bad.append(name)
        wraps = r.counter_wrap
        if wraps:
            kept: dict[str, float] = {}
            for name, modulus in wraps.items():
                if (
                    name in WRAPPING_FIELDS
                    and isinstance(modulus, int | float)
                    and not isinstance(modulus, bool)
                    and math.isfinite(modulus)
                    and modulus > 0
                ):
                    kept[name] = float(modulus)
                else:
                    self.stats.drop_field(
                        "bad_counter_wrap", _said(r.household, r.device, f"wrap of {name!r}: {modulus!r}")
                    )
        if len(bad) == len(fields):
            raise RejectedReading("no_valid_fields", f"{r.household}/{r.device} at {ts.isoformat()}")
        if not bad and (not wraps or kept == wraps):
            return r, ts_ns
        good = {k: v for k, v in fields.items() if k not in bad} if bad else fields
        return replace(r, fields=good, counter_wrap=kept if wraps else {}), ts_ns

    def _field_problem(self, category: str, name: str, value: object) -> str | None:
        spec = FIELD_SPECS.get(name)
        if spec is None:
            return "unknown_field"
        if spec.derived:  # the pipeline computes it (pipeline.negawatt); a device cannot report it
            return "derived_field"
        if spec.type == "bool":
            return None if isinstance(value, bool) else "bad_type"
        if spec.type == "text":
            if not isinstance(value, str) or not value.isprintable() or len(value) > _MAX_TEXT:
                return "bad_type"
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "bad_type"
        number = float(value)
        if not math.isfinite(number):
            return "not_finite"
        low, high = self._low(category, name, spec.low), spec.high
        if not low <= number <= high:
            return "out_of_range"
        return None
