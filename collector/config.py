"""Which devices to poll and how often: from one TOML file or from the manifest ``hems devices`` writes.

Both sources end up as the same frozen ``CollectorConfig`` so nothing downstream cares where a
device came from.  The file is read and the ``[collector]`` options are checked by the one
configuration loader (``config``: the option types are ``CollectorConfig``'s field types); every
problem is reported as its ``ConfigError`` naming the file and the key path
(``households[3].devices[1].unit_id``), because "invalid config" without a location costs an
installer an afternoon.

TOML layout (every key but the household id, address and the device list is optional)::

    [collector]
    power_interval_s = 10      # devices with an instantaneous power
    counter_interval_s = 60    # counters-only devices, and the counter EPCs of the others
    rediscovery_s = 3600
    timeout_s = 1.0
    echonet_bind = "127.0.0.1"

    [[households]]
    id = "hh-0123456789"
    address = "127.10.0.1"
    modbus_port = 5020
    devices = [
      { device = "meter", protocol = "modbus", unit_id = 2, category = "electricity", power_sign = -1 },
      { device = "smart_meter", protocol = "echonet", eoj = "028801", category = "electricity" },
    ]
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import config
from collector.errors import ConfigError
from protocols.echonet.frame import EOJ, PORT, FrameError
from seeds.vocabulary import SERIES_CATEGORIES

POWER_INTERVAL_S = 10.0
COUNTER_INTERVAL_S = 60.0
REDISCOVERY_S = 3600.0
COUNTER_ONLY = frozenset({"water", "gas"})
CATEGORIES = frozenset(SERIES_CATEGORIES)


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    household: str
    device: str
    category: str
    protocol: str  # "modbus" | "echonet"
    address: str
    port: int
    interval_s: float
    counter_interval_s: float
    unit_id: int | None = None
    eoj: EOJ | None = None
    models: tuple[int, ...] = ()
    power_sign: int = 1  # flips W for vendors whose meter says + = export
    # Unique id of the device in the whole collector (health, stats, jitter): ``household/device``,
    # made once (every poll looks a device up by it)
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.household}/{self.device}")


@dataclass(frozen=True)
class CollectorConfig:
    devices: tuple[DeviceConfig, ...]
    echonet_bind: str = "127.0.0.1"
    echonet_port: int = PORT
    echonet_multicast: bool = True
    listen_multicast: bool = False
    rediscovery_s: float = REDISCOVERY_S
    discovery_wait_s: float = 0.5
    timeout_s: float = 1.0
    max_in_flight: int = 512
    max_in_flight_per_host: int = 4
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    queue_size: int = 10_000
    drop_when_full: bool = False  # False: a full queue slows polling (visible as lateness)
    shutdown_grace_s: float = 2.0
    # Also emit the meter's fixed-time values (0xEA/0xEB) at the meter's own timestamp.  Off when the
    # devices' clock is not the wall clock (an emulator running faster than real time).
    fixed_time_readings: bool = True
    # Each device's health goes into the reading stream (category ``equipment``) when it changes and
    # again every this many seconds while it does not (0: never), so whoever reads the store can tell
    # a healthy device from a collector that stopped reporting.
    health_interval_s: float = 60.0
    # How far a device's own timestamp may be ahead of the collector's clock, or behind it beyond what
    # the value is (the meter's fixed-time record: up to 30 minutes old); beyond, the value is refused.
    clock_skew_s: float = 300.0
    source: str = ""  # file it came from, for messages

    def with_options(self, **changes: Any) -> CollectorConfig:
        return replace(self, **changes)


# The settable options: every field but the device list and the file name (their types are the check).
_NOT_OPTIONS = ("devices", "source")
# [collector] keys that are defaults for the devices rather than options of the collector.
_INTERVALS: dict[str, Any] = {"power_interval_s": float, "counter_interval_s": float}


class _Ctx:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> ConfigError:
        section, _, key = where.rpartition(".")
        return ConfigError(message, file=self.source, section=section or None, key=key)

    def get(self, table: Mapping[str, Any], key: str, where: str, kind: Any, default: Any = ...) -> Any:
        """``table[key]`` checked against ``kind`` (a type the loader knows: ``float`` takes any number)."""
        if key not in table:
            if default is ...:
                raise self.fail(f"{where}.{key}" if where else key, "missing")
            return default
        return config.check_value(table[key], kind, file=self.source, section=where or None, key=key)

    def positive(self, value: float, where: str) -> float:
        if not value > 0:
            raise self.fail(where, f"must be > 0, got {value!r}")
        return float(value)


def _options(ctx: _Ctx, table: Mapping[str, Any]) -> dict[str, Any]:
    out = config.settings(
        CollectorConfig, table, file=ctx.source, section="collector", exclude=_NOT_OPTIONS, extra=_INTERVALS
    )
    for key, value in out.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            ctx.positive(value, f"collector.{key}")
    return {k: v for k, v in out.items() if k not in _INTERVALS}


def _device(
    ctx: _Ctx,
    d: Mapping[str, Any],
    where: str,
    household: str,
    address: str,
    defaults: Mapping[str, Any],
) -> DeviceConfig:
    device = ctx.get(d, "device", where, str)
    protocol = ctx.get(d, "protocol", where, str, defaults.get("protocol", ...))
    if protocol not in ("modbus", "echonet"):
        raise ctx.fail(f"{where}.protocol", f"must be 'modbus' or 'echonet', got {protocol!r}")
    category = ctx.get(d, "category", where, str)
    if category not in CATEGORIES:
        raise ctx.fail(f"{where}.category", f"unknown category {category!r}; known: {sorted(CATEGORIES)}")
    power_iv = ctx.positive(ctx.get(d, "interval_s", where, float, defaults["power"]), f"{where}.interval_s")
    counter_iv = ctx.positive(
        ctx.get(d, "counter_interval_s", where, float, defaults["counter"]),
        f"{where}.counter_interval_s",
    )
    interval = counter_iv if category in COUNTER_ONLY and "interval_s" not in d else power_iv
    sign = ctx.get(d, "power_sign", where, int, 1)
    if sign not in (1, -1):
        raise ctx.fail(f"{where}.power_sign", f"must be 1 or -1, got {sign!r}")
    addr = ctx.get(d, "address", where, str, address)
    if protocol == "modbus":
        unit = ctx.get(d, "unit_id", where, int)
        if not 0 <= unit <= 247:
            raise ctx.fail(f"{where}.unit_id", f"must be 0..247, got {unit}")
        port = ctx.get(d, "port", where, int, defaults["modbus_port"])
        models = ctx.get(d, "models", where, list, [])
        return DeviceConfig(
            household,
            device,
            category,
            protocol,
            addr,
            port,
            interval,
            counter_iv,
            unit_id=unit,
            models=tuple(int(m) for m in models),
            power_sign=sign,
        )
    eoj_text = ctx.get(d, "eoj", where, str)
    try:
        eoj = EOJ.from_hex(eoj_text)
    except FrameError as exc:
        raise ctx.fail(f"{where}.eoj", str(exc)) from None
    port = ctx.get(d, "port", where, int, defaults["echonet_port"])
    return DeviceConfig(
        household, device, category, protocol, addr, port, interval, counter_iv, eoj=eoj, power_sign=sign
    )


def from_toml_dict(data: Mapping[str, Any], source: str = "<toml>") -> CollectorConfig:
    ctx = _Ctx(source)
    coll = ctx.get(data, "collector", "", dict, {})
    options = _options(ctx, coll)  # checks the intervals too
    defaults = {
        "power": float(coll.get("power_interval_s", POWER_INTERVAL_S)),
        "counter": float(coll.get("counter_interval_s", COUNTER_INTERVAL_S)),
    }
    homes = ctx.get(data, "households", "", list)
    devices: list[DeviceConfig] = []
    for i, home in enumerate(homes):
        where = f"households[{i}]"
        if not isinstance(home, dict):
            raise ctx.fail(where, "expected a table")
        hid = ctx.get(home, "id", where, str)
        address = ctx.get(home, "address", where, str)
        per_home = {
            **defaults,
            "modbus_port": ctx.get(home, "modbus_port", where, int, 5020),
            "echonet_port": ctx.get(home, "echonet_port", where, int, PORT),
        }
        for j, d in enumerate(ctx.get(home, "devices", where, list)):
            if not isinstance(d, dict):
                raise ctx.fail(f"{where}.devices[{j}]", "expected a table")
            devices.append(_device(ctx, d, f"{where}.devices[{j}]", hid, address, per_home))
    return _finish(ctx, devices, options, source)


def from_manifest(
    data: Mapping[str, Any],
    source: str = "<manifest>",
    power_interval_s: float = POWER_INTERVAL_S,
    counter_interval_s: float = COUNTER_INTERVAL_S,
    **options: Any,
) -> CollectorConfig:
    """The manifest of ``devices.fleet`` (version 1): every listed ECHONET object and Modbus unit."""
    ctx = _Ctx(source)
    version = ctx.get(data, "version", "", int)
    if version != 1:
        raise ctx.fail("version", f"unsupported manifest version {version} (this collector reads 1)")
    defaults = {"power": power_interval_s, "counter": counter_interval_s}
    devices: list[DeviceConfig] = []
    for i, home in enumerate(ctx.get(data, "homes", "", list)):
        where = f"homes[{i}]"
        hid = ctx.get(home, "household", where, str)
        address = ctx.get(home, "address", where, str)
        echonet = ctx.get(home, "echonet", where, dict, None)
        if echonet is not None:
            per = {
                **defaults,
                "protocol": "echonet",
                "echonet_port": ctx.get(echonet, "port", f"{where}.echonet", int, PORT),
            }
            for j, o in enumerate(ctx.get(echonet, "objects", f"{where}.echonet", list)):
                devices.append(_device(ctx, o, f"{where}.echonet.objects[{j}]", hid, address, per))
        modbus = ctx.get(home, "modbus", where, dict, None)
        if modbus is not None:
            per = {
                **defaults,
                "protocol": "modbus",
                "modbus_port": ctx.get(modbus, "port", f"{where}.modbus", int),
            }
            for j, m in enumerate(ctx.get(modbus, "devices", f"{where}.modbus", list)):
                devices.append(_device(ctx, m, f"{where}.modbus.devices[{j}]", hid, address, per))
    return _finish(ctx, devices, options, source)


def _finish(ctx: _Ctx, devices: list[DeviceConfig], options: dict[str, Any], source: str) -> CollectorConfig:
    seen: set[str] = set()
    for d in devices:
        if d.key in seen:
            raise ctx.fail(d.key, "device listed twice")
        seen.add(d.key)
    checked = config.settings(CollectorConfig, options, file=source, section="options", exclude=_NOT_OPTIONS)
    return CollectorConfig(devices=tuple(devices), source=source, **checked)


def load(path: str | Path, **options: Any) -> CollectorConfig:
    """A ``.toml`` collector config, or a ``.json`` manifest from ``hems devices``."""
    p = Path(path)
    if p.suffix.lower() != ".json":
        cfg = from_toml_dict(config.read(p).doc, str(p))
        return cfg.with_options(**options) if options else cfg
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(p)) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not JSON: {exc}", file=str(p)) from exc
    if not isinstance(data, dict):
        raise ConfigError("a manifest is a JSON object", file=str(p))
    return from_manifest(data, str(p), **options)
