"""Pipeline and store settings: one dataclass, defaults that make ``hems demo`` work with no file.

Loaded from the ``[pipeline]`` table of the project TOML file; InfluxDB credentials come from the
environment (``HEMS_INFLUX_URL``/``ORG``/``BUCKET``/``TOKEN``) so they never sit in a config file.
When no InfluxDB URL is set, the embedded SQLite store is used.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A setting has the wrong type or an impossible value; the message names the key."""


@dataclass(frozen=True)
class PipelineConfig:
    sqlite_path: str = "./var/hems.sqlite"
    sqlite_synchronous: str = "NORMAL"
    counter_state_path: str = "./var/counter_state.sqlite"
    influx_url: str | None = None
    influx_org: str | None = None
    influx_bucket: str | None = None
    influx_token: str | None = None
    batch_size: int = 5000
    max_delay_s: float = 1.0
    spool_dir: str = "./var/spool"
    spool_max_bytes: int = 256 * 1024 * 1024
    spool_segment_bytes: int = 4 * 1024 * 1024
    spool_policy: str = "refuse"
    max_future_skew_s: float = 300.0
    raw_days: int = 30
    hourly_days: int = 400
    daily_days: int | None = None  # None: keep daily rollups forever

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        if self.max_delay_s <= 0:
            raise ConfigError("max_delay_s must be > 0")
        if self.spool_policy not in ("refuse", "drop_oldest"):
            raise ConfigError("spool_policy must be 'refuse' or 'drop_oldest'")
        if self.spool_max_bytes < self.spool_segment_bytes:
            raise ConfigError("spool_max_bytes must be >= spool_segment_bytes")
        if self.raw_days < 1 or self.hourly_days < 1:
            raise ConfigError("raw_days and hourly_days must be >= 1")
        if self.daily_days is not None and self.daily_days < 1:
            raise ConfigError("daily_days must be >= 1 or absent")

    @property
    def use_influx(self) -> bool:
        return bool(self.influx_url)

    @property
    def max_future_skew(self) -> timedelta:
        return timedelta(seconds=self.max_future_skew_s)

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], env: Mapping[str, str] | None = None) -> PipelineConfig:
        """Build from a TOML table; environment variables override the InfluxDB settings."""
        env = os.environ if env is None else env
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"unknown pipeline setting {key!r}")
            default = getattr(cls, key, None)
            if (
                default is not None
                and not isinstance(value, type(default))
                and not (
                    isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool)
                )
            ):
                raise ConfigError(f"{key}: expected {type(default).__name__}, got {type(value).__name__}")
            values[key] = value
        for key in ("url", "org", "bucket", "token"):
            env_value = env.get(f"HEMS_INFLUX_{key.upper()}")
            if env_value:
                values[f"influx_{key}"] = env_value
        return cls(**values)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
    ) -> PipelineConfig:
        """Read the ``[pipeline]`` table of ``path`` (missing file or table: all defaults)."""
        table: Mapping[str, Any] = {}
        if path is not None and Path(path).exists():
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
            raw = doc.get("pipeline", {})
            if not isinstance(raw, dict):
                raise ConfigError("[pipeline] must be a table")
            table = raw
        return cls.from_mapping(table, env)
