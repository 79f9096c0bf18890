"""What the household physics costs: steps per second for a fleet over one simulated day.

Run: ``python bench/physics.py [--homes 1000] [--hours 24] [--poll-s 60]``.

Prints, from the same run so a busy shared machine affects both sides alike:
- the fleet's steps/s and microseconds per step (state() polled every ``--poll-s`` simulated seconds),
- a baseline of the same number of bare ``math.sin`` calls in a Python loop (the floor of any per-step
  Python work), and the ratio between the two,
- a naive variant that asks ``clear_sky_pv_w`` (timezone conversion + sun geometry, no per-day cache)
  once per step, i.e. the sun alone done without the cache,
- what that means for a live fleet: CPU share of one core for the homes at a given speed.
Times are process CPU time, so other work on a shared machine does not inflate them.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

# Running ``python bench/physics.py`` puts bench/ first on the path, where a script named devices.py
# would shadow the devices package; drop that entry before importing it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from devices.physics import Household, SimClock, Site, clear_sky_pv_w  # noqa: E402

START = datetime(2024, 7, 31, 15, 0, tzinfo=UTC)  # midnight in Tokyo, a summer day
STEP_S = 10.0


def fleet(homes: int, hours: float, poll_s: float) -> tuple[float, int]:
    clock = SimClock(START)
    households = [Household(f"hh-bench{i}", i, clock, step_s=STEP_S) for i in range(homes)]
    polls = [START + timedelta(seconds=poll_s * i) for i in range(1, int(hours * 3600 / poll_s) + 1)]
    began = time.process_time()
    for at in polls:  # time-major, like pollers visiting every home each round
        for home in households:
            home.state(at)
    return time.process_time() - began, homes * int(hours * 3600 / STEP_S)


def bare_sin(n: int) -> float:
    sin = math.sin
    began = time.process_time()
    total = 0.0
    for i in range(n):
        total += sin(i)
    return time.process_time() - began


def naive_sun(n: int) -> float:
    site = Site()
    began = time.process_time()
    for i in range(n):
        clear_sky_pv_w(site, 5.0, START + timedelta(seconds=(i % 8640) * STEP_S))
    return time.process_time() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--poll-s", type=float, default=60.0, help="simulated seconds between state() calls")
    parser.add_argument("--speed", type=float, default=60.0, help="fleet speed for the CPU-share estimate")
    args = parser.parse_args()

    elapsed, steps = fleet(args.homes, args.hours, args.poll_s)
    base = bare_sin(steps)
    naive_n = min(steps, 200_000)
    naive = naive_sun(naive_n) / naive_n * steps
    per_step_us = elapsed / steps * 1e6
    rows = [
        ("physics", "steps", elapsed),
        ("bare sin()", "calls", base),
        ("naive sun", "calls", naive),
    ]
    print(f"fleet: {args.homes} homes x {args.hours:g} h, {STEP_S:g} s steps, polled every {args.poll_s:g} s")
    for name, unit, seconds in rows:
        rate = steps / seconds
        print(f"  {name:<11} {rate:12,.0f} {unit}/s  {seconds / steps * 1e6:6.2f} us each  ({seconds:.1f} s)")
    print(
        f"  physics / bare sin = {elapsed / base:.1f}x;  physics / naive sun alone = {elapsed / naive:.2f}x"
    )
    steps_per_real_s = args.homes * args.speed / STEP_S
    print(
        f"  live fleet of {args.homes} at speed {args.speed:g}: {steps_per_real_s:,.0f} steps per real second"
        f" = {steps_per_real_s * per_step_us / 1e4:.1f} % of one core"
    )


if __name__ == "__main__":
    main()
