"""``/metrics`` merges every worker's files; a file a worker has only just created is skipped."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.core import CounterMetricFamily

from access.api.multiproc import SharedMetrics


def _counter(value: float) -> CounterMetricFamily:
    family = CounterMetricFamily("hems_api_requests", "requests answered", labels=["route"])
    family.add_metric(["series"], value)
    return family


def _merged(shared: SharedMetrics) -> dict[str, float]:
    return {s.name: s.value for family in shared.collect() for s in family.samples}


def test_a_worker_file_created_but_not_yet_sized_does_not_break_the_scrape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    shared = SharedMetrics(tmp_path)
    shared.publish([_counter(5)])
    assert _merged(shared) == {"hems_api_requests_total": 5.0}
    # Another worker opened its file (empty) and has not sized it yet: what prometheus_client does
    # between its open and its truncate.
    (tmp_path / "counter_999999.db").touch()
    assert _merged(shared) == {"hems_api_requests_total": 5.0}
    shared.publish([_counter(7)])
    assert _merged(shared) == {"hems_api_requests_total": 7.0}
