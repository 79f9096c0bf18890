"""Reject what cannot be true before it reaches a store, and count every rejection.

Names, types, plausible ranges and which counters may wrap come from the one field table
(``seeds.vocabulary.FIELDS``); this module only adds what depends on the category and the device.

A bad field costs only that field: the rest of the reading is kept, because one garbled register
should not erase a good power value.  A reading is refused whole only when what identifies it (ids,
category, timestamp) is unusable.  Every drop is counted by reason so /metrics shows it; nothing is
discarded silently.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Final, get_args

from collector.reading import Reading, Source
from pipeline.errors import PipelineError
from pipeline.points import Point, PointValue
from pipeline.query import datetime_to_ns, valid_id
from seeds.vocabulary import (
    BOOL_FIELDS,
    FIELD_SPECS,
    RAW_FIELDS,
    RAW_PREFIX,
    STORED_CATEGORIES,
    WRAPPING_FIELDS,
)

EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)
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


@dataclass
class ValidationStats:
    """Counters for /metrics: whole readings rejected and single fields dropped, by reason."""

    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    dropped_fields: Counter[str] = field(default_factory=Counter)

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

    ``accept`` is the writer's entry point: it runs per reading at fleet rates, so the common case
    (a known category in UTC, numbers within their range, flags) is checked with dictionary look-ups and
    integer comparisons, and anything else takes ``_field_problem``, which names the reason."""

    max_future_skew: timedelta = timedelta(minutes=5)
    pv_negative_tolerance_w: float = 50.0
    stats: ValidationStats = field(default_factory=ValidationStats)
    # Ids already seen to be well-formed: the regex is the costliest check and ids repeat forever.
    _good_ids: set[tuple[str, str]] = field(default_factory=set, repr=False)
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
            self.stats.rejected[exc.reason] += 1
            raise
        self.stats.accepted += 1
        return cleaned

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
                self.stats.rejected[exc.reason] += 1
                refused.append((i, exc.reason))
        self.stats.accepted += len(good)
        return good, refused

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
                self.stats.dropped_fields[reason] += 1
        if not good:
            raise RejectedReading("no_valid_fields", f"{p.household}/{p.device} at {ts_ns}")
        return p if len(good) == len(p.fields) else replace(p, fields=good)

    def _check_ids(self, household: str, device: str) -> None:
        ids = (household, device)
        if ids not in self._good_ids:
            if not valid_id(household):
                raise RejectedReading("bad_household_id", repr(household))
            if not valid_id(device):
                raise RejectedReading("bad_device_id", repr(device))
            if len(self._good_ids) > 100_000:
                self._good_ids.clear()
            self._good_ids.add(ids)

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
            kind = type(value)
            if kind is float or kind is int:
                bounds = limits.get(name)
                if bounds is not None and bounds[0] <= value <= bounds[1]:  # type: ignore[operator]
                    # (a number: the type was just checked; NaN fails the comparison)
                    continue
            elif kind is bool and name in BOOL_FIELDS:
                continue
            reason = self._field_problem(category, name, value)
            if reason is not None:
                self.stats.dropped_fields[reason] += 1
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
                    self.stats.dropped_fields["bad_counter_wrap"] += 1
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
