"""Sustained device reads/s and schedule lateness of the collector, next to two plain baselines.

Run from the repository root: ``python -m bench.collector`` (defaults: 500 homes x 10 devices = 5,000
devices, 5 s interval, 20 s measured).  The emulated fleet runs in a separate process (``python -m
devices.cli``, the code ``hems devices`` runs) so the collector process is measured on its own; both
share the machine.

Phases, same devices, same process:
1. baseline: a plain sequential loop, one device at a time (pymodbus block read or one UDP Get),
   as fast as it goes for ``--baseline-s`` seconds: the throughput of "no scheduler, no concurrency".
2. paced baseline: the same requests from a plain asyncio request/response loop, every device asked
   once per ``--interval`` at start times spread over it as the collector's schedule spreads them
   (no decoding, readings, health or retries), counted for ``--baseline-s`` after one interval.
3. collector: ``Collector`` polling every device every ``--interval`` seconds; after one warm-up
   interval (discovery, SunSpec scans, property maps), polls and lateness are counted for
   ``--duration`` seconds.

Phases 2 and 3 run on the event loop ``hems collect`` runs (``common.loop.run``: uvloop where installed);
the sequential loop on asyncio's (it uses ``loop.sock_sendto``, which uvloop lacks).

Goal (issue 4): 5,000 devices at a 5 s interval (>= 1,000 reads/s) with p99 lateness < 250 ms on
2 cores; since issue 15 with a mix of device profiles (``--profiles mix``, the default: in one home of
eight each of: Gets limited to 1-3 properties, SunSpec float models, slow answers, large counters, a
drifting meter clock), as a real fleet has them.  ``--profile`` prints where the collector process
spends its time (cProfile).  Issue 20: the collector's CPU per read at most 1.2x the paced baseline's.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import gc
import io
import json
import os
import pstats
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pymodbus.client import AsyncModbusTcpClient

from collector.config import CollectorConfig, from_manifest
from collector.runner import Collector
from collector.scheduler import percentile
from common.loop import loop_factory, run
from protocols.echonet.frame import CONTROLLER, ESV, Frame, Property, decode, encode


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc), to show what the emulator costs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_fleet(
    homes: int, prefix: str, port: int, manifest: Path, profiles: str = "mix"
) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "devices.cli", "--homes", str(homes), "--seed", "1", "--speed", "1",
        "--modbus-port", str(port), "--address-prefix", prefix, "--manifest", str(manifest),
        *(["--profiles", profiles] if profiles else []),
    ]  # fmt: skip
    # stderr to a file, never an unread pipe: a full pipe would block the emulator on its next log line
    log = open(manifest.with_suffix(".log"), "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 300
    while not manifest.exists():
        if proc.poll() is not None:
            raise SystemExit(f"fleet failed: {manifest.with_suffix('.log').read_text()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("fleet did not start within 300 s")
        time.sleep(0.2)
    return proc


async def baseline(config: CollectorConfig, seconds: float) -> tuple[int, float, float]:
    """Sequential: one request at a time over the same devices, pymodbus for Modbus, a bare UDP
    socket for ECHONET (no TID bookkeeping beyond checking the echo)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((config.echonet_bind, config.echonet_port))  # nodes answer on the ECHONET Lite port
    sock.setblocking(False)
    clients: dict[tuple[str, int], AsyncModbusTcpClient] = {}
    blocks = {1: (40070, 52), 2: (40070, 107), 3: (40070, 90)}
    devices = list(config.devices)
    random.Random(1).shuffle(devices)
    reads = 0
    tid = 0
    start = time.perf_counter()
    cpu0 = time.process_time()
    try:
        while time.perf_counter() - start < seconds:
            for dev in devices:
                if time.perf_counter() - start >= seconds:
                    break
                if dev.protocol == "modbus":
                    key = (dev.address, dev.port)
                    client = clients.get(key)
                    if client is None:
                        client = clients[key] = AsyncModbusTcpClient(
                            dev.address, port=dev.port, timeout=1, retries=0
                        )
                        await client.connect()
                    assert dev.unit_id is not None
                    address, count = blocks[dev.unit_id]
                    rr = await client.read_holding_registers(address, count=count, device_id=dev.unit_id)
                    reads += not rr.isError()
                else:
                    assert dev.eoj is not None
                    tid = (tid + 1) & 0xFFFF
                    frame = Frame(tid, CONTROLLER, dev.eoj, ESV.GET, (Property(0x80), Property(0x88)))
                    await loop.sock_sendto(sock, encode(frame), (dev.address, dev.port))
                    with contextlib.suppress(TimeoutError):
                        while True:
                            data = await asyncio.wait_for(loop.sock_recv(sock, 2048), 1.0)
                            if decode(data).tid == tid:
                                reads += 1
                                break
    finally:
        sock.close()
        for c in clients.values():
            c.close()
    return reads, time.perf_counter() - start, time.process_time() - cpu0


