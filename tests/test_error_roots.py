"""One error root per package: ``except DeviceError`` / ``ProtocolError`` / ``CollectorError`` catches
everything that package raises on purpose, and every error keeps its old name and built-in base."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from collector.config import load
from collector.errors import (
    CollectorError,
    ConfigError,
    DeviceException,
    DeviceTimeout,
    DeviceUnreachable,
    MalformedReply,
    PollError,
)
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
        (ConfigError, CollectorError, Exception),
        (PollError, CollectorError, Exception),
        (DeviceTimeout, CollectorError, Exception),
        (DeviceUnreachable, CollectorError, Exception),
        (MalformedReply, CollectorError, Exception),
        (DeviceException, CollectorError, Exception),
    ],
)
def test_every_error_has_its_package_root(error: type, root: type, builtin: type) -> None:
    assert issubclass(error, root) and issubclass(error, builtin)


def test_the_roots_catch_what_each_package_raises(tmp_path: Path) -> None:
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
    with pytest.raises(CollectorError, match="cannot read"):
        load(tmp_path / "missing.toml")


class _Home:
    household_id = "hh-roots"

    def state(self) -> object:
        raise AssertionError("not read")
