"""InfluxDB's write endpoint on 127.0.0.1, answered by a test's own handler: for the faults and the
timings a real influxd will not produce on demand (throttling, 413, a request held open)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from aiohttp import web

from tests.http_endpoint import post_endpoint


def write_endpoint(
    handle: Callable[[web.Request], Awaitable[web.Response]],
) -> AbstractAsyncContextManager[str]:
    """Serve ``POST /api/v2/write`` with ``handle``; yields the base URL."""
    return post_endpoint("/api/v2/write", handle)
