"""The ``[tariff]`` section: defaults, bands that must price every hour once, prices by Tokyo hour."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

import config
from access.tariff import Band, Tariff, load
from config import ConfigError


def _load(tmp_path: Path, text: str) -> Tariff:
    path = tmp_path / "hems.toml"
    path.write_text(text, encoding="utf-8")
    cfile = config.read(path)
    return load(cfile.section("tariff"), cfile.path)


def test_no_section_is_the_defaults(tmp_path: Path) -> None:
    assert _load(tmp_path, "") == Tariff()
    assert Tariff().describe()["bands"][0] == {
        "name": "night",
        "from": "23:00",
        "until": "07:00",
        "days": "all",
        "yen_per_kwh": 27.0,
    }


def test_bands_from_the_file_with_a_weekend_price(tmp_path: Path) -> None:
    t = _load(
        tmp_path,
        """
[tariff]
feed_in_yen_per_kwh = 8
bands = [
  { name = "night", from = "22:00", until = "08:00", yen_per_kwh = 25.5 },
  { name = "day", from = "08:00", until = "22:00", yen_per_kwh = 40, days = "weekday" },
  { name = "holiday", from = "08:00", until = "22:00", yen_per_kwh = 30, days = "weekend" },
]
""",
    )
    assert t.feed_in_yen_per_kwh == 8.0
    # Monday 2026-06-01 and Saturday 2026-06-06, at 12:00 and 23:00 Tokyo (03:00 and 14:00 UTC).
    times = [
        datetime(2026, 6, 1, 3, tzinfo=UTC),
        datetime(2026, 6, 1, 14, tzinfo=UTC),
        datetime(2026, 6, 6, 3, tzinfo=UTC),
        datetime(2026, 6, 6, 14, tzinfo=UTC),
    ]
    w = pl.DataFrame(
        {"time": times, "grid_import": [1000.0, 2000.0, 1000.0, 0.0], "grid_export": [500.0, 0.0, 0.0, 0.0]},
        schema={"time": pl.Datetime("us", "UTC"), "grid_import": pl.Float64, "grid_export": pl.Float64},
    )
    priced = t.price(w)
    assert priced["band"].to_list() == ["day", "night", "holiday", "night"]
    assert priced["import_yen"].to_list() == pytest.approx([40.0, 51.0, 30.0, 0.0])
    assert priced["export_yen"].to_list() == pytest.approx([4.0, 0.0, 0.0, 0.0])
    assert priced["net_yen"].to_list() == pytest.approx([36.0, 51.0, 30.0, 0.0])


@pytest.mark.parametrize(
    ("bands", "words"),
    [
        ('{ name = "a", from = "00:00", until = "12:00", yen_per_kwh = 1 }', "no band prices 12:00"),
        (
            '{ name = "a", from = "00:00", until = "13:00", yen_per_kwh = 1 },'
            ' { name = "b", from = "12:00", until = "24:00", yen_per_kwh = 1 }',
            "'a' and 'b' both price 12:00",
        ),
        ('{ name = "a", from = "00:30", until = "00:00", yen_per_kwh = 1 }', "a whole hour"),
        ('{ name = "a", from = "00:00", until = "00:00", yen_per_kwh = "x" }', "bands[0].yen_per_kwh"),
        ('{ name = "a", from = "00:00", until = "00:00", price = 1 }', "unknown key 'price'"),
        ('{ name = "a", from = "00:00", until = "00:00" }', "yen_per_kwh is required"),
        (
            '{ name = "a", from = "00:00", until = "00:00", yen_per_kwh = 1, days = "weekday" }',
            "on a weekend",
        ),
    ],
)
def test_bad_bands_are_refused_naming_the_file_and_the_problem(
    tmp_path: Path, bands: str, words: str
) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, f"[tariff]\nbands = [{bands}]\n")
    assert words in str(err.value) and "hems.toml" in str(err.value) and "tariff" in str(err.value)


def test_unknown_setting_and_negative_price_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        _load(tmp_path, "[tariff]\nbasic_charge = 3\n")
    with pytest.raises(ConfigError, match="feed_in_yen_per_kwh"):
        _load(tmp_path, "[tariff]\nfeed_in_yen_per_kwh = -1\n")


def test_a_band_over_midnight_covers_its_hours() -> None:
    assert Band("n", 23, 7, 1.0).hours() == [23, 0, 1, 2, 3, 4, 5, 6]
    assert Band("all", 0, 0, 1.0).hours() == list(range(24))
    assert len(Tariff().table()) == 48  # 24 hours, weekday and weekend
