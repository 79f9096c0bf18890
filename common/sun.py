"""Where the sun is and how much a clear sky gives a panel, cheap enough to call every step of 1,000 homes.

One module for the emulator's household physics (``devices``) and the installer's expected-yield view
(``access``), which may not import each other: both read the same sun.

Everything that only changes from day to day (declination, equation of time, the products of the
site's latitude with them) is computed once per date and cached across homes; what is left per step is
one cosine, one power and a few multiplications.  Accuracy is that of the classic Fourier-series
approximations of the solar orbit (a minute or two in sunrise), which is far below what cloud
variability does to the output anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

TWO_PI = 2.0 * math.pi
DAY_S = 86400.0
# Share of the panels' nameplate power that reaches the AC side under full sun: wiring, inverter,
# soiling and mismatch losses of a typical residential system.
PERFORMANCE_RATIO = 0.80
DEFAULT_TILT_DEG = 30.0
# Apparent sunrise is when the top of the sun's disc clears the horizon through the refracting air.
_SUNRISE_ELEVATION = math.radians(-0.833)
_SOLAR_CONSTANT = 1353.0  # W/m2 outside the atmosphere, as the air-mass model below expects
_MAX_AIR_MASS = 38.0  # air mass at the horizon; avoids dividing by a vanishing cosine


class SunInputError(ValueError):
    """A place or an instant the sun cannot be computed for (naive datetime, impossible coordinates)."""


def require_utc(value: datetime, what: str) -> datetime:
    """The instant as UTC; a naive datetime is refused because guessing its zone shifts the sun by hours."""
    if not isinstance(value, datetime):
        raise SunInputError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise SunInputError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


@dataclass(frozen=True)
class Site:
    """Where a household is.  Defaults: central Tokyo."""

    latitude: float = 35.68
    longitude: float = 139.77
    timezone: str = "Asia/Tokyo"

    def __post_init__(self) -> None:
        if not -90.0 <= self.latitude <= 90.0:
            raise SunInputError(f"latitude must be within [-90, 90], got {self.latitude}")
        if not -180.0 <= self.longitude <= 180.0:
            raise SunInputError(f"longitude must be within [-180, 180], got {self.longitude}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SunInputError(f"unknown timezone {self.timezone!r}") from exc

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


_TOKYO = Site()


@dataclass(frozen=True, slots=True)
class SolarDay:
    """The sun's geometry for one date at one site, reduced to constants of ``A + B * cos(hour angle)``."""

    declination: float  # radians
    offset_s: float  # add to UTC seconds of the day to get true solar seconds (longitude + equation of time)
    sin_sin: float  # sin(latitude) * sin(declination): cos(zenith) = sin_sin + cos_cos * cos(hour angle)
    cos_cos: float
    tilt_sin_sin: float  # the same for a south-facing tilted plane (latitude minus tilt)
    tilt_cos_cos: float
    sky_view: float  # share of the sky dome the tilted panel sees, for isotropic diffuse light


def _orbit(day_of_year: int) -> tuple[float, float]:
    """Declination (radians) and equation of time (seconds) from Spencer's Fourier series."""
    g = TWO_PI * (day_of_year - 1) / 365.0
    declination = (
        0.006918
        - 0.399912 * math.cos(g)
        + 0.070257 * math.sin(g)
        - 0.006758 * math.cos(2 * g)
        + 0.000907 * math.sin(2 * g)
        - 0.002697 * math.cos(3 * g)
        + 0.00148 * math.sin(3 * g)
    )
    eot_min = 229.18 * (
        0.000075
        + 0.001868 * math.cos(g)
        - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g)
        - 0.040849 * math.sin(2 * g)
    )
    return declination, eot_min * 60.0


@lru_cache(maxsize=4096)
def solar_day(latitude: float, longitude: float, tilt_deg: float, ordinal: int) -> SolarDay:
    """Geometry of the date with proleptic ordinal ``ordinal``; cached: every home of a site shares it."""
    day = date.fromordinal(ordinal)
    declination, eot_s = _orbit(day.timetuple().tm_yday)
    lat = math.radians(latitude)
    plane = math.radians(latitude - tilt_deg) if latitude >= 0 else math.radians(latitude + tilt_deg)
    return SolarDay(
        declination=declination,
        offset_s=longitude * 240.0 + eot_s,
        sin_sin=math.sin(lat) * math.sin(declination),
        cos_cos=math.cos(lat) * math.cos(declination),
        tilt_sin_sin=math.sin(plane) * math.sin(declination),
        tilt_cos_cos=math.cos(plane) * math.cos(declination),
        sky_view=(1.0 + math.cos(math.radians(tilt_deg))) / 2.0,
    )


