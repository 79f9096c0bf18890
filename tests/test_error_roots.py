"""One error root per package: ``except DeviceError`` / ``ProtocolError`` / ``CollectorError`` catches
everything that package raises on purpose, and every error keeps its old name and built-in base."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from collector.errors import (
    CollectorError,
    DeviceException,
    DeviceTimeout,
    DeviceUnreachable,
    MalformedReply,
    PollError,
)
from collector.sunspec_client import ModbusPool
from devices.clock import SimClock, SimulationError
from devices.control import FaultSpecError
from devices.echonet.home import build_home_node
from devices.errors import DeviceError, DeviceSettingsError
from devices.fleet import Fleet, FleetError, UnknownHouseholdError
from devices.home import UnknownDeviceError
from protocols.echonet.codecs import MissingParam
from protocols.echonet.frame import FrameError, decode
from protocols.errors import ProtocolError, RegistryError
from protocols.sunspec.models import MODELS
from protocols.sunspec.points import SunSpecValueError, encode
from tests.loopback import free_port


@pytest.mark.parametrize(
    ("error", "root", "builtin"),
    [
        (SimulationError, DeviceError, ValueError),
        (DeviceSettingsError, DeviceError, ValueError),
        (FaultSpecError, DeviceError, ValueError),
        (FleetError, DeviceError, RuntimeError),
        (UnknownHouseholdError, DeviceError, KeyError),
        (UnknownDeviceError, DeviceError, KeyError),
        (FrameError, ProtocolError, ValueError),
        (MissingParam, ProtocolError, ValueError),
        (SunSpecValueError, ProtocolError, ValueError),
        (RegistryError, ProtocolError, ValueError),
        (PollError, CollectorError, Exception),
        (DeviceTimeout, CollectorError, Exception),
        (DeviceUnreachable, CollectorError, Exception),
        (MalformedReply, CollectorError, Exception),
        (DeviceException, CollectorError, Exception),
    ],
)
def test_every_error_has_its_package_root(error: type, root: type, builtin: type) -> None:
    assert issubclass(error, root) and issubclass(error, builtin)


def test_the_roots_catch_what_each_package_raises() -> None:
    with pytest.raises(DeviceError, match="homes"):
        Fleet(0, 1)
    with pytest.raises(DeviceError, match="timezone-aware"):
        SimClock(datetime(2026, 1, 1))
    with pytest.raises(DeviceError, match="unknown settings"):
        build_home_node("127.0.0.1", _Home(), {}, {"smart_meter": {"digitz": 5}})
    with pytest.raises(ProtocolError, match="too short"):
        decode(b"\x10\x81")
    with pytest.raises(ProtocolError, match="outside"):
        encode(MODELS[103].point("W"), 40_000)
    with pytest.raises(ProtocolError, match="already registered"):
        MODELS.register(MODELS[103])


async def test_the_collector_root_catches_a_failed_read() -> None:
    port = free_port()  # free, and nothing listens there
    pool = ModbusPool(timeout_s=0.5)
    try:
        with pytest.raises(CollectorError, match="refused"):
            await pool.read("127.0.0.1", port, 1, 40000, 2)
    finally:
        await pool.close()


class _Home:
    household_id = "hh-roots"

    def state(self) -> object:
        raise AssertionError("not read")


def test_the_hems_command_reports_an_emulator_error_in_one_line(tmp_path: Path) -> None:
    """``hems demo`` with homes it cannot build: one sentence and exit 2, not a FleetError traceback."""
    options = ["--address-prefix", "10.0", "--history-days", "0", "--data-dir", str(tmp_path / "demo")]
    done = subprocess.run(
        [sys.executable, "-m", "hems", "demo", *options, "--port", "0", "--duration", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "hems demo: address_prefix must be '127.N' (loopback only), got '10.0'"
    ]
