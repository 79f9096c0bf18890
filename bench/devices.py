"""Requests per second a fleet of emulated homes serves, per protocol, against a bare server baseline.

Run: ``python bench/devices.py`` (defaults: 1,000 homes, 5 s per phase).  This process hosts the
servers; the load comes from a separate client process (multiprocessing), so what is measured is the
server process.  Four phases, each with the same client and load shape:

1. Modbus baseline: one bare pymodbus server holding the same SunSpec register images, static.
2. Modbus fleet: register-block reads (model 103 / 203 / 124+802 blocks of unit 1 / 2 / 3) spread
   over many homes of the fleet, every read recomputing the home's state through its faults.
3. ECHONET baseline: one bare asyncio UDP responder answering a canned Get_Res.
4. ECHONET fleet: Gets of 4 EPCs to the smart meter / solar / battery objects of many homes.

Printed per phase: requests/s, and the server process' CPU time per request (more stable than
requests/s on a busy shared machine), plus the fleet/baseline ratios.  Targets (issue 3): >= 2,000
Modbus block reads/s and >= 5,000 ECHONET Gets/s with 1,000 homes in one process on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import os
import selectors
import socket
import struct
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# Run as ``python bench/devices.py``, this file's directory comes first on sys.path and its own name
# would shadow the ``devices`` package; drop that entry before importing the package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

from pymodbus.server import ModbusTcpServer  # noqa: E402
from pymodbus.simulator import DataType, SimData, SimDevice  # noqa: E402

from devices.fleet import Fleet  # noqa: E402
from devices.sunspec.image import Ratings, build_device  # noqa: E402
from devices.sunspec.server import MODBUS_DEVICES  # noqa: E402
from protocols.echonet.frame import CONTROLLER, EOJ, ESV, Frame, Property  # noqa: E402
from protocols.echonet.frame import decode as decode_frame  # noqa: E402
from protocols.echonet.frame import encode as encode_frame  # noqa: E402

# (unit id, address, count): one whole model block per read, as a SunSpec collector polls.
MODBUS_BLOCKS: tuple[tuple[int, int, int], ...] = ((1, 40070, 52), (2, 40070, 107), (3, 40096, 64))
ECHONET_GETS: tuple[tuple[EOJ, tuple[int, ...]], ...] = (
    (EOJ(0x02, 0x88, 0x01), (0xE7, 0xE0, 0xE3, 0xE1)),
    (EOJ(0x02, 0x79, 0x01), (0xE0, 0xE1, 0xE3, 0x80)),
    (EOJ(0x02, 0x7D, 0x01), (0xD3, 0xE4, 0xD6, 0xD8)),
)


@dataclass
class Load:
    kind: str  # "modbus" | "echonet"
    targets: list[tuple[str, int]]  # (address, port)
    seconds: float
    concurrency: int
    # an ECHONET Lite client listens where nodes answer: its own address, port 3610
    bind: tuple[str, int] = ("127.0.0.1", 0)


# --- client process --------------------------------------------------------------------------------


def _modbus_run(load: Load) -> tuple[int, int]:
    """Blocking client: one connection per target, one block read in flight on each, driven by one
    ``selectors`` loop (much lighter than asyncio streams, so the server stays the bottleneck)."""
    sel = selectors.DefaultSelector()
    conns: list[socket.socket] = []
    state: dict[socket.socket, list[Any]] = {}  # sock -> [tid, block index, expected bytes, buffer]
    for k in range(load.concurrency):
        host, port = load.targets[k % len(load.targets)]
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns.append(sock)
        state[sock] = [0, 0, 0, b""]
        sel.register(sock, selectors.EVENT_READ)

    def send_next(sock: socket.socket) -> None:
        st = state[sock]
        st[0] = (st[0] + 1) & 0xFFFF
        st[1] = (st[1] + 1) % len(MODBUS_BLOCKS)
        unit, address, count = MODBUS_BLOCKS[st[1]]
        st[2], st[3] = 9 + 2 * count, b""
        sock.sendall(struct.pack(">HHHBBHH", st[0], 0, 6, unit, 3, address, count))

    answered = errors = 0
    for sock in conns:
        send_next(sock)
    deadline = time.monotonic() + load.seconds
    try:
        while time.monotonic() < deadline:
            for key, _ in sel.select(0.5):
                sock = key.fileobj  # type: ignore[assignment]
                st = state[sock]
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("server closed a connection")
                st[3] += chunk
                if len(st[3]) >= 9 and st[3][7] != 3:  # exception response (9 bytes)
                    errors += 1
                    send_next(sock)
                elif len(st[3]) >= st[2]:
                    ok = int.from_bytes(st[3][:2], "big") == st[0] and st[3][8] == st[2] - 9
                    answered, errors = answered + ok, errors + (not ok)
                    send_next(sock)
    finally:
        for sock in conns:
            sel.unregister(sock)
            sock.close()
        sel.close()
    return answered, errors


def _echonet_run(load: Load) -> tuple[int, int]:
    """Blocking client keeping ``concurrency`` Gets in flight over all targets (as bench/echonet.py
    does): the cheapest client Python offers, so the server, not the client, is the bottleneck."""
    requests = []
    tid = 0
    for target in load.targets:
        for eoj, epcs in ECHONET_GETS:
            tid = (tid + 1) & 0xFFFF
            frame = Frame(tid, CONTROLLER, eoj, ESV.GET, tuple(Property(e) for e in epcs))
            requests.append((encode_frame(frame), target))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(load.bind)
    sock.settimeout(0.2)
    answered = lost = in_flight = k = 0
    deadline = time.monotonic() + load.seconds
    try:
        while time.monotonic() < deadline:
            while in_flight < load.concurrency:
                data, addr = requests[k]
                k = (k + 1) % len(requests)
                sock.sendto(data, addr)
                in_flight += 1
            try:
                reply = sock.recv(2048)
            except TimeoutError:
                lost += in_flight
                in_flight = 0
                continue
            in_flight -= 1
            if len(reply) > 11 and reply[10] == ESV.GET_RES:
                answered += 1
            else:
                lost += 1
    finally:
        sock.close()
    return answered, lost


def _client_process(load: Load, go: Any, results: Any) -> None:
    go.wait()
    start, cpu0 = time.monotonic(), time.process_time()
    answered, errors = _modbus_run(load) if load.kind == "modbus" else _echonet_run(load)
    results.put((answered, errors, time.monotonic() - start, time.process_time() - cpu0))


# --- server side ---------------------------------------------------------------------------------


@dataclass
class Result:
    rate: float  # answered requests per wall second
    server_us: float  # server process CPU per answered request
    client_us: float  # client processes' CPU per answered request
    errors: int


async def run_load(load: Load, processes: int) -> Result:
    """Run ``processes`` client processes (targets and concurrency split between them) against this
    process' servers, all starting together."""
    ctx = mp.get_context("spawn")
    results, go = ctx.Queue(), ctx.Event()
    procs = []
    for k in range(processes):
        prefix = load.targets[0][0].rsplit(".", 2)[0]
        share = Load(
            load.kind,
            load.targets[k::processes] or load.targets,
            load.seconds,
            max(1, load.concurrency // processes),
            (f"{prefix}.255.{100 + k}", 3610) if load.kind == "echonet" else load.bind,
        )
        procs.append(ctx.Process(target=_client_process, args=(share, go, results)))
    for proc in procs:
        proc.start()
    await asyncio.sleep(1.0)  # let the interpreters start before the clock runs
    cpu0 = time.process_time()
    go.set()
    parts = [await asyncio.to_thread(results.get) for _ in procs]
    cpu = time.process_time() - cpu0
    for proc in procs:
        await asyncio.to_thread(proc.join)
    done = sum(p[0] for p in parts)
    elapsed = max(p[2] for p in parts)
    per = 1e6 / done if done else float("nan")
    return Result(done / elapsed, cpu * per, sum(p[3] for p in parts) * per, sum(p[1] for p in parts))


async def bare_modbus_server(port: int) -> ModbusTcpServer:
    devices = []
    for spec in MODBUS_DEVICES:
        regs, _ = build_device(spec, "hh-baseline", Ratings())
        devices.append(
            SimDevice(
                id=spec.unit_id,
                simdata=[SimData(40000, values=list(regs.registers), datatype=DataType.REGISTERS)],
            )
        )
    server = ModbusTcpServer(devices, address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    return server


class _BareEchonet(asyncio.DatagramProtocol):
    """The floor of a Python ECHONET responder: parse the request, send back fixed property values."""

    transport: asyncio.DatagramTransport

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        req = decode_frame(data)
        props = tuple(Property(p.epc, b"\x00\x00\x01\x00") for p in req.props)
        self.transport.sendto(encode_frame(Frame(req.tid, req.deoj, req.seoj, ESV.GET_RES, props)), addr)


def _report(name: str, r: Result, baseline: Result | None) -> None:
    line = f"  {name:<38} {r.rate:>6.0f} req/s  server CPU {r.server_us:>4.0f} us/req"
    line += f" (~{1e6 / r.server_us:>5.0f}/s per free core)"
    line += f"  client CPU {r.client_us:>4.0f} us/req  errors {r.errors}"
    if baseline:
        rate, cpu = r.rate / baseline.rate, r.server_us / baseline.server_us
        line += f"\n  {'':<38} x{rate:.2f} rate, x{cpu:.2f} server CPU per request vs baseline"
    print(line, flush=True)


async def main_async(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    fleet = Fleet(
        args.homes,
        args.seed,
        speed=60,
        start=datetime(2026, 5, 1, 0, 0, tzinfo=UTC),
        modbus_port=args.modbus_port,
        address_prefix=args.prefix,
        echonet_options={} if args.announce else {"multicast": False, "announce_interval_s": None},
    )
    await fleet.start()
    startup = time.perf_counter() - t0
    rss_mb = _rss_mb()
    print(
        f"fleet: {args.homes} homes (Modbus + ECHONET) started in {startup:.1f} s, RSS {rss_mb:.0f} MB",
        flush=True,
    )
    step = max(1, args.homes // args.targets)
    homes = fleet.homes[::step][: args.targets]
    try:
        bare = await bare_modbus_server(0)
        listener: Any = bare.transport
        bare_port = listener.sockets[0].getsockname()[1]
        seconds, conc, procs = args.seconds, args.concurrency, args.client_processes
        print(
            f"Modbus: {conc} connections from {procs} client process(es), block reads of 52/107/64 registers,"
            f" {seconds:g} s per phase"
        )
        base = await run_load(Load("modbus", [("127.0.0.1", bare_port)], seconds, conc), procs)
        await bare.shutdown()
        _report("bare pymodbus server (baseline)", base, None)
        mtargets = [(h.address, h.modbus_server.port or 0) for h in homes if h.modbus_server][:conc]
        fleet_mb = await run_load(Load("modbus", mtargets, seconds, conc), procs)
        _report(f"fleet, {len(mtargets)} homes polled", fleet_mb, base)

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(_BareEchonet, local_addr=("127.0.0.1", 0))
        bare_addr = transport.get_extra_info("sockname")
        econc = args.echonet_concurrency
        print(
            f"ECHONET: {econc} outstanding Gets of 4 EPCs from {procs} client process(es),"
            f" {seconds:g} s per phase"
        )
        ebase = await run_load(Load("echonet", [bare_addr], seconds, econc), procs)
        transport.close()
        _report("bare asyncio UDP responder (baseline)", ebase, None)
        etargets = [(h.address, 3610) for h in homes]
        fleet_el = await run_load(Load("echonet", etargets, seconds, econc), procs)
        _report(f"fleet, {len(etargets)} homes polled", fleet_el, ebase)
        mb_ok = "met" if fleet_mb.rate >= 2000 else "NOT met"
        el_ok = "met" if fleet_el.rate >= 5000 else "NOT met"
        print(f"targets: Modbus >= 2000 reads/s: {mb_ok}; ECHONET >= 5000 Gets/s: {el_ok}")
    finally:
        t1 = time.perf_counter()
        await fleet.stop()
        print(f"fleet stopped in {time.perf_counter() - t1:.1f} s")


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--homes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seconds", type=float, default=5.0, help="duration of each phase")
    p.add_argument("--targets", type=int, default=200, help="homes the client spreads its requests over")
    p.add_argument("--concurrency", type=int, default=100, help="Modbus connections (one per polled home)")
    p.add_argument("--client-processes", type=int, default=2, help="load generator processes")
    p.add_argument("--echonet-concurrency", type=int, default=64, help="outstanding ECHONET Gets")
    p.add_argument(
        "--prefix",
        default="127.251",
        help="loopback /16 of the fleet: not the demo's 127.10 nor the tests' 127.30-127.250",
    )
    p.add_argument("--modbus-port", type=int, default=5020)
    p.add_argument("--announce", action="store_true", help="keep ECHONET multicast announcements on")
    args = p.parse_args(argv)
    # pymodbus logs an error (with a frame dump) for every reply it cannot send because the client
    # closed at the end of a phase; that is the bench stopping, not a server fault.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
