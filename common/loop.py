"""One way to run a long-lived command's event loop: uvloop where it is installed, asyncio otherwise.

uvloop roughly triples the datagrams one process can serve (bench/echonet.py), which is what lets a
thousand emulated homes and the collector share two cores; the fallback keeps every command working
on platforms without it.  Every command starts its loop here (``hems devices``, the collector's CLI,
``hems collect``, ``hems serve``, ``hems demo``); a test holds the tree to that.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the fastest available loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set ``stop`` so a long-running command drains and closes cleanly (a
    container stop sends SIGTERM); call from the running loop in the main thread."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
