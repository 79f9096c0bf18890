"""Expected PV yield for the installer's view, from sun position alone (no weather).

``devices`` is out of bounds for ``access``, so this is a small, self-contained estimate: the sun's
elevation from the usual declination / equation-of-time approximations, and a module's output taken
as proportional to ``sin(elevation) ** 1.2`` (air mass and incidence losses together, roughly).  It
is a ceiling to compare a day's yield against, and says so in the view: a cloudy day reads low.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

TOKYO_LAT, TOKYO_LON = 35.68, 139.77
# A clear noon in Tokyo gives about this fraction of nameplate power after inverter and heat losses.
PEAK_FRACTION = 0.8


def sun_elevation_deg(at: datetime, lat: float = TOKYO_LAT, lon: float = TOKYO_LON) -> float:
    t = at.astimezone(UTC)
    day = t.timetuple().tm_yday
    gamma = 2 * math.pi / 365 * (day - 1 + (t.hour - 12) / 24)
    decl = (
        0.006918
        - 0.399912 * math.cos(gamma)
        + 0.070257 * math.sin(gamma)
        - 0.006758 * math.cos(2 * gamma)
        + 0.000907 * math.sin(2 * gamma)
    )
    eot_min = 229.18 * (
        0.000075
        + 0.001868 * math.cos(gamma)
        - 0.032077 * math.sin(gamma)
        - 0.014615 * math.cos(2 * gamma)
        - 0.040849 * math.sin(2 * gamma)
    )
    minutes = t.hour * 60 + t.minute + t.second / 60
    solar_time = minutes + eot_min + 4 * lon
    hour_angle = math.radians(solar_time / 4 - 180)
    phi = math.radians(lat)
    sin_el = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour_angle)
    return math.degrees(math.asin(max(-1.0, min(1.0, sin_el))))


def clear_sky_fraction(at: datetime) -> float:
    el = sun_elevation_deg(at)
    return 0.0 if el <= 0 else PEAK_FRACTION * math.sin(math.radians(el)) ** 1.2


def expected_wh(
    capacity_w: float, start: datetime, stop: datetime, step: timedelta = timedelta(minutes=10)
) -> float:
    """Clear-sky energy of a ``capacity_w`` array between two instants (midpoint rule)."""
    total = 0.0
    t = start
    while t < stop:
        dt = min(step, stop - t)
        total += capacity_w * clear_sky_fraction(t + dt / 2) * dt.total_seconds() / 3600
        t += dt
    return total
