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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Final

from collector.reading import FieldValue, Reading
from pipeline.errors import PipelineError
from pipeline.query import valid_id
from seeds.vocabulary import FIELD_SPECS, STORED_CATEGORIES, WRAPPING_FIELDS

EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)

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
    tolerates inverters that report their own night-time draw as a small negative output."""

    max_future_skew: timedelta = timedelta(minutes=5)
    pv_negative_tolerance_w: float = 50.0
    stats: ValidationStats = field(default_factory=ValidationStats)
    # Ids already seen to be well-formed: the regex is the costliest check and ids repeat forever.
    _good_ids: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def check(self, reading: Reading, now: datetime | None = None) -> Reading:
        """Return the reading with only valid fields, or raise ``RejectedReading`` (already counted)."""
        try:
            cleaned = self._check(reading, now or datetime.now(UTC))
        except RejectedReading as exc:
            self.stats.rejected[exc.reason] += 1
            raise
        self.stats.accepted += 1
        return cleaned

    def _check(self, r: Reading, now: datetime) -> Reading:
        ids = (r.household, r.device)
        if ids not in self._good_ids:
            if not valid_id(r.household):
                raise RejectedReading("bad_household_id", repr(r.household))
            if not valid_id(r.device):
                raise RejectedReading("bad_device_id", repr(r.device))
            if len(self._good_ids) > 100_000:
                self._good_ids.clear()
            self._good_ids.add(ids)
        if r.category not in STORED_CATEGORIES:
            raise RejectedReading("unknown_category", repr(r.category))
        offset = r.ts_utc.utcoffset()
        if offset is None or offset != timedelta(0):
            raise RejectedReading("non_utc_timestamp", r.ts_utc.isoformat())
        if r.ts_utc < EARLIEST:
            raise RejectedReading("timestamp_too_old", r.ts_utc.isoformat())
        if r.ts_utc > now + self.max_future_skew:
            raise RejectedReading("timestamp_in_future", r.ts_utc.isoformat())
        good: dict[str, FieldValue] = {}
        for name, value in r.fields.items():
            reason = self._field_problem(r.category, name, value)
            if reason is None:
                good[name] = value
            else:
                self.stats.dropped_fields[reason] += 1
        wraps: dict[str, float] = {}
        for name, modulus in r.counter_wrap.items():
            if (
                name in WRAPPING_FIELDS
                and isinstance(modulus, int | float)
                and not isinstance(modulus, bool)
                and math.isfinite(modulus)
                and modulus > 0
            ):
                wraps[name] = float(modulus)
            else:
                self.stats.dropped_fields["bad_counter_wrap"] += 1
        if not good:
            raise RejectedReading("no_valid_fields", f"{r.household}/{r.device} at {r.ts_utc.isoformat()}")
        if good == r.fields and wraps == r.counter_wrap:
            return r
        return replace(r, fields=good, counter_wrap=wraps)

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
        low, high = spec.low, spec.high
        if name == "power_w" and category in _NON_NEGATIVE_POWER:
            low = -self.pv_negative_tolerance_w if category == "pv" else 0.0
        if not low <= number <= high:
            return "out_of_range"
        return None
