"""The one configuration loader: named files exist, sections and keys are known, values have their type,
and every error names the file, the section and the key."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

import config
from config import ConfigError


@dataclass(frozen=True)
class Settings:
    mode: Literal["fast", "safe"] = "safe"
    url: str | None = None
    limit: int | None = None
    ratio: float = 0.5
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.ratio > 1:
            raise ConfigError("must be <= 1", key="ratio")


def test_no_file_means_every_default_but_a_named_file_must_exist(tmp_path: Path) -> None:
    assert config.read(None).section("pipeline") == {}
    with pytest.raises(ConfigError, match="cannot read") as info:
        config.read(tmp_path / "typo.toml")
    assert info.value.file == str(tmp_path / "typo.toml")


def test_unparseable_file_and_unknown_section(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[pipeline\n")
    with pytest.raises(ConfigError, match="not TOML"):
        config.read(bad)
    bad.write_text("[pipline]\nbatch_size = 1\n")
    with pytest.raises(ConfigError) as info:
        config.read(bad)
    assert (info.value.file, info.value.section) == (str(bad), "pipline")
    assert "known: collector, households, pipeline, fleet, serve, demo, devices" in str(info.value)
    bad.write_text("pipeline = 3\n")
    with pytest.raises(ConfigError, match=r"\[pipeline\] must be a table"):
        config.read(bad).section("pipeline")


def test_values_fit_their_declared_types() -> None:
    got = config.settings(
        Settings, {"mode": "fast", "url": "http://x", "limit": 3, "ratio": 1, "enabled": False}
    )
    assert got == {"mode": "fast", "url": "http://x", "limit": 3, "ratio": 1.0, "enabled": False}
    assert isinstance(got["ratio"], float)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"mode": "quick"}, "expected 'fast' or 'safe', got 'quick'"),  # a closed choice
        ({"url": 42}, "expected str, got 42"),  # a None default no longer skips the check
        ({"limit": "3"}, "expected int, got '3'"),
        ({"limit": 2.5}, "expected int, got 2.5"),
        ({"ratio": True}, "expected a number, got True"),  # a bool is not a number
        ({"enabled": 1}, "expected bool, got 1"),
    ],
)
def test_a_wrong_type_is_refused_naming_file_section_and_key(table: dict[str, object], expected: str) -> None:
    (key,) = table
    with pytest.raises(ConfigError) as info:
        config.settings(Settings, table, file="site.toml", section="pipeline")
    assert str(info.value) == f"site.toml: pipeline.{key}: {expected}"
    assert (info.value.file, info.value.section, info.value.key) == ("site.toml", "pipeline", key)


def test_an_unknown_key_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        config.settings(Settings, {"modus": "fast"}, file="site.toml", section="pipeline")
    assert (
        str(info.value)
        == "site.toml: pipeline.modus: unknown setting; known: enabled, limit, mode, ratio, url"
    )


def test_the_settings_class_own_checks_get_the_file_and_section() -> None:
    assert config.build(Settings, {"ratio": 0.25}).ratio == 0.25
    with pytest.raises(ConfigError) as info:
        config.build(Settings, {"ratio": 2}, file="site.toml", section="pipeline")
    assert str(info.value) == "site.toml: pipeline.ratio: must be <= 1"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tool")
    p.add_argument("--homes", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument("--db", type=Path, default=None)
    p.add_argument("--agg", choices=["mean", "max"], default="mean")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--config", default=None)
    return p


def test_command_options_come_from_the_file_and_flags_win(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[serve]\nhomes = 4\nhost = "0.0.0.0"\nrate = 5\ndb = "a.sqlite"\nquiet = true\n')
    args, cfile = config.parse_args_with_config(_parser(), ["--config", str(path), "--rate", "7"], "serve")
    assert (args.homes, args.host, args.rate, args.db, args.quiet) == (
        4,
        "0.0.0.0",
        7.0,
        Path("a.sqlite"),
        True,
    )
    assert cfile.path == str(path)
    args, _ = config.parse_args_with_config(_parser(), ["--homes", "1"], "serve")  # no file: the defaults
    assert (args.homes, args.host, args.rate) == (1, "127.0.0.1", 20.0)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("prot = 1", "serve.prot: unknown setting; known: agg, db, homes, host, quiet, rate"),
        ('homes = "4"', "serve.homes: expected int, got '4'"),
        ("quiet = 1", "serve.quiet: expected bool, got 1"),
        ('agg = "median"', "serve.agg: must be one of 'mean', 'max', got 'median'"),
        ("db = true", "serve.db: expected text, a number or a date, got True"),
    ],
)
def test_command_options_from_the_file_are_checked(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "site.toml"
    path.write_text(f"[serve]\n{body}\n")
    with pytest.raises(ConfigError) as info:
        config.parse_args_with_config(_parser(), ["--config", str(path), "--homes", "1"], "serve")
    assert str(info.value) == f"{path}: {expected}"
