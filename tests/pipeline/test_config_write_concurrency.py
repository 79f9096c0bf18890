"""``[pipeline] write_concurrency``: checked, and handed to the pipelines the factory builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, PipelineConfig
from pipeline.factory import open_ingest_pipeline, open_pipeline, open_store


@pytest.mark.parametrize("value", [0, -1, "2"])
def test_a_write_concurrency_below_one_or_not_a_number_is_refused_by_name(value: object) -> None:
    with pytest.raises(ConfigError, match="write_concurrency"):
        PipelineConfig.from_mapping({"write_concurrency": value}, env={})


async def test_the_factory_hands_write_concurrency_to_its_pipelines(tmp_path: Path) -> None:
    cfg = PipelineConfig.from_mapping(
        {
            "sqlite_path": str(tmp_path / "h.sqlite"),
            "spool_dir": str(tmp_path / "spool"),
            "counter_state_path": str(tmp_path / "state.sqlite"),
            "write_concurrency": 3,
        },
        env={},
    )
    assert PipelineConfig.from_mapping({}, env={}).write_concurrency == 1  # one batch at a time by default
    store = open_store(cfg)
    for pipeline in (open_pipeline(cfg, store), open_ingest_pipeline(cfg, store, tmp_path / "ingest-spool")):
        assert pipeline.write_concurrency == 3
        await pipeline.start()
        await pipeline.close()
    await store.close()
