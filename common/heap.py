"""Garbage-collector settings for long-running commands, set once their start-up is over.

Everything a command builds while it starts (libraries, tables, connections, one task per device)
lives as long as the process.  Frozen (``gc.freeze``), it is out of the collector's sight, so a full
collection, which would otherwise walk all of it, no longer stalls the event loop (measured in
``bench.collector``: full collections of 0.3-0.6 s, every one a late poll).  And with hundreds of
requests or polls in flight, thousands of young objects are alive at any moment: at the default
threshold (700 allocations) each young collection rescans and promotes them, though nearly all die by
reference counting moments later.  A larger young generation lets them die first; cyclic garbage is
still collected, in larger, rarer passes (bench/api.py: about a tenth more requests/s).
"""

from __future__ import annotations

import asyncio
import gc

GC_THRESHOLDS = (50_000, 20, 20)


def settle() -> None:
    """Collect once, freeze what is left, and widen the young generation (see the module's note)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def settle_later(delay_s: float) -> asyncio.TimerHandle:
    """``settle()`` once ``delay_s`` has passed (the command's start-up is over), on the running loop."""
    return asyncio.get_running_loop().call_later(delay_s, settle)
