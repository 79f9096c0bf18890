"""One POST route on 127.0.0.1, answered by a test's own handler on a port the kernel picks: the far end
of a webhook, or a server's fault a real one will not produce on demand."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web


@asynccontextmanager
async def post_endpoint(
    path: str, handle: Callable[[web.Request], Awaitable[web.Response]]
) -> AsyncIterator[str]:
    """Serve ``POST path`` with ``handle``; yields the base URL (without ``path``)."""
    app = web.Application()
    app.router.add_post(path, handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
