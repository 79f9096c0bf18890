"""ECHONET Lite Gets/s served by ONE process holding N emulated homes (7 objects each, real physics).

The server runs in a child process so its CPU is what is measured; the client (this process) keeps a
window of Gets in flight across all homes from one plain socket.  The baseline, in the same run, is the
same client against a bare asyncio UDP responder (it echoes the request with the ESV byte set to
Get_Res) bound to the same N addresses: the ratio is the price of decoding, the property tables, the
physics and encoding on top of asyncio's own datagram path.

    python bench/echonet.py [--homes 1000] [--seconds 5] [--window 64] [--speed 1] [--loop uvloop]

``measure(...)`` is importable (e.g. by ``bench/devices.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import sys
import time
from datetime import UTC, datetime
from typing import Any

# Run as a script, this directory comes first on sys.path and bench/devices.py would shadow the
# ``devices`` package: drop that entry before importing it.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

from protocols.echonet.frame import CONTROLLER, EOJ, ESV, PORT, Frame, Property, encode  # noqa: E402

# A collector's typical live poll of one object: a few EPCs in one Get.
POLLS: list[tuple[EOJ, tuple[int, ...]]] = [
    (EOJ(0x02, 0x88, 0x01), (0xE7, 0xE0, 0xE3)),
    (EOJ(0x02, 0x79, 0x01), (0xE0, 0xE1)),
    (EOJ(0x02, 0x7D, 0x01), (0xD3, 0xE4, 0xCF)),
    (EOJ(0x02, 0x81, 0x01), (0xE0,)),
    (EOJ(0x02, 0x82, 0x01), (0xE0,)),
    (EOJ(0x02, 0x7C, 0x01), (0xC4, 0xC5)),
    (EOJ(0x02, 0x7E, 0x01), (0xC7, 0xD3)),
]


def home_address(i: int) -> str:
    """The devices contract's address of home i."""
    return f"127.10.{i // 250}.{i % 250 + 1}"


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data[:10] + b"\x72" + data[11:], addr)  # the request, marked Get_Res


async def _serve(kind: str, homes: int, ready: Any, go: Any, stop: Any, cpu: Any, speed: float) -> None:
    loop = asyncio.get_running_loop()
    closers: list[Any] = []
    if kind == "echo":
        for i in range(homes):
            transport, _ = await loop.create_datagram_endpoint(_Echo, local_addr=(home_address(i), PORT))
            closers.append(transport.close)
    else:
        from devices.echonet.home import build_home_node
        from devices.physics import Household, SimClock

        clock = SimClock(datetime(2026, 7, 1, 3, 0, tzinfo=UTC), speed=speed)
        for i in range(homes):
            household = Household(f"hh-bench{i:05d}", 1, clock)
            node = build_home_node(home_address(i), household, {}, multicast=False)
            await node.start()
            closers.append(node.stop)
    ready.set()
    while not go.is_set():
        await asyncio.sleep(0.01)
    cpu_start = time.process_time()
    while not stop.is_set():
        await asyncio.sleep(0.01)
    cpu.value = time.process_time() - cpu_start
    for close in closers:
        result = close()
        if asyncio.iscoroutine(result):
            await result


def _server_main(
    kind: str, homes: int, ready: Any, go: Any, stop: Any, cpu: Any, speed: float, loop: str
) -> None:
    coro = _serve(kind, homes, ready, go, stop, cpu, speed)
    if loop == "uvloop":
        import uvloop  # optional: not a project dependency

        uvloop.run(coro)
    else:
        asyncio.run(coro)


def _drive(homes: int, seconds: float, window: int) -> tuple[int, int]:
    """Blocking client: keep ``window`` Gets in flight; returns (answers, requests sent)."""
    requests = []
    tid = 0
    for i in range(homes):
        for eoj, epcs in POLLS:
            tid = (tid + 1) & 0xFFFF
            frame = Frame(tid, CONTROLLER, eoj, ESV.GET, tuple(Property(e) for e in epcs))
            requests.append((encode(frame), (home_address(i), PORT)))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("127.10.255.1", PORT))  # where nodes answer: an address no home has, port 3610
    sock.settimeout(0.2)
    sent = answered = in_flight = 0
    k = 0
    deadline = time.perf_counter() + seconds
    try:
        while time.perf_counter() < deadline:
            while in_flight < window:
                data, addr = requests[k]
                k = (k + 1) % len(requests)
                sock.sendto(data, addr)
                sent += 1
                in_flight += 1
            try:
                reply = sock.recv(2048)
            except TimeoutError:
                in_flight = 0  # lost datagrams: refill the window
                continue
            if len(reply) > 10 and reply[10] in (0x72, 0x52):  # Get_Res / Get_SNA, not an INFC
                answered += 1
                in_flight -= 1
    finally:
        sock.close()
    return answered, sent


def measure(
    kind: str,
    homes: int = 1000,
    seconds: float = 5.0,
    window: int = 64,
    speed: float = 1.0,
    loop: str = "asyncio",
) -> tuple[float, float]:
    """(answers/s, answers per CPU-second of the server process) of one server process of ``kind``
    ("echonet" or "echo") holding ``homes`` nodes.  The second figure is what one dedicated core would
    serve; it is the one that stays meaningful on a machine shared with other work."""
    ctx = mp.get_context("spawn")
    ready, go, stop = ctx.Event(), ctx.Event(), ctx.Event()
    cpu = ctx.Value("d", 0.0)
    proc = ctx.Process(
        target=_server_main, args=(kind, homes, ready, go, stop, cpu, speed, loop), daemon=True
    )
    proc.start()
    try:
        if not ready.wait(180):
            raise RuntimeError(f"{kind} server with {homes} homes did not come up in 180 s")
        _drive(homes, min(1.0, seconds / 5), window)  # warm-up
        go.set()
        time.sleep(0.02)
        answered, _ = _drive(homes, seconds, window)
    finally:
        stop.set()
        proc.join(60)
        if proc.is_alive():
            proc.terminate()
            proc.join()
    return answered / seconds, answered / max(cpu.value, 1e-9)


def _uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--homes", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--window", type=int, default=64)
    p.add_argument(
        "--speed", type=float, default=1.0, help="simulation speed (physics stepping costs grow with it)"
    )
    p.add_argument(
        "--loop",
        choices=("asyncio", "uvloop", "both"),
        default="both" if _uvloop_available() else "asyncio",
        help="server event loop (uvloop is optional, not a project dependency)",
    )
    args = p.parse_args(argv)
    loops = ("asyncio", "uvloop") if args.loop == "both" else (args.loop,)
    for loop in loops:
        echo, echo_core = measure("echo", args.homes, args.seconds, args.window, loop=loop)
        gets, gets_core = measure("echonet", args.homes, args.seconds, args.window, args.speed, loop)
        print(f"[{loop}] {args.homes} homes, one server process, speed {args.speed:g}")
        print(
            f"  baseline  bare UDP echo:  {echo:9,.0f} datagrams/s ({echo_core:9,.0f} per server CPU-second)"
        )
        print(
            f"  ECHONET   7 objects/node: {gets:9,.0f} Gets/s      ({gets_core:9,.0f} per server CPU-second)"
        )
        print(
            f"  ratio     ECHONET / echo = {gets / echo:.2f} wall, {gets_core / echo_core:.2f} per CPU-second"
        )
    print("target: >= 5,000 Gets/s with 1,000 homes in one process on 2 cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
