"""``hems collect`` when the store is down for long, hung, or its spool cannot keep everything: polling
keeps its schedule, every reading is stored, kept in the spool or counted as lost by reason, the
exit summary says which, and ``/metrics`` shows it while it runs.

Real emulated homes (``devices.fleet.Fleet``) on loopback, the real collector and pipeline, real
SQLite files, a real TCP server that accepts and never answers (a hung InfluxDB), real small
filesystems (tests/volumes.py); the commands run as subprocesses where their exit is under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.runner import Collector
from devices.fleet import Fleet
from hems.collect import build_parser, pipeline_config, pump
from pipeline.influx_store import InfluxStore
from pipeline.spool import Spool
from pipeline.sqlite_store import SQLiteStore
from pipeline.writer import Pipeline
from tests.collector.conftest import config_for, controller_address, make_fleet
from tests.influx_server import free_port
from tests.volumes import Mount, fill


def stored_rows(path: Path) -> int:
    """Points in the embedded store's file (each reading is one point), counted by SQLite itself."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT count(*) FROM points").fetchone()[0])


@pytest.fixture
def hung_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers: a hung InfluxDB, as seen from us."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


async def test_long_outage_under_refuse_keeps_polling_and_counts_every_loss(tmp_path: Path) -> None:
    fleet = make_fleet(1)
    await fleet.start()
    vol = tmp_path / "store"
    store = SQLiteStore(vol / "hems.sqlite")
    await store.open()
    spool = Spool(tmp_path / "spool", max_bytes=3000, segment_bytes=1500)  # full within a second
    pipeline = Pipeline(store, spool=spool, batch_size=50, max_delay=0.05, replay_interval=0.1)
    await pipeline.start()
    collector = Collector(
        config_for(
            fleet, power_interval_s=0.2, counter_interval_s=0.4, queue_size=30, fixed_time_readings=False
        )
    )
    try:
        vol.rename(tmp_path / "gone")  # the outage lasts the whole run: far longer than the spool covers
        await collector.start()
        pumping = asyncio.create_task(pump(collector, pipeline, linger_s=0.05))
        await asyncio.sleep(1.5)
        polls_before = collector.scheduler.polls
        await asyncio.sleep(2.0)
        polls_late = collector.scheduler.polls - polls_before
        await collector.stop()
        stats = await pumping
        cstats = collector.stats()
        devices = len(collector.config.devices)
        # Polling kept its schedule the whole time: no poll waited for room, none fell behind.
        assert cstats["queue_waits"] == 0
        assert polls_late >= 0.7 * devices * 2.0 / 0.2, (polls_late, devices)
        assert cstats["lateness_p99_s"] < 0.5
        # What the spool could not keep was refused, counted once, by reason.
        assert stats.lost.get("spool_full", 0) > 0
        assert pipeline.stats.readings_accepted == stats.accepted
        assert stats.accepted == pipeline.stats.points_written + pipeline.stats.spooled_points
        produced = collector.readings_out
        assert produced == stats.accepted + stats.rejected + sum(stats.lost.values())
        (tmp_path / "gone").rename(vol)
        await pipeline.close()
        assert stored_rows(vol / "hems.sqlite") == stats.accepted  # every acknowledged one
    finally:
        await fleet.stop()
        await store.close()


async def test_a_hung_store_never_holds_up_polling(tmp_path: Path, hung_server: str) -> None:
    fleet = make_fleet(1)
    await fleet.start()
    store = InfluxStore(hung_server, "org", "bucket", "token")  # deployed defaults: 10 s x 4 attempts
    spool = Spool(tmp_path / "spool")
    pipeline = Pipeline(store, spool=spool, batch_size=200, max_delay=0.05)
    await pipeline.start()
    collector = Collector(
        config_for(
            fleet, power_interval_s=0.2, counter_interval_s=0.4, queue_size=30, fixed_time_readings=False
        )
    )
    try:
        await collector.start()
        pumping = asyncio.create_task(pump(collector, pipeline, linger_s=0.05))
        await asyncio.sleep(9.0)
        polls_now = collector.scheduler.polls
        cstats = collector.stats()
        # Nothing waited on the hung store: no poll waited for room in the queue, none was late ...
        assert cstats["queue_waits"] == 0
        assert cstats["lateness_p99_s"] < 0.5
        # ... and the readings were acknowledged from the spool within the writer's bound.
        assert spool.depth_points > 0.5 * collector.readings_out
        await collector.stop()
        stats = await pumping
        assert stats.accepted == collector.readings_out - stats.rejected
        assert polls_now > 0
    finally:
        await asyncio.wait_for(pipeline.close(), 30)
        await store.close()
        await fleet.stop()


