"""Pipeline configuration: defaults, TOML table, environment credentials, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, PipelineConfig
from pipeline.factory import open_pipeline, open_store, retention_policy
from pipeline.sqlite_store import SQLiteStore


def test_defaults_need_no_file() -> None:
    cfg = PipelineConfig.load(None, env={})
    assert cfg.sqlite_path == "./var/hems.sqlite"
    assert not cfg.use_influx
    assert cfg.raw_days == 30 and cfg.hourly_days == 400 and cfg.daily_days is None


def test_a_named_file_that_is_missing_is_an_error_not_the_defaults(tmp_path: Path) -> None:
    """The bug: ``--config typo.toml`` silently meant every default (and served ./var/hems.sqlite)."""
    missing = tmp_path / "typo.toml"
    with pytest.raises(ConfigError, match="cannot read") as info:
        PipelineConfig.load(missing, env={})
    assert info.value.file == str(missing)


def test_toml_table_and_env_override(tmp_path: Path) -> None:
    path = tmp_path / "hems.toml"
    path.write_text(
        '[pipeline]\nsqlite_path = "/data/h.sqlite"\nbatch_size = 100\nmax_delay_s = 2\nraw_days = 7\n'
    )
    env = {"HEMS_INFLUX_URL": "http://127.0.0.1:8086", "HEMS_INFLUX_TOKEN": "t", "HEMS_INFLUX_ORG": "o"}
    cfg = PipelineConfig.load(path, env=env)
    assert (cfg.sqlite_path, cfg.batch_size, cfg.max_delay_s, cfg.raw_days) == ("/data/h.sqlite", 100, 2, 7)
    assert cfg.use_influx and cfg.influx_token == "t" and cfg.influx_bucket is None
    assert retention_policy(cfg).raw_days == 7


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"batch_sise": 10}, "batch_sise"),
        ({"batch_size": "10"}, "batch_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"spool_policy": "drop_newest"}, "spool_policy"),
        ({"influx_url": 42}, "influx_url"),  # the bug: a None default skipped the type check
        ({"daily_days": "7"}, "daily_days"),
        ({"sqlite_synchronous": "SOMETIMES"}, "sqlite_synchronous"),
        ({"store": "cassandra"}, "store"),
    ],
)
def test_bad_settings_name_the_key(table: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        PipelineConfig.from_mapping(table, env={})


async def test_factory_builds_embedded_pipeline(tmp_path: Path) -> None:
    cfg = PipelineConfig.from_mapping(
        {
            "sqlite_path": str(tmp_path / "h.sqlite"),
            "spool_dir": str(tmp_path / "spool"),
            "counter_state_path": str(tmp_path / "state.sqlite"),
        },
        env={},
    )
    store = open_store(cfg)
    assert isinstance(store, SQLiteStore)
    p = open_pipeline(cfg, store)
    await p.start()
    await p.close()
    await store.close()
    assert (tmp_path / "spool").is_dir() and (tmp_path / "state.sqlite").exists()
