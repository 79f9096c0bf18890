"""InfluxDB's write endpoint on 127.0.0.1, answered by a test's own handler: for the faults and the
timings a real influxd will not produce on demand (throttling, 413, a request held open)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web


@asynccontextmanager
async def write_endpoint(handle: Callable[[web.Request], Awaitable[web.Response]]) -> AsyncIterator[str]:
    """Serve ``POST /api/v2/write`` with ``handle`` on a port the system picks; yields the base URL."""
    app = web.Application()
    app.router.add_post("/api/v2/write", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
