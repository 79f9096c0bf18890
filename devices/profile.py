"""Device profiles: how real equipment of some make behaves, selectable per emulated device.

A fault (``devices.state.Faults``) is something going wrong; a profile is a device working as its maker
built it, in a way a collector has to cope with every day (protocols.md §1.3 and §3.2; interop.md):

- ``max_epcs``: an ECHONET Lite device that answers at most N properties of a Get with data; the rest
  come back in a Get_SNA with PDC 0, as some devices do when a request exceeds their limit.
- ``float_models``: a SunSpec inverter or meter switched to float mode: it lists the float32 models
  (111-113, 211-214) in place of the integer ones with scale factors (101-103, 201-204).
- ``delay_s``: every answer leaves this long after the request (a slow device or gateway).
- ``counter_offset``: added to every cumulative counter the device reports (Wh or L): a device with
  years of history, whose registers are far beyond 8 digits and wrap sooner.
- ``clock_offset_s`` / ``clock_drift_ppm``: the device's own clock is off by a fixed amount and runs fast
  (+) or slow (-) by that many parts per million of the simulated time since the profile was applied.

Named profiles (``PROFILES``) combine with ``+`` (``"get_limit_2+slow"``); ``MIX`` spreads them over a
fleet so one run meets them all.  A profile is chosen per device when the fleet is built (``hems devices
--profiles``), listed in the manifest, and can be changed at run time through the control API
(``PUT /profiles/{household}/{device}``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from devices.errors import DeviceError
from devices.state import COUNTER_NAMES, HomeState


class ProfileError(DeviceError, ValueError):
    """A profile name, text or field that does not describe a profile; nothing was applied."""


@dataclass(frozen=True)
class Profile:
    name: str = "standard"
    max_epcs: int | None = None
    float_models: bool = False
    delay_s: float = 0.0
    counter_offset: float = 0.0
    clock_offset_s: float = 0.0
    clock_drift_ppm: float = 0.0

    def __post_init__(self) -> None:
        if self.max_epcs is not None and (isinstance(self.max_epcs, bool) or not 1 <= self.max_epcs <= 255):
            raise ProfileError(f"max_epcs must be 1..255 or null, got {self.max_epcs!r}")
        if not 0 <= self.delay_s <= 60:
            raise ProfileError(f"delay_s must be 0..60 seconds, got {self.delay_s!r}")
        if not 0 <= self.counter_offset <= 1e12:
            raise ProfileError(f"counter_offset must be 0..1e12, got {self.counter_offset!r}")
        if abs(self.clock_offset_s) > 50 * 365 * 86400 or abs(self.clock_drift_ppm) > 1e5:
            raise ProfileError("clock_offset_s must be within 50 years and clock_drift_ppm within 1e5")

    @property
    def changes_state(self) -> bool:
        return bool(self.counter_offset or self.clock_offset_s or self.clock_drift_ppm)

    def view(self, state: HomeState, since: datetime | None = None) -> HomeState:
        """The state as a device of this profile reports it: counters lifted, clock off.  ``since``
        is when the profile was applied (simulated time), from which the drift runs.  A new object
        each call: a device keeps the view of its latest state itself."""
        if not self.changes_state:
            return state
        changes: dict[str, Any] = {}
        if self.counter_offset:
            changes.update({n: getattr(state, n) + self.counter_offset for n in COUNTER_NAMES})
        error = self.clock_offset_s
        if self.clock_drift_ppm and since is not None:
            error += (state.ts - since).total_seconds() * self.clock_drift_ppm * 1e-6
        if error:
            changes["ts"] = state.ts + timedelta(seconds=error)
        return dataclasses.replace(state, **changes)

    def to_json(self) -> dict[str, object]:
        """What the manifest and the control API show: the name and every field that differs from a
        standard device."""
        out: dict[str, object] = {"name": self.name}
        for f in _FIELDS:
            value = getattr(self, f)
            if value != getattr(STANDARD, f):
                out[f] = value
        return out


_FIELDS = ("max_epcs", "float_models", "delay_s", "counter_offset", "clock_offset_s", "clock_drift_ppm")
STANDARD = Profile()

PROFILES: dict[str, Profile] = {
    "standard": STANDARD,
    "get_limit_1": Profile("get_limit_1", max_epcs=1),
    "get_limit_2": Profile("get_limit_2", max_epcs=2),
    "get_limit_3": Profile("get_limit_3", max_epcs=3),
    "float": Profile("float", float_models=True),
    "slow": Profile("slow", delay_s=0.2),
    # registers 900 million units up: past 8 digits, a water or gas meter is within reach of its wrap
    "large_counters": Profile("large_counters", counter_offset=900_000_000.0),
    # a clock a few minutes slow that keeps losing time, as an unsynchronised device's does
    "clock_drift": Profile("clock_drift", clock_offset_s=-150.0, clock_drift_ppm=-50.0),
}


def parse(spec: str) -> Profile:
    """A profile from its name, or from names joined by ``+`` (later names override earlier fields)."""
    names = [n.strip() for n in spec.split("+") if n.strip()]
    if not names:
        raise ProfileError("empty profile name")
    merged: dict[str, Any] = {}
    for name in names:
        base = PROFILES.get(name)
        if base is None:
            raise ProfileError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}")
        merged.update({f: getattr(base, f) for f in _FIELDS if getattr(base, f) != getattr(STANDARD, f)})
    return Profile("+".join(names), **merged)


def from_json(body: object) -> Profile:
    """A profile from the control API: ``{"name": "get_limit_2+slow"}``, fields (``{"max_epcs": 2}``),
    or both (the fields override the named profile's)."""
    if not isinstance(body, dict):
        raise ProfileError("a profile is a JSON object")
    unknown = sorted(set(body) - {"name", *_FIELDS})
    if unknown:
        raise ProfileError(f"unknown profile fields {unknown}; known: name, {', '.join(_FIELDS)}")
    name = body.get("name", "standard")
    if not isinstance(name, str):
        raise ProfileError(f"name must be text, got {name!r}")
    base = parse(name)
    fields: dict[str, Any] = {f: getattr(base, f) for f in _FIELDS}
    for key in _FIELDS:
        if key not in body:
            continue
        value = body[key]
        if key == "float_models":
            if not isinstance(value, bool):
                raise ProfileError(f"float_models must be true or false, got {value!r}")
        elif key == "max_epcs":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ProfileError(f"max_epcs must be an integer or null, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise ProfileError(f"{key} must be a number, got {value!r}")
        fields[key] = value
    custom = any(fields[f] != getattr(base, f) for f in _FIELDS)
    return Profile(f"{base.name}+custom" if custom else base.name, **fields)


# --- which device of which home gets which profile ------------------------------------------------

Plan = Callable[[int], Mapping[str, Profile]]  # home index -> device id -> profile


def every_home(profiles: Mapping[str, Profile]) -> Plan:
    return lambda index: profiles


# One home in eight of each kind; the rest standard.  Each row names devices of both protocols, so a
# fleet of eight or more homes meets every profile on both sides.
_MIX_ROWS: tuple[Mapping[str, str], ...] = (
    {},
    {"smart_meter": "get_limit_2", "inverter": "float"},
    {"solar": "get_limit_1", "meter": "float", "water_meter": "large_counters"},
    {"battery": "get_limit_3", "gas_meter": "large_counters", "storage": "slow"},
    {"ev_charger": "slow", "smart_meter": "clock_drift"},
    {"fuel_cell": "get_limit_1+slow", "inverter": "float+large_counters"},
    {"smart_meter": "get_limit_1+large_counters", "meter": "float+slow"},
    {},
)


def mix(index: int) -> Mapping[str, Profile]:
    """The ``MIX`` plan: home ``index`` gets row ``index % 8``."""
    return {device: parse(name) for device, name in _MIX_ROWS[index % len(_MIX_ROWS)].items()}


def parse_plan(text: str) -> Plan:
    """``hems devices --profiles``: ``mix``, or comma-separated ``device=profile`` (every home) and
    ``N/device=profile`` (home N only) entries, e.g. ``smart_meter=get_limit_2,3/inverter=float``."""
    text = text.strip()
    if text == "mix":
        return mix
    every: dict[str, Profile] = {}
    per_home: dict[int, dict[str, Profile]] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        target, sep, name = entry.partition("=")
        if not sep:
            raise ProfileError(f"{entry!r}: expected device=profile or N/device=profile")
        home, slash, device = target.strip().rpartition("/")
        if slash and not home.isdigit():
            raise ProfileError(f"{entry!r}: {home!r} is not a home index")
        profile = parse(name)
        if slash:
            per_home.setdefault(int(home), {})[device] = profile
        else:
            every[device] = profile

    def plan(index: int) -> Mapping[str, Profile]:
        return {**every, **per_home.get(index, {})}

    return plan
