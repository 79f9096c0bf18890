"""Fixtures shared across the test packages: the real InfluxDB 2.x server (one per session) and
small real filesystems for disk faults."""

pytest_plugins = ["tests.influx_server", "tests.volumes"]
