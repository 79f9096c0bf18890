"""Fixtures shared across the test packages: the real InfluxDB 2.x server (one per session)."""

pytest_plugins = ["tests.influx_server"]
