"""Register the real-InfluxDB fixtures (``influxdb``, ``influx_bucket``) for the pipeline tests.

Registering the plugin once (idempotent, shared with ``tests/infra``) rather than importing the
fixture functions into each module keeps it to ONE influxd per test session: a fixture imported into
a module is a separate session fixture per module, i.e. one server per module.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.import_plugin("tests.influx_server")
