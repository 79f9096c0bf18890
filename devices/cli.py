"""``hems devices``: run a fleet of emulated homes until interrupted, and write its manifest.

Options may also come from the ``[devices]`` section of ``--config`` (flags win), read by the one
configuration loader (``config``, a leaf package: the emulator still imports nothing else of ours).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence
from datetime import datetime

import config
from common import loop as event_loop
from devices.fleet import Fleet, FleetError
from devices.profile import PROFILES, Plan, ProfileError, parse_plan
from devices.sunspec.server import DEFAULT_MODBUS_PORT


def _iso(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date-time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"--start needs a UTC offset (e.g. {text}+09:00 or {text}Z)")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _plan(text: str) -> Plan:
    try:
        return parse_plan(text)
    except ProfileError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hems devices",
        description="Start emulated homes (SunSpec Modbus TCP + ECHONET Lite) on loopback addresses "
        "127.10.x.y and write a manifest the collector reads.",
    )
    p.add_argument("--homes", type=int, required=True, help="number of homes")
    p.add_argument("--seed", type=int, required=True, help="fleet seed (household ids and behaviour)")
    p.add_argument(
        "--speed", type=_non_negative, default=1.0, help="simulated seconds per wall second (0 freezes)"
    )
    p.add_argument(
        "--start", type=_iso, default=None, help="simulated start, ISO 8601 with offset (default: now)"
    )
    p.add_argument(
        "--modbus-port", type=int, default=DEFAULT_MODBUS_PORT, help="Modbus TCP port of every home"
    )
    p.add_argument("--no-echonet", action="store_true", help="do not start ECHONET Lite nodes")
    p.add_argument("--no-modbus", action="store_true", help="do not start Modbus servers")
    p.add_argument("--manifest", default="devices-manifest.json", help="where to write the manifest")
    p.add_argument(
        "--control-port", type=int, default=None, help="serve the fault-control API on 127.0.0.1:PORT"
    )
    p.add_argument(
        "--address-prefix",
        default="127.10",
        help="first two octets of the homes' loopback addresses (home i at PREFIX.{i//250}.{i%%250+1})",
    )
    p.add_argument(
        "--profiles",
        type=_plan,
        default=None,
        help="device profiles (quirks of real equipment): 'mix', or DEVICE=PROFILE[,N/DEVICE=PROFILE...] "
        f"with PROFILE one of {', '.join(PROFILES)} (join with '+'); N/ names home N only",
    )
    p.add_argument("--duration", type=_non_negative, default=None, help="stop after this many wall seconds")
    p.add_argument("--config", default=None, help="TOML file whose [devices] section sets these options")
    return p


async def _run(args: argparse.Namespace) -> int:
    fleet = Fleet(
        args.homes,
        args.seed,
        speed=args.speed,
        start=args.start,
        modbus_port=args.modbus_port,
        echonet=not args.no_echonet,
        modbus=not args.no_modbus,
        control_port=args.control_port,
        address_prefix=args.address_prefix,
        profiles=args.profiles,
    )
    stop = asyncio.Event()
    event_loop.stop_on_signals(stop)
    await fleet.start()
    try:
        path = fleet.write_manifest(args.manifest)
        first, last = fleet.homes[0].address, fleet.homes[-1].address
        protocols = [p for p, on in (("modbus", not args.no_modbus), ("echonet", not args.no_echonet)) if on]
        served = ", ".join(protocols) or "no servers"
        print(f"hems devices: {len(fleet.homes)} homes at {first}..{last} ({served})")
        if not args.no_modbus:
            print(f"  modbus/sunspec port {args.modbus_port}: unit 1 inverter, 2 meter, 3 storage")
        print(f"  simulated start {fleet.sim_start.isoformat()} speed {fleet.speed:g}")
        print(f"  manifest {path}")
        if fleet.control_url:
            print(f"  fault control {fleet.control_url}/faults, device profiles {fleet.control_url}/profiles")
        sys.stdout.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.duration)
    finally:
        await fleet.stop()
    print("hems devices: stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args, _ = config.parse_args_with_config(build_parser(), argv, "devices")
    except config.ConfigError as exc:
        print(f"hems devices: {exc}", file=sys.stderr)
        return 2
    if args.homes < 1:
        print("hems devices: --homes must be >= 1", file=sys.stderr)
        return 2
    try:
        return event_loop.run(_run(args))
    except FleetError as exc:
        print(f"hems devices: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
