"""Simulated time shared by every emulated home of one run.

A fleet runs faster than real time (``speed``) so a demo shows a day of household life in minutes;
all homes read one ``SimClock`` so their readings line up on the same simulated instants.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from common import sun
from devices.errors import DeviceError


class SimulationError(DeviceError, ValueError):
    """Bad input to the household simulation (naive datetimes, impossible equipment, bad steps)."""


def require_utc(value: datetime, what: str) -> datetime:
    """``common.sun.require_utc`` (one rule for every instant), refusing as a ``SimulationError``."""
    try:
        return sun.require_utc(value, what)
    except sun.SunInputError as exc:
        raise SimulationError(str(exc)) from None


class SimClock:
    """Simulated UTC time: ``start`` at construction, then running ``speed`` times faster than the wall.

    Monotonic time drives it, so a wall-clock jump (NTP, suspend) never makes a home jump.
    """

    def __init__(
        self,
        start: datetime,
        speed: float = 1.0,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(speed, int | float) or not math.isfinite(speed) or speed <= 0:
            raise SimulationError(f"clock speed must be a positive finite number, got {speed!r}")
        self.start: datetime = require_utc(start, "SimClock start")
        self.speed: float = float(speed)
        self._monotonic = monotonic
        self._t0 = monotonic()

    def now(self) -> datetime:
        """Simulated UTC now."""
        return self.start + timedelta(seconds=(self._monotonic() - self._t0) * self.speed)