# -- the command itself (subprocesses) --------------------------------------------------------------


def site_toml(fleet: Fleet, pipeline: str = "") -> str:
    """A ``--config`` file for ``hems collect``: the fleet's devices as [[households]] (what an
    installer writes), fast intervals, and the given ``[pipeline]`` lines."""
    config = config_for(fleet)
    lines = [
        "[collector]",
        "power_interval_s = 0.2",
        "counter_interval_s = 0.4",
        "timeout_s = 0.3",
        "backoff_base_s = 0.2",
        "backoff_max_s = 0.4",
        "discovery_wait_s = 0.2",
        f'echonet_bind = "{controller_address(fleet)}"',
        "echonet_multicast = false",
        "fixed_time_readings = false",
    ]
    homes: dict[str, list[str]] = {}
    for d in config.devices:
        entry = (
            f'{{ device = "{d.device}", protocol = "{d.protocol}", category = "{d.category}", '
            f'address = "{d.address}", port = {d.port}, '
            + (
                f"unit_id = {d.unit_id} }}"
                if d.protocol == "modbus"
                else f'eoj = "{d.eoj.hex() if d.eoj else ""}" }}'
            )
        )
        homes.setdefault(d.household, []).append(entry)
    for household, devices in homes.items():
        lines += ["[[households]]", f'id = "{household}"', 'address = "127.0.0.1"', "devices = ["]
        lines += [f"  {e}," for e in devices]
        lines += ["]"]
    return "\n".join(lines) + "\n[pipeline]\n" + pipeline


async def run_collect(
    fleet: Fleet,
    tmp_path: Path,
    *extra: str,
    pipeline: str = "",
    env: dict[str, str] | None = None,
    seconds: float = 5.0,
) -> tuple[int, str]:
    site = tmp_path / "site.toml"
    site.write_text(site_toml(fleet, pipeline))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hems",
        "collect",
        "--config",
        str(site),
        "--duration",
        str(seconds),
        *extra,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=seconds + 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


def summary_of(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("readings: ")]
    assert len(lines) == 1, stderr
    return lines[0]


async def test_drop_oldest_summary_is_true_and_losses_are_logged(tmp_path: Path) -> None:
    fleet = make_fleet(1)
    await fleet.start()
    closed = free_port()  # nothing listens there: InfluxDB is down for the whole run
    env = {
        "HEMS_INFLUX_URL": f"http://127.0.0.1:{closed}",
        "HEMS_INFLUX_ORG": "o",
        "HEMS_INFLUX_BUCKET": "b",
        "HEMS_INFLUX_TOKEN": "t",
    }
    try:
        code, err = await run_collect(
            fleet,
            tmp_path,
            "--data-dir",
            str(tmp_path / "var"),
            pipeline='spool_max_bytes = 40000\nspool_segment_bytes = 8000\nspool_policy = "drop_oldest"\n',
            seconds=9.0,
            env=env,
        )
    finally:
        await fleet.stop()
    line = summary_of(err)
    assert "Traceback" not in err
    # Nothing reached the store; what the spool dropped is lost, named, and not called stored.
    assert line.startswith("readings: 0 stored"), line
    assert "spool_dropped_oldest" in line
    assert "readings lost (spool_dropped_oldest)" in err
    assert code == 1  # readings were lost: said in the exit status too


async def test_collect_serves_metrics_with_spool_fill_and_losses(tmp_path: Path) -> None:
    fleet = make_fleet(1)
    await fleet.start()
    port = free_port()
    scraped: list[str] = []

    async def scrape() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await asyncio.sleep(0.3)
            try:
                body = await asyncio.to_thread(
                    lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
                )
            except OSError:
                continue
            if b'state="ok"' in body and b"hems_pipeline_points_written 0.0" not in body:
                scraped.append(body.decode())
                return

    try:
        scraping = asyncio.create_task(scrape())
        code, err = await run_collect(
            fleet, tmp_path, "--data-dir", str(tmp_path / "var"), "--metrics-port", str(port), seconds=6
        )
        await scraping
    finally:
        await fleet.stop()
    assert code == 0, err
    assert scraped, "no /metrics answer with device health while collecting"
    families = {f.name: f for f in text_string_to_metric_families(scraped[0])}
    states = {s.labels["state"]: s.value for s in families["hems_collector_devices"].samples}
    assert states.get("ok", 0) > 0
    for name in ("hems_spool_bytes", "hems_spool_max_bytes", "hems_spool_fill_ratio", "hems_store_up"):
        assert name in families, sorted(families)
    assert families["hems_spool_max_bytes"].samples[0].value == 256 * 1024 * 1024
    lost = {s.labels["reason"]: s.value for s in families["hems_readings_lost"].samples}
    assert {"spool_full", "spool_dropped_oldest", "spool_write_failed", "store_refused"} <= set(lost)
    assert all(v == 0 for v in lost.values())
    assert families["hems_pipeline_points_written"].samples[0].value > 0
    assert families["hems_spool_fill_warning"].samples[0].value == 0