def clear_sky_poa(day: SolarDay, epoch_s: float) -> float:
    """Clear-sky irradiance on the panel plane (W/m2) at a UNIX time; exactly 0 with the sun down.

    Beam from a simple air-mass attenuation model, diffuse as a tenth of the beam spread over the
    part of the sky the panel sees.  Hour angle uses the UNIX time directly: its remainder modulo a
    day is the UTC time of day, and cos() does the modulo for free.
    """
    cos_h = -math.cos(TWO_PI * (epoch_s + day.offset_s) / DAY_S)
    cos_zenith = day.sin_sin + day.cos_cos * cos_h
    if cos_zenith <= 0.0:
        return 0.0
    air_mass = 1.0 / cos_zenith if cos_zenith > 1.0 / _MAX_AIR_MASS else _MAX_AIR_MASS
    beam = _SOLAR_CONSTANT * 0.7 ** (air_mass**0.678)
    cos_incidence = day.tilt_sin_sin + day.tilt_cos_cos * cos_h
    direct = beam * cos_incidence if cos_incidence > 0.0 else 0.0
    return direct + 0.1 * beam * day.sky_view


def local_date(site: Site, at: datetime) -> date:
    """The date on the household's calendar, which is what the per-day geometry is keyed by."""
    return require_utc(at, "time").astimezone(site.tz).date()


def clear_sky_pv_w(site: Site, pv_kw: float, at: datetime, *, tilt_deg: float = DEFAULT_TILT_DEG) -> float:
    """What a ``pv_kw`` system would deliver at ``at`` under a cloudless sky (an installer's expected yield).

    The household's actual output is this times clouds and heat losses, so it never exceeds it.
    """
    if pv_kw < 0 or not math.isfinite(pv_kw):
        raise SunInputError(f"pv_kw must be a non-negative number, got {pv_kw!r}")
    day = solar_day(site.latitude, site.longitude, tilt_deg, local_date(site, at).toordinal())
    return pv_kw * PERFORMANCE_RATIO * clear_sky_poa(day, require_utc(at, "time").timestamp())


def sunrise_sunset(site: Site, on: date) -> tuple[datetime, datetime] | None:
    """Apparent sunrise and sunset (UTC) on the local date ``on``; None during polar day or night."""
    day = solar_day(site.latitude, site.longitude, DEFAULT_TILT_DEG, on.toordinal())
    cos_h0 = (math.sin(_SUNRISE_ELEVATION) - day.sin_sin) / day.cos_cos
    if not -1.0 <= cos_h0 <= 1.0:
        return None
    half_day_s = math.acos(cos_h0) / TWO_PI * DAY_S
    # Solar noon in UTC seconds from the start of the UTC day with the same calendar date; that date is
    # the local one as long as the zone's offset roughly follows the longitude.
    noon = datetime.combine(on, time(0), tzinfo=UTC) + timedelta(seconds=DAY_S / 2 - day.offset_s)
    return noon - timedelta(seconds=half_day_s), noon + timedelta(seconds=half_day_s)


def clear_sky_fraction(at: datetime, site: Site = _TOKYO, *, tilt_deg: float = DEFAULT_TILT_DEG) -> float:
    """Share of a system's nameplate power a cloudless sky gives at ``at`` (0 with the sun down)."""
    return clear_sky_pv_w(site, 1.0, at, tilt_deg=tilt_deg) / 1000.0


def expected_wh(
    capacity_w: float,
    start: datetime,
    stop: datetime,
    step: timedelta = timedelta(minutes=10),
    site: Site = _TOKYO,
) -> float:
    """Clear-sky energy of a ``capacity_w`` array between two instants (midpoint rule): a ceiling to
    hold a day's yield against, since clouds only ever take from it."""
    total = 0.0
    t = start
    while t < stop:
        dt = min(step, stop - t)
        total += capacity_w * clear_sky_fraction(t + dt / 2, site) * dt.total_seconds() / 3600
        t += dt
    return total
