"""``python -m collector.cli --manifest M --duration S``: poll and print readings as JSON lines.

A standalone way to look at what the devices say without the pipeline; ``hems collect`` wires the
same ``Collector`` to the pipeline instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from collector.config import COUNTER_INTERVAL_S, POWER_INTERVAL_S, CollectorConfig, load
from collector.errors import ConfigError
from collector.reading import Reading
from collector.runner import Collector
from common import heap
from common import loop as event_loop


def reading_json(r: Reading) -> str:
    return json.dumps(
        {
            "household": r.household,
            "device": r.device,
            "category": r.category,
            "ts": r.ts_utc.isoformat().replace("+00:00", "Z"),
            "fields": r.fields,
            "quality": r.quality,
            "source": r.source,
            **({"counter_wrap": r.counter_wrap} if r.counter_wrap else {}),
        },
        sort_keys=True,
    )


def add_collector_arguments(p: argparse.ArgumentParser) -> None:
    """The device-source options, shared with ``hems collect`` so both read devices the same way."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", help="manifest JSON written by `hems devices`")
    src.add_argument("--config", help="TOML file ([collector], [[households]], optionally [pipeline])")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--power-interval", type=float, default=POWER_INTERVAL_S)
    p.add_argument("--counter-interval", type=float, default=COUNTER_INTERVAL_S)
    p.add_argument("--echonet-bind", default=None, help="local address of the ECHONET Lite controller")
    p.add_argument(
        "--listen-multicast", action="store_true", help="also hear INF announcements to 224.0.23.0"
    )
    p.add_argument(
        "--no-fixed-time", action="store_true", help="skip the meter's own-timestamp readings (0xEA/0xEB)"
    )


def config_from_args(args: argparse.Namespace) -> CollectorConfig:
    options: dict[str, object] = {}
    if args.echonet_bind:
        options["echonet_bind"] = args.echonet_bind
    if args.listen_multicast:
        options["listen_multicast"] = True
    if args.no_fixed_time:
        options["fixed_time_readings"] = False
    if args.manifest:
        return load(
            args.manifest,
            power_interval_s=args.power_interval,
            counter_interval_s=args.counter_interval,
            **options,
        )
    return load(args.config, **options)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="collector", description="Poll devices and print readings as JSON lines."
    )
    add_collector_arguments(p)
    p.add_argument("--health", action="store_true", help="print the health snapshot to stderr at the end")
    return p


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    collector = Collector(config_from_args(args))
    await collector.start()
    settle = heap.settle_later(collector.warm_up_s)
    stop = asyncio.Event()
    event_loop.stop_on_signals(stop)
    loop = asyncio.get_running_loop()

    async def printer() -> None:
        async for r in collector.readings():
            out.write(reading_json(r) + "\n")
        out.flush()

    task = loop.create_task(printer())
    try:
        with contextlib.suppress(TimeoutError):  # duration None: until a signal
            await asyncio.wait_for(stop.wait(), args.duration)
    finally:
        settle.cancel()
        await collector.stop()
        await task
    if args.health:
        for key, h in sorted(collector.health().items()):
            print(f"{key}\t{h.reason}\t{h.since}\t{h.message}", file=sys.stderr)
        print(json.dumps(collector.stats(), default=str), file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return event_loop.run(_run(args, out or sys.stdout))
    except BrokenPipeError:  # the reader went away (``| head``): a normal way to stop
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the exit-time flush stays quiet
        return 0
    except ConfigError as exc:
        print(f"collector: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"collector: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
