"""The registries behind "one module and one line": refusals, scoped registration, derived views."""

from __future__ import annotations

import pytest

from devices.echonet.classes import DEVICE_KINDS
from protocols.echonet.classes import CLASSES
from protocols.echonet.codecs import Counter
from protocols.echonet.entry import EchonetClass, Prop
from protocols.errors import ProtocolError, RegistryError
from protocols.registry import Registry

HEAT_PUMP = EchonetClass(
    0x026B,
    "electric water heater",
    device="water_heater",
    category="electricity",
    props=(Prop(0xE0, "cumulative energy", Counter(), "import_wh_total", "Wh", poll="slow"),),
)


def test_a_key_is_registered_once() -> None:
    registry: Registry[int, str] = Registry("thing", len)
    registry.register("ab")
    with pytest.raises(RegistryError, match="thing 2 is already registered"):
        registry.register("cd")
    assert registry[2] == "ab" and list(registry) == [2] and 3 not in registry
    with pytest.raises(KeyError, match="no thing 3 is registered"):
        registry[3]
    with pytest.raises(RegistryError, match="not registered"):
        registry.unregister(3)


def test_temporary_registration_is_seen_inside_and_gone_after() -> None:
    before, version = list(CLASSES), CLASSES.version
    with CLASSES.temporarily(HEAT_PUMP):
        assert list(CLASSES)[-1] == 0x026B and CLASSES.version > version
        assert DEVICE_KINDS["water_heater"].eoj.hex() == "026b01"
    assert list(CLASSES) == before and "water_heater" not in DEVICE_KINDS


def test_a_broken_entry_is_refused_when_written() -> None:
    with pytest.raises(ProtocolError, match="share an EPC"):
        EchonetClass(1, "x", "x", "pv", (Prop(0xE0, "a", Counter()), Prop(0xE0, "b", Counter())))
    with pytest.raises(ProtocolError, match="without a unit"):
        EchonetClass(1, "x", "x", "pv", (Prop(0xE0, "a", Counter(), "energy_wh_total"),))
    with pytest.raises(ProtocolError, match="polled but means nothing"):
        EchonetClass(1, "x", "x", "pv", (Prop(0xE0, "a", Counter(), poll="fast"),))
