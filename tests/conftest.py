"""Fixtures shared across the test packages: the real InfluxDB 2.x and PostgreSQL servers (one each
per session) and small real filesystems for disk faults."""

pytest_plugins = ["tests.influx_server", "tests.pg_server", "tests.volumes"]
