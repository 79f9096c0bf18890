"""Modbus TCP for the one request the collector makes: read holding registers (function 3).

Why not pymodbus' client (used here before): per read it builds request and response objects, runs a
transaction manager and decodes every register with a struct call of its own; at 300 SunSpec reads/s
of about a hundred registers each that was the largest single cost of the collector process
(``python -m bench.collector --profile``, issue 20).  The wire format needed is small: a 7-byte MBAP
header (transaction id, protocol 0, length, unit id) and the function-3 PDU (byte count, registers) or
its exception answer (function | 0x80, code).  pymodbus still serves the emulated devices.

One connection per host:port carries every unit id behind it, one request on the wire at a time: a
device's TCP sessions are few and many cannot take pipelined requests.  A request that gets no
complete answer in time closes the connection, and the next request opens a new one: its answer may
still come, and a transaction id does not tell it apart reliably (pymodbus' own server, which the
emulated devices run, labels an answer with the id of the newest request it has received, so a late
answer would be taken for the next request's: ``tests/collector/test_modbus_tcp.py``).  So does a
frame that is not Modbus TCP or whose byte count disagrees with its length: the stream cannot be
trusted after it.  Answers with any other transaction id are skipped.
"""

from __future__ import annotations

import asyncio
import struct
from typing import cast

from collector.errors import DeviceException, DeviceTimeout, DeviceUnreachable, MalformedReply, PollError
from collector.slots import Slots
from collector.timers import timers

_REQUEST = struct.Struct(">HHHBBHH")  # MBAP (tid, protocol 0, length 6, unit) + function 3, address, count
_MBAP = struct.Struct(">HHH")
MAX_LENGTH = 254  # MBAP length field: unit id + the largest PDU (253 bytes)
_REGISTERS: dict[int, struct.Struct] = {}  # count -> big-endian unsigned 16-bit registers


class ConnectionLost(DeviceUnreachable):
    """The connection closed while a request waited for its answer.  Devices that take one request per
    session, or close an idle session just as a request arrives, do this in normal operation; a read
    changes nothing on the device, so it may be asked again on a new connection."""


class NotSent(Exception):
    """The connection closed before this request was written: nothing reached the device, so asking
    again on a fresh connection is safe and blames nobody."""


def _registers(count: int) -> struct.Struct:
    fmt = _REGISTERS.get(count)
    if fmt is None:
        fmt = _REGISTERS[count] = struct.Struct(f">{count}H")
    return fmt


def _expire(fut: asyncio.Future[bytes], where: str, unit_id: int, address: int) -> None:
    if not fut.done():
        fut.set_exception(DeviceTimeout(f"{where}/{unit_id} @{address}: no answer"))


class ModbusConnection(asyncio.Protocol):
    """One TCP connection to a Modbus server (``name`` is ``host:port``, for messages)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._turn = Slots(1)  # one request on the wire at a time, the others wait first come first
        self._tid = 0
        self._waiting: asyncio.Future[bytes] | None = None
        self._waiting_tid = -1
        # made inside the loop's create_connection: asking asyncio for the loop on every request would
        # be a getpid() system call each time
        self._loop = asyncio.get_running_loop()
        self._timers = timers(self._loop)

    # --- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def connection_lost(self, exc: Exception | None) -> None:
        message = f"{self.name}: connection lost{f': {exc}' if exc else ''}"
        # closed by the device (or the network): the request may be asked again; closed here (a pool
        # closing, a connection given up on), it is not
        self._fail(DeviceUnreachable(message) if self.closed else ConnectionLost(message))
        self.closed = True

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        while len(buf) >= 8:  # MBAP header and the function code
            tid, protocol, length = _MBAP.unpack_from(buf)
            if protocol != 0 or not 2 <= length <= MAX_LENGTH:
                why = f"not Modbus TCP (protocol {protocol}, length {length})"
                self._fail(MalformedReply(f"{self.name}: {why}"))
                self.close()
                return
            end = 6 + length
            if len(buf) < end:
                return
            frame = bytes(buf[:end])
            del buf[:end]
            fut = self._waiting
            if fut is not None and tid == self._waiting_tid and not fut.done():
                fut.set_result(frame)
            # any other transaction id: the late answer to a request that timed out, skipped

    # --- requests --------------------------------------------------------------------------------

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def _fail(self, error: PollError) -> None:
        fut = self._waiting
        if fut is not None and not fut.done():
            fut.set_exception(error)

    async def read_holding_registers(
        self, unit_id: int, address: int, count: int, timeout_s: float
    ) -> list[int]:
        """``count`` registers from ``address`` of ``unit_id``; a PollError saying what went wrong, or
        ``NotSent`` when the connection had closed before the request could go out."""
        if not self._turn.take_now():
            await self._turn.take()
        try:
            transport = self._transport
            if self.closed or transport is None:
                raise NotSent(f"{self.name}/{unit_id}")
            tid = self._tid = (self._tid + 1) & 0xFFFF
            loop = self._loop
            fut: asyncio.Future[bytes] = loop.create_future()
            self._waiting, self._waiting_tid = fut, tid
            # the loop's shared timer (``collector.timers``): an answer leaves its deadline to lapse
            self._timers.call_later(timeout_s, _expire, fut, self.name, unit_id, address)
            try:
                transport.write(_REQUEST.pack(tid, 0, 6, unit_id, 3, address, count))
                frame = await fut
            except DeviceTimeout:
                self.close()  # its answer may still come, mislabelled: never let it meet the next request
                raise
            finally:
                self._waiting = None
                if not fut.done():  # the write failed: its deadline must not fail a future nobody awaits
                    fut.cancel()
        finally:
            self._turn.release()
        function = frame[7]
        size = frame[8] if len(frame) > 8 else -1
        if function == 3 and size == 2 * count == len(frame) - 9 and frame[6] == unit_id:
            return list(_registers(count).unpack_from(frame, 9))  # the common case
        where = f"{self.name}/{unit_id} @{address}"
        if frame[6] != unit_id:
            raise MalformedReply(f"{where}: answer from unit {frame[6]}")
        if function == 0x83:
            code = frame[8] if len(frame) > 8 else 0
            raise DeviceException(f"{where}: exception {code}", code)
        if function != 3 or size != len(frame) - 9:
            self.close()  # its sizes disagree: what follows on the stream cannot be trusted either
            raise MalformedReply(f"{where}: undecodable reply (function {function}, byte count {size})")
        raise MalformedReply(f"{where}: {size // 2} registers, asked {count}")  # the one case left


async def connect(host: str, port: int, timeout_s: float) -> ModbusConnection:
    """A connection to ``host:port`` within ``timeout_s``, else DeviceUnreachable."""
    name = f"{host}:{port}"
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            _, conn = await loop.create_connection(lambda: ModbusConnection(name), host, port)
    except TimeoutError:
        raise DeviceUnreachable(f"{name}: connection timed out") from None
    except ConnectionRefusedError:
        raise DeviceUnreachable(f"{name}: connection refused") from None
    except OSError as exc:
        raise DeviceUnreachable(f"{name}: cannot connect: {exc}") from exc
    return conn
