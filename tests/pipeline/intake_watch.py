"""How far a pipeline's intake has got, sampled at every turn of the event loop: the writer tests use
it to see that a long submit gives the loop back mid-intake, and by how many readings at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pipeline.writer import Pipeline


@asynccontextmanager
async def intake_watch(p: Pipeline) -> AsyncIterator[list[int]]:
    """Yields the list the watcher fills with ``validator.stats.accepted``, one entry per loop turn."""
    seen: list[int] = []

    async def watch() -> None:
        while True:
            seen.append(p.validator.stats.accepted)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    try:
        yield seen
    finally:
        watcher.cancel()
