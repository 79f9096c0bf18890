"""``common.loop``: every command's event loop is uvloop where it is installed."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from common.loop import loop_factory, run


async def _loop_type() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_run_uses_uvloop_when_installed() -> None:
    if importlib.util.find_spec("uvloop") is None:
        assert loop_factory() is None
        pytest.skip("uvloop is not installed here: asyncio's own loop is used")
    assert run(_loop_type()).startswith("uvloop")
