"""The one record that crosses from collection into the pipeline.

A ``Reading`` is what a device said at one moment, already in the project's units, so the pipeline
never needs to know which protocol it came from.  Field names carry their unit (``power_w``,
``energy_wh_total``) because a bare number without a unit is the commonest way telemetry goes wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from seeds.vocabulary import COUNTER_FIELDS, FIELD_UNITS

Quality = Literal["ok", "partial", "stale", "suspect"]
Source = Literal["modbus", "echonet"]
FieldValue = float | int | bool | str

# The field names, their units and which are counters come from the one field table
# (``seeds.vocabulary.FIELDS``); re-exported here because every decoder speaks in them.
__all__ = ["COUNTER_FIELDS", "FIELD_UNITS", "FieldValue", "Quality", "Reading", "Source"]


@dataclass(frozen=True, slots=True)
class Reading:
    """One normalized observation of one device.

    ``ts_utc`` is the device's own timestamp where it gives one, else the poll time; it is always
    timezone-aware UTC.  ``counter_digits`` carries the meter's significant digits (ECHONET 0xD7) so
    the pipeline can tell a wrap from a meter replacement.  ``counter_wrap`` is the raw wrap modulus in
    the field's unit (``None`` when the device does not say).
    """

    household: str
    device: str
    category: str
    ts_utc: datetime
    fields: dict[str, FieldValue]
    quality: Quality = "ok"
    source: Source = "echonet"
    counter_wrap: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ts_utc.tzinfo is None or self.ts_utc.utcoffset() is None:
            raise ValueError(f"Reading.ts_utc must be timezone-aware UTC, got naive {self.ts_utc!r}")
