"""``hems serve`` as a real process over the embedded store: one worker, several, and a worker dying."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from pipeline.points import Point
from pipeline.sqlite_store import SQLiteStore
from tests.loopback import free_port


@pytest.fixture
async def store_file(tmp_path: Path) -> Path:
    path = tmp_path / "series.sqlite"
    store = SQLiteStore(path)
    await store.write([Point("pv", "h1", "inv1", "modbus", 1_780_000_000 * 10**9, {"power_w": 1.0})])
    await store.close()
    return path


@asynccontextmanager
async def _serve(db: Path, store: Path, *extra: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hems", "serve", "--port", str(port), "--db", str(db),
        "--store", f"sqlite:{store}", *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        workers = int(extra[extra.index("--workers") + 1]) if "--workers" in extra else 1
        scheme = "https" if "--tls-cert" in extra else "http"
        for _ in range(workers):  # every worker says when it listens
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
            assert f"{scheme}://127.0.0.1:{port}" in line.decode()
        yield proc, f"{scheme}://127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), timeout=30)


async def _worker_pids(base: str, connections: int) -> set[int]:
    """The pid behind each of ``connections`` fresh connections (``/metrics`` says who answered)."""
    pids: set[int] = set()
    for _ in range(connections):
        async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as r:
            pids.add(int(r.headers["X-Hems-Worker"]))
    return pids


def _sample(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+]+)$", text, re.M)
    return 0.0 if m is None else float(m.group(1))


async def test_one_scrape_sees_every_worker(tmp_path: Path, store_file: Path) -> None:
    """With two workers, a scrape answered by either one counts the requests both served (the old
    /metrics counted only the answering worker's), and lists both workers."""
    async with _serve(tmp_path / "a.sqlite", store_file, "--workers", "2") as (proc, base):
        answered: dict[int, int] = {}
        for _ in range(60):  # fresh connections: the kernel spreads them over both workers
            async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz") as r:
                assert r.status == 200
            async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as r:
                pid = int(r.headers["X-Hems-Worker"])
                answered[pid] = answered.get(pid, 0) + 1
        assert len(answered) == 2  # both workers answered some of them
        healthz = '{method="GET",route="/healthz",status="200"}'
        deadline = asyncio.get_running_loop().time() + 10
        while True:  # each worker writes its totals every second
            async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as r:
                text = await r.text()
            if (
                _sample(text, "hems_api_requests_total", healthz) == 60
                or asyncio.get_running_loop().time() > deadline
            ):
                break
            await asyncio.sleep(0.3)
        assert _sample(text, "hems_api_requests_total", healthz) == 60
        # The scrapes are counted too, from both workers (the other's last second may be pending).
        scrapes = _sample(text, "hems_api_requests_total", '{method="GET",route="/metrics",status="200"}')
        assert scrapes > max(answered.values())
        workers = set(re.findall(r'^hems_api_worker\{pid="(\d+)"\} 1\.0$', text, re.M))
        assert {int(p) for p in workers} == set(answered) and proc.pid in answered
        assert _sample(text, "hems_api_request_seconds_count") >= 60 + scrapes
        assert text.count("# TYPE hems_api_requests_total counter") == 1  # one family, not one per worker


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


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 made by the openssl command line tool, valid for a day."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


async def test_tls_is_served_with_hsts(tmp_path: Path, store_file: Path) -> None:
    cert, key = _self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    args = ("--tls-cert", str(cert), "--tls-key", str(key))
    async with (
        _serve(tmp_path / "a.sqlite", store_file, *args) as (_proc, base),
        aiohttp.ClientSession() as http,
    ):
        async with http.get(f"{base}/healthz", ssl=trust) as r:
            assert r.status == 200
            assert r.headers["Strict-Transport-Security"] == "max-age=31536000"
        async with http.get(f"{base}/", ssl=trust, allow_redirects=False) as r:
            assert r.status == 303 and "Strict-Transport-Security" in r.headers


@pytest.mark.parametrize(
    "bad", [["--workers", "0"], ["--page-cache-mb", "-1"], ["--tls-cert", "/nonexistent/cert.pem"]]
)
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
