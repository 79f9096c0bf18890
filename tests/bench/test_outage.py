"""bench/outage.py in a short configuration: 2 emulated homes, a 15-second outage of a real influxd,
each scenario's readings adding up exactly (expected = stored in InfluxDB + lost + rejected + kept)."""

from __future__ import annotations

import pytest

from bench.outage import coverage_table, run
from tests.influx_server import find_influxd

pytestmark = [pytest.mark.influxdb, pytest.mark.slow]


def test_outage_soak_accounts_for_every_reading() -> None:
    if find_influxd()[0] is None:
        pytest.skip(f"influxd 2.x not available: {find_influxd()[1]}")
    results = run(
        [
            "--homes", "2", "--outage-min", "0.25", "--before-s", "6", "--power-interval", "1",
            "--counter-interval", "2", "--small-spool-kib", "12", "--drain-s", "90",
        ]
    )  # fmt: skip
    by_name = {r.scenario: r for r in results}
    assert set(by_name) == {"roomy", "refuse", "drop_oldest"}
    for r in results:
        assert r.balance == 0, (r.scenario, r.expected, r.stored, r.lost, r.rejected, r.kept)
        assert r.stored == r.stored_by_pipeline, r.scenario  # the pipeline's count is InfluxDB's
        assert r.spool_peak_bytes > 0 and r.bytes_per_reading > 0
        assert sum(p.queue_waits for p in r.phases) == 0  # polling never waited
    assert by_name["roomy"].lost == {} and by_name["roomy"].stored > 0
    assert by_name["refuse"].lost.get("spool_full", 0) > 0
    assert by_name["drop_oldest"].lost.get("spool_dropped_oldest", 0) > 0
    lines = coverage_table(by_name["roomy"].bytes_per_reading, by_name["roomy"].readings_per_home_s())
    assert len(lines) == 7
