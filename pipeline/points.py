"""The unit a store writes: one series at one instant.

A ``Point`` is deliberately store-neutral (no line protocol, no SQL) so the InfluxDB store and the
embedded SQLite store receive exactly the same thing and can be held to the same results.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PointValue = float | int | bool | str


@dataclass(frozen=True, slots=True)
class Point:
    """``measurement`` is the series category; the identity of a point is
    ``(measurement, household, device, ts_ns)`` -- writing it again overwrites, so replays never
    duplicate.  ``source`` is a tag kept for diagnosis, not part of the identity."""

    measurement: str
    household: str
    device: str
    source: str
    ts_ns: int
    fields: Mapping[str, PointValue]

    @property
    def key(self) -> tuple[str, str, str, int]:
        """Identity used for de-duplication across stores and the spool."""
        return (self.measurement, self.household, self.device, self.ts_ns)