NO_DEVICES = '[[households]]\nid = "h"\naddress = "127.0.0.1"\ndevices = []\n'


def test_spool_dir_given_is_spool_dir_used(tmp_path: Path) -> None:
    cfg = tmp_path / "hems.toml"
    cfg.write_text(f'{NO_DEVICES}[pipeline]\nspool_dir = "{tmp_path / "elsewhere"}"\n')
    args = build_parser().parse_args(["--config", str(cfg), "--data-dir", str(tmp_path / "var")])
    got = pipeline_config(args)
    assert got.spool_dir == str(tmp_path / "elsewhere")  # given: used
    assert got.sqlite_path == str(tmp_path / "var" / "hems.sqlite")  # not given: under --data-dir
    assert got.counter_state_path == str(tmp_path / "var" / "counter_state.sqlite")


def test_read_only_spool_directory_is_one_line_naming_the_setting(
    tmp_path: Path, small_volume: Mount
) -> None:
    vol = small_volume("64k", read_only=True, populate=lambda v: (v / "spool").mkdir())
    cfg = tmp_path / "hems.toml"
    cfg.write_text(f'{NO_DEVICES}[pipeline]\nspool_dir = "{vol / "spool"}"\n')

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hems",
            "collect",
            "--config",
            str(cfg),
            "--data-dir",
            str(tmp_path / "var"),
            "--duration",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "pipeline.spool_dir" in lines[0] and "ead-only" in lines[0]


async def test_stop_with_a_full_spool_volume_is_clean(tmp_path: Path, small_volume: Mount) -> None:
    """The store goes away, the spool's volume fills to the last byte, the store comes back (replay
    cannot even write its cursor), then the command is stopped: it ends with its summary, no
    traceback, and the summary's stored and kept counts are what the store and the spool hold."""
    fleet = make_fleet(1)
    await fleet.start()
    spool_vol = small_volume("160k")
    store_dir = tmp_path / "store"
    cfg = tmp_path / "hems.toml"
    cfg.write_text(
        site_toml(fleet) + f'sqlite_path = "{store_dir / "hems.sqlite"}"\n'
        f'counter_state_path = "{tmp_path / "state.sqlite"}"\n'
        f'spool_dir = "{spool_vol / "spool"}"\n'
        "spool_segment_bytes = 8192\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hems", "collect", "--config", str(cfg), "--data-dir", str(tmp_path / "var"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []

    async def read_stderr() -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            lines.append(raw.decode())

    reader = asyncio.create_task(read_stderr())
    try:
        for _ in range(300):  # until it collects (start-up takes a while on a loaded machine)
            await asyncio.sleep(0.1)
            if any(line.startswith("collecting ") for line in lines):
                break
        await asyncio.sleep(1.5)
        store_dir.rename(tmp_path / "gone")  # the store's disk goes away
        for _ in range(100):
            await asyncio.sleep(0.1)
            if len(list((spool_vol / "spool").glob("*.seg"))) >= 2:
                break
        fill(spool_vol)  # and the spool's volume fills to the last byte
        await asyncio.sleep(1.5)
        (tmp_path / "gone").rename(store_dir)  # the store comes back
        await asyncio.sleep(3.0)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), timeout=60)
        await reader
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await fleet.stop()
    err = "".join(lines)
    assert "Traceback" not in err, err
    line = summary_of(err)
    assert err.strip().splitlines()[-1] == line  # the summary is the last word
    assert "spool_write_failed" in line  # readings the full volume could not take: named
    assert proc.returncode == 1
    stored, kept = (int(line.split(" stored")[0].split()[-1]), int(line.split(" kept")[0].split()[-1]))
    assert stored == stored_rows(store_dir / "hems.sqlite")
    with Spool(spool_vol / "spool") as left:  # what was kept is intact, readable and as counted
        assert left.depth_points == kept
        while (found := left.peek_record()) is not None:
            assert left.commit(found[0])
