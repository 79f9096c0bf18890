"""``hems collect`` moves what the devices say into the store: the whole data flow, real sockets."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from collector.config import from_manifest
from collector.runner import Collector
from devices.fleet import Fleet
from hems.collect import pump
from pipeline.query import SeriesQuery
from pipeline.sqlite_store import SQLiteStore
from pipeline.writer import Pipeline
from tests.loopback import free_port, free_prefix

NOON_JST = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)
QUIET = {"multicast": False, "announce_interval_s": None}


async def test_pump_stores_every_category_of_every_home(tmp_path: Path) -> None:
    net = free_prefix()
    fleet = Fleet(2, 11, speed=60, start=NOON_JST, modbus_port=0, address_prefix=net, echonet_options=QUIET)
    await fleet.start()
    store = SQLiteStore(str(tmp_path / "hems.sqlite"))
    pipeline = Pipeline(store, max_delay=0.1)
    await pipeline.start()
    config = from_manifest(
        fleet.manifest(),
        "test",
        power_interval_s=0.3,
        counter_interval_s=0.3,
        echonet_bind=f"{net}.255.1",
        echonet_multicast=False,
        timeout_s=0.5,
    )
    collector = Collector(config)
    try:
        await collector.start()
        pumping = asyncio.create_task(pump(collector, pipeline, linger_s=0.05))
        await asyncio.sleep(2.0)
        await collector.stop()
        stats = await pumping
        await pipeline.close()
        assert stats.accepted > 0 and stats.lost == {}
        assert stats.accepted == pipeline.stats.readings_accepted
        now = datetime.now(UTC)
        households = tuple(h.household_id for h in fleet.homes)
        expected = {
            "electricity": ("power_w", {"smart_meter", "meter"}),
            "pv": ("power_w", {"solar", "inverter"}),
            "battery": ("soc_pct", {"battery", "storage"}),
            "water": ("volume_l_total", {"water_meter"}),
            "gas": ("volume_l_total", {"gas_meter"}),
            "external_generation": ("power_w", {"fuel_cell"}),
            "ev": ("power_w", {"ev_charger"}),
        }
        for category, (field, devices) in expected.items():
            q = SeriesQuery(
                households, category, (field,), now - timedelta(days=400), now + timedelta(days=400)
            )
            df = await store.query(q)
            assert set(df["household"].unique()) == set(households), category
            assert set(df["device"].unique()) == devices, category
        pv = await store.query(
            SeriesQuery(households, "pv", ("power_w",), now - timedelta(days=400), now + timedelta(days=400))
        )
        assert pv["power_w"].max() > 0  # noon in Tokyo: the sun is up
    finally:
        await fleet.stop()
        await store.close()


def test_hems_collect_subprocess_writes_the_embedded_store(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    net = free_prefix()  # this run's own loopback /16 and Modbus port: two test runs at once never meet
    devices = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hems",
            "devices",
            "--homes",
            "1",
            "--seed",
            "3",
            "--speed",
            "60",
            "--address-prefix",
            net,
            "--modbus-port",
            str(free_port()),
            "--manifest",
            str(manifest),
            "--duration",
            "20",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(200):
            if manifest.exists() and manifest.stat().st_size > 0:
                break
            if devices.poll() is not None:
                raise AssertionError(devices.communicate()[1])
            subprocess.run(["sleep", "0.1"], check=True)
        json.loads(manifest.read_text())
        metrics_port = free_port()
        collect = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hems",
                "collect",
                "--manifest",
                str(manifest),
                "--data-dir",
                str(tmp_path / "var"),
                "--power-interval",
                "0.5",
                "--counter-interval",
                "1",
                "--echonet-bind",
                f"{net}.255.1",
                "--duration",
                "4",
                "--metrics-port",
                str(metrics_port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        scraped = ""
        for _ in range(60):  # the gateway's own /metrics: device health and pipeline counters
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as r:
                    scraped = r.read().decode()
                if (
                    'hems_collector_devices{state="ok"}' in scraped
                    and "hems_pipeline_points_written" in scraped
                ):
                    break
            except OSError:
                pass
            time.sleep(0.1)
        assert 'hems_collector_devices{state="ok"}' in scraped, scraped
        assert "hh-" not in scraped  # counted by state, never labelled with a household
        out, err = collect.communicate(timeout=60)
        done = subprocess.CompletedProcess(collect.args, collect.returncode, out, err)
        assert done.returncode == 0, done.stderr
        assert " 0 lost" in done.stderr.strip().splitlines()[-1]
        stored = int(done.stderr.split("readings: ")[1].split(" stored")[0])
        assert stored > 0
        assert (tmp_path / "var" / "hems.sqlite").exists()
    finally:
        devices.terminate()
        devices.wait(timeout=30)


def test_hems_collect_refuses_influx_without_credentials(tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"version": 1, "homes": []}))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hems",
            "collect",
            "--manifest",
            str(manifest),
            "--data-dir",
            str(tmp_path),
            "--influx-url",
            "http://127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode == 2
    assert "HEMS_INFLUX_TOKEN" in done.stderr
