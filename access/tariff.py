"""What the grid energy of a home costs: a time-of-use price per kWh bought, a price per kWh sold.

Configured in the ``[tariff]`` section of the one configuration file (``hems.example.toml``); the
defaults are illustrative figures of the size Japanese households see (a cheaper night band, a
feed-in price below the purchase price), not any company's prices.  Only the energy charge is
priced: a plan's basic charge, fuel-cost adjustment and renewable-energy surcharge are not, and
public holidays count as the weekdays they fall on (set ``days = "weekend"`` bands for Saturdays and
Sundays).  Bands start and end on the hour, so an hourly window never straddles two prices; every
hour of every day must be priced exactly once, or the file is refused naming the gap or overlap.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

import polars as pl

import config
from config import ConfigError

if TYPE_CHECKING:
    from access.api.models import TariffInfo

SECTION: Final = "tariff"
TOKYO: Final = "Asia/Tokyo"
Days = Literal["all", "weekday", "weekend"]
_HOUR = re.compile(r"^([01]\d|2[0-4]):00$")


@dataclass(frozen=True)
class Band:
    """``yen_per_kwh`` from ``start`` (inclusive) to ``end`` (exclusive), local hours; ``end`` before
    ``start`` runs past midnight (23:00-07:00)."""

    name: str
    start: int
    end: int
    yen_per_kwh: float
    days: Days = "all"

    def hours(self) -> list[int]:
        span = (self.end - self.start) % 24 or 24
        return [(self.start + i) % 24 for i in range(span)]


DEFAULT_BANDS: Final = (
    Band("night", 23, 7, 27.0),
    Band("day", 7, 23, 36.0),
)


@dataclass(frozen=True)
class Tariff:
    feed_in_yen_per_kwh: float = 16.0
    bands: tuple[Band, ...] = field(default=DEFAULT_BANDS)

    def __post_init__(self) -> None:
        if self.feed_in_yen_per_kwh < 0:
            raise ConfigError("must be >= 0", section=SECTION, key="feed_in_yen_per_kwh")
        for weekend in (False, True):
            owner: dict[int, str] = {}
            for band in self.bands:
                if band.yen_per_kwh < 0:
                    raise ConfigError(f"band {band.name!r}: yen_per_kwh must be >= 0", section=SECTION)
                if band.days != "all" and (band.days == "weekend") != weekend:
                    continue
                for h in band.hours():
                    if h in owner:
                        raise ConfigError(
                            f"bands {owner[h]!r} and {band.name!r} both price {h:02d}:00", section=SECTION
                        )
                    owner[h] = band.name
            missing = [h for h in range(24) if h not in owner]
            if missing:
                day = "weekend" if weekend else "weekday"
                raise ConfigError(
                    f"no band prices {', '.join(f'{h:02d}:00' for h in missing)} on a {day}", section=SECTION
                )

    def table(self) -> pl.DataFrame:
        """``weekend`` (bool), ``hour`` (0-23), ``band``, ``yen_per_kwh``: one row per priced hour."""
        rows = [
            (weekend, h, b.name, b.yen_per_kwh)
            for weekend in (False, True)
            for b in self.bands
            if b.days == "all" or (b.days == "weekend") == weekend
            for h in b.hours()
        ]
        return pl.DataFrame(
            rows,
            schema={"weekend": pl.Boolean, "hour": pl.Int8, "band": pl.Utf8, "yen_per_kwh": pl.Float64},
            orient="row",
        )

    def price(self, windows: pl.DataFrame) -> pl.DataFrame:
        """``windows`` (``time`` at the start of each window of at most an hour, ``grid_import`` and
        ``grid_export`` in Wh) with ``band``, ``import_yen``, ``export_yen`` and ``net_yen`` added."""
        local = pl.col("time").dt.convert_time_zone(TOKYO)
        keyed = windows.with_columns(
            (local.dt.weekday() >= 6).alias("weekend"), local.dt.hour().cast(pl.Int8).alias("hour")
        )
        priced = keyed.join(self.table(), on=["weekend", "hour"], how="left")
        return (
            priced.with_columns(
                (pl.col("grid_import") / 1000.0 * pl.col("yen_per_kwh")).alias("import_yen"),
                (pl.col("grid_export") / 1000.0 * self.feed_in_yen_per_kwh).alias("export_yen"),
            )
            .with_columns((pl.col("import_yen") - pl.col("export_yen")).alias("net_yen"))
            .drop("weekend", "hour")
        )

    def describe(self) -> TariffInfo:
        return {
            "currency": "JPY",
            "feed_in_yen_per_kwh": self.feed_in_yen_per_kwh,
            "bands": [
                {
                    "name": b.name,
                    "from": f"{b.start:02d}:00",
                    "until": f"{b.end:02d}:00",
                    "days": b.days,
                    "yen_per_kwh": b.yen_per_kwh,
                }
                for b in self.bands
            ],
        }


def _hour(value: Any, where: str, file: str | None) -> int:
    if not isinstance(value, str) or not _HOUR.match(value):
        raise ConfigError(f'{where}: a whole hour such as "07:00", got {value!r}', file=file, section=SECTION)
    return int(value[:2]) % 24


def _band(item: Any, i: int, file: str | None) -> Band:
    where = f"bands[{i}]"
    if not isinstance(item, dict):
        raise ConfigError(
            f"{where}: a table such as {{ name = ..., from = ..., until = ..., yen_per_kwh = ... }}",
            file=file,
            section=SECTION,
        )
    known = {"name": str, "from": str, "until": str, "yen_per_kwh": float, "days": Days}
    for key in item:
        if key not in known:
            raise ConfigError(
                f"{where}: unknown key {key!r}; known: {', '.join(known)}", file=file, section=SECTION
            )
    for key in ("name", "from", "until", "yen_per_kwh"):
        if key not in item:
            raise ConfigError(f"{where}: {key} is required", file=file, section=SECTION)
    values = {
        k: config.check_value(v, known[k], file=file, section=SECTION, key=f"{where}.{k}")
        for k, v in item.items()
    }
    return Band(
        name=values["name"],
        start=_hour(values["from"], f"{where}.from", file),
        end=_hour(values["until"], f"{where}.until", file),
        yen_per_kwh=values["yen_per_kwh"],
        days=values.get("days", "all"),
    )


def load(table: Mapping[str, Any], file: str | None = None) -> Tariff:
    """The ``[tariff]`` table (empty: the defaults)."""
    values = config.settings(
        Tariff, table, file=file, section=SECTION, exclude=("bands",), extra={"bands": list[Any]}
    )
    bands = values.pop("bands", None)
    try:
        if bands is None:
            return Tariff(**values)
        return Tariff(**values, bands=tuple(_band(b, i, file) for i, b in enumerate(bands)))
    except ConfigError as exc:
        raise exc.located(file=file, section=SECTION) from None
