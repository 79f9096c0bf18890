"""``hems serve`` as a real process over the embedded store: one worker, several, and a worker dying."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from pipeline.points import Point
from pipeline.sqlite_store import SQLiteStore


@pytest.fixture
async def store_file(tmp_path: Path) -> Path:
    path = tmp_path / "series.sqlite"
    store = SQLiteStore(path)
    await store.write([Point("pv", "h1", "inv1", "modbus", 1_780_000_000 * 10**9, {"power_w": 1.0})])
    await store.close()
    return path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def _serve(db: Path, store: Path, *extra: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    port = _port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hems", "serve", "--port", str(port), "--db", str(db),
        "--store", f"sqlite:{store}", *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        workers = int(extra[extra.index("--workers") + 1]) if "--workers" in extra else 1
        for _ in range(workers):  # every worker says when it listens
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
            assert f"127.0.0.1:{port}" in line.decode()
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), timeout=30)


async def _worker_pids(base: str, connections: int) -> set[int]:
    """The pid behind each of ``connections`` fresh connections (``/metrics`` names it)."""
    pids: set[int] = set()
    for _ in range(connections):
        async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as r:
            m = re.search(r'^hems_api_worker\{pid="(\d+)"\} 1(?:\.0)?$', await r.text(), re.M)
            assert m is not None
            pids.add(int(m.group(1)))
    return pids


async def test_fresh_deployment_answers_and_warns(tmp_path: Path, store_file: Path) -> None:
    """A fresh data dir (as a new deployment starts): ready, warning that no principals exist, and
    refusing without credentials."""
    db = tmp_path / "fresh" / "a.sqlite"
    async with _serve(db, store_file) as (proc, base), aiohttp.ClientSession() as http:
        async with http.get(f"{base}/readyz") as r:
            assert r.status == 200
        async with http.get(f"{base}/api/v1/households") as r:
            assert r.status == 401
    assert proc.stderr is not None
    assert "no principals yet" in (await proc.stderr.read()).decode()
    assert db.exists()


async def test_workers_share_the_port_and_stop_together(tmp_path: Path, store_file: Path) -> None:
    async with _serve(tmp_path / "a.sqlite", store_file, "--workers", "2") as (proc, base):
        pids = await _worker_pids(base, 40)  # the kernel spreads new connections over both
        assert len(pids) == 2 and proc.pid in pids
        child = (pids - {proc.pid}).pop()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


async def test_a_dead_worker_stops_the_service_loudly(tmp_path: Path, store_file: Path) -> None:
    async with _serve(tmp_path / "a.sqlite", store_file, "--workers", "2") as (proc, base):
        child = ((await _worker_pids(base, 40)) - {proc.pid}).pop()
        os.kill(child, signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 1
        assert proc.stderr is not None
        assert "exited with -9; stopping" in (await proc.stderr.read()).decode()


@pytest.mark.parametrize("bad", [["--workers", "0"], ["--page-cache-mb", "-1"]])
async def test_bad_options_are_refused_with_a_message(
    tmp_path: Path, store_file: Path, bad: list[str]
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hems", "serve", "--db", str(tmp_path / "a.sqlite"), *bad,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode == 1
    assert bad[0] in err.decode()
