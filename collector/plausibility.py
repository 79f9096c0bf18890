"""Values a device cannot have meant: refused with a reason, before they become readings.

A frame can be perfectly well formed and still say something impossible: a meter whose clock was never
set stamps its half-hourly record years in the past; a register with a wild scale factor reads as a
household drawing a gigawatt.  Two bounds catch them:

- **Time.** A value the device stamped with its own clock (the smart meter's fixed-time record, the
  latest :00/:30 of its clock) must lie between ``window`` before the collector's clock and ``skew``
  after it.  Outside that, the device's clock is wrong, and the value would be filed at a moment it
  does not belong to (a counter even out of order).
- **Magnitude.** A number must lie within its field's physical range (``seeds.vocabulary.FIELDS``), and a
  field the device has a rating for (its nameplate: SunSpec 120 ``WRtg``, 121 ``WMax``, 802
  ``WChaRteMax``/``WDisChaRteMax``, 124 ``WChaMax``; ECHONET Lite rated outputs and maximum charge and
  discharge powers) must not exceed ``RATING_MARGIN`` times that rating in magnitude.  The margin is
  generous on purpose: inverters briefly exceed their continuous rating, and a refusal must mean
  "cannot be true", never "unusual".

Decision: such a value is **refused**, not stored with a mark.  A marked value still lands in every
sum, chart and export that does not look at the mark; a refused one costs only that field (the rest of
the reading is kept, its quality "partial").  Every refusal is counted by kind (``Collector.stats()``
under ``implausible``), logged, and shown in the device's health (reason ``implausible`` with what was
refused and why), so a wrong clock or a broken register is visible to whoever maintains the device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from collector.reading import FieldValue
from seeds.vocabulary import FIELD_SPECS

RATING_MARGIN = 1.5
FIXED_TIME_WINDOW = timedelta(minutes=30)  # the meter's record is at most one half hour old


@dataclass(frozen=True, slots=True)
class Refusal:
    """One value refused: the field, what the device said, the kind (``range``, ``rating``,
    ``clock``) and the reason in words."""

    field: str
    value: FieldValue | datetime
    kind: str
    why: str


_NUMBER = (int, float)  # isinstance with a tuple: a ``int | float`` union is checked slower (3.11)
# numeric fields: name -> (low, high); checked on every reading, so looked up once here
_BOUNDS: dict[str, tuple[float, float]] = {
    s.name: (s.low, s.high) for s in FIELD_SPECS.values() if s.type == "float"
}


def check_fields(
    fields: dict[str, FieldValue], ratings: Mapping[str, float]
) -> tuple[dict[str, FieldValue], list[Refusal]]:
    """The fields that may be true (``fields`` itself when all may: the common case costs no copy),
    and the refusals of the others."""
    refused: list[Refusal] = []
    for name, value in fields.items():
        bounds = _BOUNDS.get(name)
        if bounds is None or value.__class__ is bool or not isinstance(value, _NUMBER):
            continue
        low, high = bounds
        rating = ratings.get(name)
        if not low <= value <= high or (rating and abs(value) > RATING_MARGIN * rating):  # NaN fails too
            refused.append(_refusal(name, float(value), rating))
    if not refused:
        return fields, refused
    wrong = {r.field for r in refused}
    return {k: v for k, v in fields.items() if k not in wrong}, refused


def _refusal(name: str, number: float, rating: float | None) -> Refusal:
    spec = FIELD_SPECS[name]
    if not math.isfinite(number) or not spec.low <= number <= spec.high:
        why = f"{name} {number:g} {spec.unit} outside its physical range {spec.low:g}..{spec.high:g}"
        return Refusal(name, number, "range", why)
    why = f"{name} {number:g} {spec.unit} beyond {RATING_MARGIN:g} x the device's rating {rating:g}"
    return Refusal(name, number, "rating", why)


def check_stamp(
    ts: datetime, now: datetime, skew: timedelta, window: timedelta = FIXED_TIME_WINDOW
) -> str | None:
    """Why a device's own timestamp cannot be right (None: it can)."""
    if ts > now + skew:
        return f"stamped {ts.isoformat()}, {_span(ts - now)} ahead of the collector's clock"
    if ts < now - window - skew:
        return f"stamped {ts.isoformat()}, {_span(now - ts)} behind the collector's clock"
    return None


def _span(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def describe(refused: list[Refusal]) -> str:
    """The health message of a poll that refused values."""
    return "refused " + "; ".join(r.why for r in refused)
