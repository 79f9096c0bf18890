"""Pipeline and store settings: one dataclass, defaults that make ``hems demo`` work with no file.

Loaded from the ``[pipeline]`` table of the project TOML file through the one configuration loader
(``config``): the field types below are the check, ``Literal`` ones are closed choices.  InfluxDB
credentials come from the environment (``HEMS_INFLUX_URL``/``ORG``/``BUCKET``/``TOKEN``) so they
never sit in a config file.  ``store`` names a registered store (``pipeline.stores``); left empty,
InfluxDB is used when a URL is set and the embedded SQLite store otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import config
from config import ConfigError as ConfigError  # re-exported: the one configuration error type
from pipeline import stores

SpoolPolicy = Literal["refuse", "drop_oldest"]
SqliteSynchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
SECTION = "pipeline"


def _fail(key: str, message: str) -> ConfigError:
    return ConfigError(message, section=SECTION, key=key)


@dataclass(frozen=True)
class PipelineConfig:
    store: str = ""  # a registered store's name; "": InfluxDB when influx_url is set, else SQLite
    sqlite_path: str = "./var/hems.sqlite"
    sqlite_synchronous: SqliteSynchronous = "NORMAL"
    counter_state_path: str = "./var/counter_state.sqlite"
    influx_url: str | None = None
    influx_org: str | None = None
    influx_bucket: str | None = None
    influx_token: str | None = None
    batch_size: int = 5000
    max_delay_s: float = 1.0
    # Batches encoded and sent at once (``Pipeline(write_concurrency=...)``): 1 writes them one at a
    # time; more keeps a remote store busy between batches (a fleet's ingest; one sent whole makes room
    # for the next while its answers are awaited, twice as many with the store in all).
    write_concurrency: int = 1
    # A store write taking longer is abandoned as an outage and its batch spooled (writes are upserts,
    # so what landed of it is written again at replay): polling never waits on a hung store.
    store_write_timeout_s: float = 5.0
    spool_dir: str = "./var/spool"
    spool_max_bytes: int = 256 * 1024 * 1024
    spool_segment_bytes: int = 4 * 1024 * 1024
    spool_policy: SpoolPolicy = "refuse"
    max_future_skew_s: float = 300.0
    raw_days: int = 30
    hourly_days: int = 400
    daily_days: int | None = None  # None: keep daily rollups forever
    # ``[pipeline.store_options]``: settings of a store added by registration, which checks them itself
    # (``config.build(ItsSettings, cfg.store_options, section="pipeline.store_options")``).
    store_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.store and self.store not in stores.names():
            raise _fail("store", f"unknown store {self.store!r}; registered: {', '.join(stores.names())}")
        if self.batch_size < 1:
            raise _fail("batch_size", "must be >= 1")
        if self.max_delay_s <= 0:
            raise _fail("max_delay_s", "must be > 0")
        if self.write_concurrency < 1:
            raise _fail("write_concurrency", "must be >= 1")
        if self.store_write_timeout_s <= 0:
            raise _fail("store_write_timeout_s", "must be > 0")
        if self.spool_policy not in ("refuse", "drop_oldest"):
            raise _fail("spool_policy", "must be 'refuse' or 'drop_oldest'")
        if self.spool_max_bytes < self.spool_segment_bytes:
            raise _fail("spool_max_bytes", "must be >= spool_segment_bytes")
        for key in ("raw_days", "hourly_days"):
            if getattr(self, key) < 1:
                raise _fail(key, "must be >= 1")
        if self.daily_days is not None and self.daily_days < 1:
            raise _fail("daily_days", "must be >= 1 or absent")

    @property
    def use_influx(self) -> bool:
        return self.store_name == "influx"

    @property
    def store_name(self) -> str:
        """The store these settings select (see the module docstring)."""
        return self.store or ("influx" if self.influx_url else "sqlite")

    @property
    def max_future_skew(self) -> timedelta:
        return timedelta(seconds=self.max_future_skew_s)

    @classmethod
    def from_mapping(
        cls, table: Mapping[str, Any], env: Mapping[str, str] | None = None, *, file: str | None = None
    ) -> PipelineConfig:
        """Build from a TOML table; environment variables override the InfluxDB settings."""
        env = os.environ if env is None else env
        values = config.settings(cls, table, file=file, section=SECTION)
        for key in ("url", "org", "bucket", "token"):
            env_value = env.get(f"HEMS_INFLUX_{key.upper()}")
            if env_value:
                values[f"influx_{key}"] = env_value
        return config.build(cls, {}, file=file, section=SECTION, **values)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
    ) -> PipelineConfig:
        """The ``[pipeline]`` table of ``path`` (no path: all defaults; a path that cannot be read is
        a ``ConfigError``, never silently the defaults)."""
        return cls.from_config_file(config.read(path), env)

    @classmethod
    def from_config_file(
        cls, cfile: config.ConfigFile, env: Mapping[str, str] | None = None
    ) -> PipelineConfig:
        return cls.from_mapping(cfile.section(SECTION), env, file=cfile.path)
