"""A third-party ECHONET Lite device read by our collector: KAIT's `echonet-lite` (npm 2.16.2, from the
group that publishes the machine-readable appendix) serving a low-voltage smart meter with its own Get
handling, node profile and instance list.  The property values are a meter's as a B-route dump shows
them (values of our own, in a real meter's shapes; the fixed-time record is stamped at this run's latest
half hour so the collector's clock check accepts it).

The package is installed by ``scripts/test.sh`` (``scripts/interop_npm.sh``, into ``./.interop``); the
test installs it itself when it is missing and is skipped only when npm is not installed.  The device
listens on a loopback address chosen per run (KAIT needs port 3610 there, and drops anything coming
from 127.0.0.1, so the collector uses another address of the same run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.config import CollectorConfig, DeviceConfig
from collector.runner import Collector
from protocols.echonet.codecs import JST
from protocols.echonet.frame import EOJ, encode_property_map, pack_int, pack_uint
from tests.collector.test_collector_profiles import collect
from tests.loopback import free_prefix

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / ".interop" / "node" / "node_modules"
NET = free_prefix()
DEVICE, COLLECTOR = f"{NET}.254.1", f"{NET}.254.2"


def _hex(data: bytes) -> list[int]:
    return list(data)


def meter_details(stamp: datetime) -> dict[str, dict[str, list[int]]]:
    local = stamp.astimezone(JST)
    fixed = pack_uint(local.year, 2) + bytes((local.month, local.day, local.hour, local.minute, 0))
    props: dict[int, bytes] = {
        0x80: b"\x30", 0x81: b"\x00", 0x82: b"\x00\x00\x50\x01", 0x88: b"\x42", 0x8A: b"\x00\x00\x16",
        0x83: b"\xfe\x00\x00\x16" + bytes(range(1, 14)), 0x97: bytes((local.hour, local.minute)),
        0x98: pack_uint(local.year, 2) + bytes((local.month, local.day)),
        0xD3: pack_uint(1, 4), 0xD7: b"\x06", 0xE1: b"\x01",  # coefficient 1, 6 digits, 0.1 kWh
        0xE0: pack_uint(77_195, 4), 0xE3: pack_uint(333, 4), 0xE5: b"\x00",
        0xE7: pack_int(560, 4), 0xE8: pack_int(30, 2) + pack_int(26, 2),  # 560 W; 3.0 A and 2.6 A
        0xEA: fixed + pack_uint(77_190, 4), 0xEB: fixed + pack_uint(333, 4),
    }  # fmt: skip
    props[0x9D] = encode_property_map((0x80, 0x81, 0x88))
    props[0x9E] = encode_property_map((0x81, 0xE5))
    props[0x9F] = encode_property_map((*props, 0x9F))
    return {"028801": {f"{epc:02x}": _hex(edt) for epc, edt in props.items()}}


@pytest.fixture(scope="module")
def node_modules() -> Path:
    if not (MODULES / "echonet-lite").is_dir() or not (MODULES / "date-utils").is_dir():
        if shutil.which("npm") is None or shutil.which("node") is None:
            pytest.skip("npm is not installed: KAIT's echonet-lite (an npm package) cannot be installed")
        subprocess.run(["bash", str(ROOT / "scripts" / "interop_npm.sh")], check=True, timeout=300)
    return MODULES


@pytest.fixture
def kait_meter(node_modules: Path, tmp_path: Path) -> Iterator[datetime]:
    now = datetime.now(UTC)
    stamp = now.replace(minute=30 if now.minute >= 30 else 0, second=0, microsecond=0)
    details = tmp_path / "meter.json"
    details.write_text(json.dumps(meter_details(stamp)))
    proc = subprocess.Popen(
        ["node", str(Path(__file__).with_name("kait_device.js")), DEVICE, str(details)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NODE_PATH": str(node_modules)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", (line, proc.stderr.read() if proc.stderr else "")
        yield stamp
    finally:
        proc.terminate()
        proc.wait(10)


async def test_our_collector_reads_a_kait_smart_meter(kait_meter: datetime) -> None:
    device = DeviceConfig(
        "hh-kait", "smart_meter", "electricity", "echonet", DEVICE, 3610, 0.3, 0.3, eoj=EOJ(0x02, 0x88, 0x01)
    )
    collector = Collector(
        CollectorConfig((device,), echonet_bind=COLLECTOR, echonet_multicast=False, timeout_s=1.0)
    )
    readings = await collect(collector, 1.5)
    assert collector.discovery.nodes[DEVICE] == (EOJ(0x02, 0x88, 0x01),)  # KAIT's own node profile
    health = collector.health()["hh-kait/smart_meter"]
    assert health.reason == "ok", health
    live = [r for r in readings if "power_w" in r.fields]
    assert live and live[-1].fields["power_w"] == 560
    counters = {k: v for r in readings if r.ts_utc > kait_meter for k, v in r.fields.items()}
    assert counters["import_wh_total"] == 7_719_500 and counters["export_wh_total"] == 33_300
    stamped = [r for r in readings if r.ts_utc == kait_meter]
    assert {k: v for r in stamped for k, v in r.fields.items()} == {
        "import_wh_total": 7_719_000,
        "export_wh_total": 33_300,
    }
    assert all(r.counter_wrap.get("import_wh_total", 1e8) == 1e8 for r in readings)  # 10**6 x 0.1 kWh
    assert datetime.now(UTC) - kait_meter < timedelta(minutes=31)
