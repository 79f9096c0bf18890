"""Configuration from a TOML file or a ``hems devices`` manifest, and clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collector.config import ConfigError, load
from devices.fleet import Fleet
from protocols.echonet.frame import EOJ
from tests.loopback import free_prefix

GOOD_TOML = """
[collector]
power_interval_s = 5
timeout_s = 0.5

[[households]]
id = "hh-0000000001"
address = "127.10.0.1"
devices = [
  { device = "meter", protocol = "modbus", unit_id = 2, category = "electricity", power_sign = -1 },
  { device = "smart_meter", protocol = "echonet", eoj = "028801", category = "electricity" },
  { device = "water_meter", protocol = "echonet", eoj = "028101", category = "water" },
]
"""


def test_toml_defaults_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "collector.toml"
    path.write_text(GOOD_TOML)
    cfg = load(path)
    meter, smart, water = cfg.devices
    assert (meter.protocol, meter.unit_id, meter.port, meter.power_sign) == ("modbus", 2, 5020, -1)
    assert meter.interval_s == 5.0 and meter.counter_interval_s == 60.0
    assert smart.eoj == EOJ(0x02, 0x88, 0x01) and smart.port == 3610
    assert water.interval_s == 60.0  # counters only: polled on the counter interval
    assert cfg.timeout_s == 0.5 and cfg.rediscovery_s == 3600.0


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (("unit_id = 2", "unit_id = 300"), "households[0].devices[0].unit_id"),
        (('eoj = "028801"', 'eoj = "0288"'), "households[0].devices[1].eoj"),
        (('category = "water"', 'category = "steam"'), "households[0].devices[2].category"),
        (("power_sign = -1", "power_sign = 2"), "households[0].devices[0].power_sign"),
        (("timeout_s = 0.5", "timeout_s = -1"), "collector.timeout_s"),
        (("timeout_s = 0.5", "timeuot_s = 1"), "collector.timeuot_s"),
        (('protocol = "modbus"', 'protocol = "bacnet"'), "households[0].devices[0].protocol"),
        (('address = "127.10.0.1"', ""), "households[0].address"),
    ],
)
def test_bad_toml_names_file_and_key(tmp_path: Path, change: tuple[str, str], where: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(GOOD_TOML.replace(*change))
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(path) in str(info.value) and where in str(info.value)


def test_unparseable_files(tmp_path: Path) -> None:
    (tmp_path / "x.toml").write_text("[collector\n")
    with pytest.raises(ConfigError, match="not TOML"):
        load(tmp_path / "x.toml")
    (tmp_path / "m.json").write_text("{")
    with pytest.raises(ConfigError, match="not JSON"):
        load(tmp_path / "m.json")
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml")


def test_manifest_lists_every_device(tmp_path: Path) -> None:
    net = free_prefix()
    fleet = Fleet(3, 7, speed=0, address_prefix=net)  # not started: the manifest is enough
    path = fleet.write_manifest(tmp_path / "manifest.json")
    cfg = load(path, power_interval_s=2.0)
    assert len(cfg.devices) == 3 * 10
    by_key = {d.key: d for d in cfg.devices}
    hid = fleet.homes[1].household_id
    assert by_key[f"{hid}/storage"].unit_id == 3 and by_key[f"{hid}/storage"].address == f"{net}.0.2"
    assert by_key[f"{hid}/ev_charger"].eoj == EOJ(0x02, 0x7E, 0x01)
    assert by_key[f"{hid}/solar"].interval_s == 2.0
    assert by_key[f"{hid}/gas_meter"].interval_s == 60.0

    data = json.loads(path.read_text())
    data["version"] = 2
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="version"):
        load(path)
    data["version"] = 1
    del data["homes"][2]["modbus"]["devices"][0]["unit_id"]
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"homes\[2\]\.modbus\.devices\[0\]\.unit_id: missing"):
        load(path)