class _EchonetAnswers(asyncio.DatagramProtocol):
    """Answers matched to their request by TID, nothing else read from them."""

    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future[None]] = {}

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        fut = self.waiting.pop(decode(data).tid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)


async def paced_baseline(
    config: CollectorConfig, seconds: float, interval: float
) -> tuple[int, float, float]:
    """The plain loop the collector's CPU per read is judged against (issue 20): every device asked once
    per ``interval`` at start times spread evenly over it, as the collector's schedule spreads them, with
    the same requests as ``baseline``: ECHONET over one datagram endpoint (answers matched by TID),
    Modbus as raw MBAP frames over one asyncio stream per gateway (one request at a time on each).  No
    decoding of values, readings, health or retries: what asking alone costs.  Counted after one
    warm-up interval (connections open); returns (reads, seconds, CPU seconds) of that window."""
    loop = asyncio.get_running_loop()
    transport, answers = await loop.create_datagram_endpoint(
        _EchonetAnswers, local_addr=(config.echonet_bind, config.echonet_port)
    )
    streams: dict[tuple[str, int], tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.Lock]] = {}
    blocks = {1: (40070, 52), 2: (40070, 107), 3: (40070, 90)}
    timeout = config.timeout_s
    counting = finished = False
    reads = 0
    tids = iter(range(1 << 62))

    async def ask_echonet(dev: Any) -> None:
        tid = next(tids) & 0xFFFF
        fut = loop.create_future()
        answers.waiting[tid] = fut
        transport.sendto(encode(Frame(tid, CONTROLLER, dev.eoj, ESV.GET, (Property(0x80), Property(0x88)))),
                         (dev.address, dev.port))  # fmt: skip
        try:
            await asyncio.wait_for(fut, timeout)
        finally:
            answers.waiting.pop(tid, None)

    async def ask_modbus(dev: Any) -> None:
        key = (dev.address, dev.port)
        if key not in streams:
            reader, writer = await asyncio.open_connection(dev.address, dev.port)
            streams[key] = (reader, writer, asyncio.Lock())
        reader, writer, lock = streams[key]
        address, count = blocks[dev.unit_id]
        tid = next(tids) & 0xFFFF
        async with lock:
            writer.write(struct.pack(">HHHBBHH", tid, 0, 6, dev.unit_id, 3, address, count))
            head = await asyncio.wait_for(reader.readexactly(6), timeout)
            await asyncio.wait_for(reader.readexactly(struct.unpack(">HHH", head)[2]), timeout)

    async def device_loop(dev: Any, offset: float, t0: float) -> None:
        nonlocal reads
        ask = ask_modbus if dev.protocol == "modbus" else ask_echonet
        due = t0 + offset
        while not finished:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            with contextlib.suppress(TimeoutError, OSError, asyncio.IncompleteReadError):
                await ask(dev)
                reads += counting
            due += interval

    devices = list(config.devices)
    t0 = time.perf_counter()
    tasks = [
        asyncio.create_task(device_loop(d, i * interval / len(devices), t0)) for i, d in enumerate(devices)
    ]
    try:
        await asyncio.sleep(interval)  # the warm-up: every device asked once, connections open
        counting, start, cpu0 = True, time.perf_counter(), time.process_time()
        await asyncio.sleep(seconds)
        elapsed, cpu, counted = time.perf_counter() - start, time.process_time() - cpu0, reads
    finally:
        # A flag as well as cancel(): before Python 3.12, wait_for may swallow a cancellation that meets
        # an answer arriving at the same moment, and that device's loop would carry on.
        finished = True
        for t in tasks:
            t.cancel()
        await asyncio.wait(tasks, timeout=interval + 2 * timeout)
        transport.close()
        for _, writer, _ in streams.values():
            writer.close()
    return counted, elapsed, cpu


