"""The one sun: the installer view's expected yield and the emulated homes' PV read the same model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from common.sun import (
    DEFAULT_TILT_DEG,
    Site,
    SunInputError,
    clear_sky_fraction,
    clear_sky_pv_w,
    expected_wh,
    require_utc,
)
from devices.physics import Equipment, Household, SimClock

TOKYO = ZoneInfo("Asia/Tokyo")


def test_the_view_fraction_is_the_physics_clear_sky_per_kw() -> None:
    site = Site()
    for hour in range(24):
        at = datetime(2026, 5, 1, hour, 17, tzinfo=TOKYO)
        assert clear_sky_fraction(at) == pytest.approx(clear_sky_pv_w(site, 1.0, at) / 1000.0)
    assert clear_sky_fraction(datetime(2026, 5, 1, 0, 0, tzinfo=TOKYO)) == 0.0
    assert 0.6 < clear_sky_fraction(datetime(2026, 5, 1, 11, 45, tzinfo=TOKYO)) < 0.9


def test_expected_yield_bounds_what_an_emulated_home_makes() -> None:
    """Clouds only take: a simulated day's PV energy never exceeds the clear-sky expectation."""
    start = datetime(2026, 5, 1, tzinfo=TOKYO).astimezone(UTC)
    home = Household(
        "hh-sun", 3, SimClock(start), equipment=Equipment(pv_kw=5.0, pv_tilt_deg=DEFAULT_TILT_DEG)
    )
    kw = home.equipment.pv_kw
    stop = start + timedelta(days=1)
    before = home.state(start).pv_wh_total
    made = home.state(stop).pv_wh_total - before
    ceiling = expected_wh(kw * 1000.0, start, stop, step=timedelta(minutes=5))
    assert 0.3 * ceiling < made <= ceiling * 1.01  # 1 %: 5-minute midpoints against 10-second steps
    assert expected_wh(kw * 1000.0, start, start + timedelta(hours=4)) == 0.0  # 09:00-13:00 UTC is night


def test_naive_instants_are_refused() -> None:
    with pytest.raises(SunInputError, match="timezone-aware"):
        require_utc(datetime(2026, 1, 1), "time")
    with pytest.raises(SunInputError, match="timezone"):
        Site(timezone="Mars/Olympus")