async def run_collector(
    config: CollectorConfig,
    duration: float,
    warmup: float,
    worst_n: int = 0,
    freeze_gc: bool = False,
    profiler: cProfile.Profile | None = None,
) -> dict[str, Any]:
    collector = Collector(config)
    received = 0

    async def consume() -> None:
        nonlocal received
        async for _ in collector.readings():
            received += 1

    lags: list[float] = []
    gc_pauses: list[tuple[int, float]] = []
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_pauses.append((info["generation"], time.perf_counter() - gc_started[0]))

    async def lag_monitor() -> None:
        """How late a 50 ms sleep wakes up: the event loop's own stall, whatever its cause."""
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.05)
            lags.append(time.perf_counter() - t - 0.05)

    await collector.start()
    loop = asyncio.get_running_loop()
    task = loop.create_task(consume())
    monitor = loop.create_task(lag_monitor())
    await asyncio.sleep(warmup)
    if freeze_gc:
        # Everything built during start-up (tasks, connections, tables) lives as long as the process:
        # move it out of the collector's way so a full collection only walks what is new.
        gc.collect()
        gc.freeze()
    lags.clear()
    gc.callbacks.append(on_gc)
    if profiler:
        profiler.enable()  # the steady state only, not start-up
    collector.scheduler.reset_lateness()
    polls0, fails0, cpu0, t0 = (
        collector.scheduler.polls,
        collector.scheduler.failures,
        time.process_time(),
        time.perf_counter(),
    )
    await asyncio.sleep(duration)
    elapsed = time.perf_counter() - t0
    if profiler:
        profiler.disable()
    gc.callbacks.remove(on_gc)
    monitor.cancel()
    if worst_n:
        worst = sorted(
            collector.config.devices, key=lambda d: -max(collector.scheduler.device_lateness(d.key) or [0])
        )
        for d in worst[:worst_n]:
            print(
                "  worst:",
                d.key,
                d.protocol,
                [round(x, 2) for x in collector.scheduler.device_lateness(d.key)],
            )
        print(
            "  devices late by > 1 s, by kind:",
            collections.Counter(
                d.device
                for d in collector.config.devices
                if max(collector.scheduler.device_lateness(d.key) or [0]) > 1
            ),
        )
    stats = collector.stats()
    polls = collector.scheduler.polls - polls0
    cpu = time.process_time() - cpu0
    health: dict[str, int] = {}
    for h in collector.health().values():
        health[h.reason] = health.get(h.reason, 0) + 1
    await collector.stop()
    await task
    return {
        "reads_per_s": polls / elapsed,
        "failures": collector.scheduler.failures - fails0,
        "lateness_p50_ms": 1000 * (stats["lateness_p50_s"] or 0.0),
        "lateness_p99_ms": 1000 * (stats["lateness_p99_s"] or 0.0),
        "lateness_max_ms": 1000 * (stats["lateness_max_s"] or 0.0),
        "skipped_slots": stats["skipped_slots"],
        "collector_cpu_per_read_us": 1e6 * cpu / max(polls, 1),
        "collector_cpu_share": cpu / elapsed,
        "readings": received,
        "dropped": stats["dropped"],
        "health": health,
        "loop_lag_p99_ms": 1000 * (percentile(lags, 99) or 0.0),
        "loop_lag_max_ms": 1000 * max(lags, default=0.0),
        "gc": {
            g: (
                sum(1 for gg, _ in gc_pauses if gg == g),
                1000 * max((d for gg, d in gc_pauses if gg == g), default=0),
            )
            for g in (0, 1, 2)
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--homes", type=int, default=500)
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--baseline-s", type=float, default=5.0)
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--prefix", default=f"127.{random.randint(2, 9)}")
    p.add_argument("--port", type=int, default=15000 + random.randint(0, 999))
    p.add_argument(
        "--warmup", type=float, default=None, help="seconds before measuring (default 2 intervals + 3 s)"
    )
    p.add_argument(
        "--profiles",
        default="mix",
        help="device profiles of the fleet ('mix': every quirk in one home of eight; '' for none)",
    )
    p.add_argument("--profile", action="store_true", help="cProfile the collector phase")
    p.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after the warm-up")
    p.add_argument("--worst", type=int, default=0, help="print the N latest devices' lateness")
    args = p.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-collector-"))
    manifest = tmp / "manifest.json"
    t = time.perf_counter()
    fleet = start_fleet(args.homes, args.prefix, args.port, manifest, args.profiles)
    print(f"fleet: {args.homes} homes started in {time.perf_counter() - t:.1f} s (pid {fleet.pid})")
    quirky = collections.Counter(
        device.get("profile", {}).get("name", "standard")
        for home in json.loads(manifest.read_text())["homes"]
        for device in [
            *home.get("echonet", {}).get("objects", []),
            *home.get("modbus", {}).get("devices", []),
        ]
    )
    print(f"profiles ({args.profiles or 'none'}): {dict(sorted(quirky.items()))}")
    try:
        config = from_manifest(
            json.loads(manifest.read_text()),
            str(manifest),
            power_interval_s=args.interval,
            counter_interval_s=args.interval,  # every device at the interval, counters included
            timeout_s=args.timeout,
            echonet_bind=f"{args.prefix}.255.1",
            echonet_multicast=False,
            max_in_flight=1024,
            discovery_wait_s=1.0,
        )
        n = len(config.devices)
        print(f"devices: {n} ({n / args.interval:.0f} reads/s needed at a {args.interval:g} s interval)")

        loop_name = "uvloop" if loop_factory() is not None else "asyncio"
        print(f"event loop: {loop_name} (common.loop.run, as hems collect runs it)")
        reads, elapsed, base_cpu = asyncio.run(baseline(config, args.baseline_s))
        base_rate = reads / elapsed
        base_cpu_per_read_us = 1e6 * base_cpu / max(reads, 1)
        print(
            f"baseline (sequential loop): {base_rate:8.0f} reads/s  ({reads} reads in {elapsed:.1f} s, "
            f"{base_cpu_per_read_us:.0f} us CPU/read)"
        )

        paced_reads, paced_s, paced_cpu = run(paced_baseline(config, args.baseline_s, args.interval))
        paced_cpu_per_read_us = 1e6 * paced_cpu / max(paced_reads, 1)
        print(
            f"baseline (plain loop paced as the schedule): {paced_reads / paced_s:8.0f} reads/s  "
            f"({paced_reads} reads in {paced_s:.1f} s, {paced_cpu_per_read_us:.0f} us CPU/read)"
        )

        fleet_cpu0 = _cpu_s(fleet.pid)
        profiler = cProfile.Profile() if args.profile else None
        warmup = args.warmup if args.warmup is not None else 2 * args.interval + 3.0
        result = run(
            run_collector(
                config,
                args.duration,
                warmup=warmup,
                worst_n=args.worst,
                freeze_gc=args.gc_freeze,
                profiler=profiler,
            )
        )
        fleet_cpu = _cpu_s(fleet.pid) - fleet_cpu0
        total_s = args.duration + warmup
        print(
            f"collector (scheduled):      {result['reads_per_s']:8.0f} reads/s  "
            f"(schedule asks {n / args.interval:.0f}; baseline's ceiling {base_rate:.0f}); "
            f"lateness p50 {result['lateness_p50_ms']:.1f} ms, p99 {result['lateness_p99_ms']:.1f} ms, "
            f"max {result['lateness_max_ms']:.0f} ms"
        )
        print(
            f"  failures {result['failures']}, skipped slots {result['skipped_slots']}, "
            f"readings {result['readings']}, dropped {result['dropped']}, health {result['health']}"
        )
        per_read = result["collector_cpu_per_read_us"]
        print(
            f"  CPU per read: collector {per_read:.0f} us vs paced plain loop {paced_cpu_per_read_us:.0f} us "
            f"({per_read / max(paced_cpu_per_read_us, 1e-9):.2f} x, goal <= 1.2 x) and sequential loop "
            f"{base_cpu_per_read_us:.0f} us ({per_read / max(base_cpu_per_read_us, 1e-9):.2f} x); "
            f"collector {100 * result['collector_cpu_share']:.0f}% of a core, "
            f"emulator {100 * fleet_cpu / total_s:.0f}% of a core; load average {os.getloadavg()[0]:.1f}"
        )
        print(
            f"  event loop: 50 ms timer woke late by p99 {result['loop_lag_p99_ms']:.0f} ms, "
            f"max {result['loop_lag_max_ms']:.0f} ms; GC (count, max ms) by generation {result['gc']}"
        )
        goal_rate = n / args.interval
        ok = result["reads_per_s"] >= 0.98 * goal_rate and result["lateness_p99_ms"] < 250
        print(f"goal {goal_rate:.0f} reads/s with p99 < 250 ms: {'MET' if ok else 'NOT MET'}")
        if profiler:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
            print(out.getvalue())
    finally:
        fleet.terminate()
        try:
            fleet.wait(30)
        except subprocess.TimeoutExpired:
            fleet.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
