"""ECHONET Lite controller: one UDP endpoint shared by every ECHONET device the collector polls.

Why one socket: the protocol fixes port 3610 for both sides, so a controller has one address and
every node answers to it.  Requests are told apart by (node address, TID): each request gets a
future under that key, the receive path resolves it, and a timeout removes it, so a late answer is
counted and dropped instead of being mistaken for the reply to a newer request (and, since it proves
the node slower than the wait, makes the wait for that node longer: bounded, see ``_learn_delay``).
Notifications (INF, INFC) arrive on the same socket; INFC is acknowledged with INFC_Res before anyone
sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from collector.errors import DeviceTimeout, DeviceUnreachable, MalformedReply, PollError
from collector.timers import Timers, timers
from protocols.echonet.frame import (
    CONTROLLER,
    EHD1,
    EHD2_FORMAT1,
    EOJ,
    ESV,
    MULTICAST_GROUP,
    NODE_PROFILE,
    PORT,
    Frame,
    FrameError,
    Property,
    decode_padded,
    decode_property_map,
    encode,
)
from protocols.echonet.node_profile import parse_instance_list

log = logging.getLogger(__name__)

Address = tuple[str, int]
Notification = Callable[[Address, Frame], None]

# Answers to what this controller sends (Get, SetC, SetGet).  INF is not among them even though it
# is a 0x7_ ESV: a node numbers its own notifications, so an INF can carry the TID of one of our
# pending requests by coincidence and must never complete it.
_ANSWERS = frozenset(
    int(e) for e in (ESV.GET_RES, ESV.GET_SNA, ESV.SET_RES, ESV.SETC_SNA, ESV.SETGET_RES, ESV.SETGET_SNA)
)
_GET_ANSWERS = frozenset({int(ESV.GET_RES), int(ESV.GET_SNA)})  # plain ints: probed on every answer
DEFAULT_MAX_EPCS = 16  # per Get until a device shows it takes fewer
# A node whose answers come after the timeout gets a longer wait of its own: 1.5 x the delay seen, up to
# this many times the configured timeout (a node slower than that is reported as timing out).
MAX_TIMEOUT_FACTOR = 8
SLOW_MARGIN = 1.5
_EXPIRED_KEPT = 4096  # timed-out requests remembered (address, TID) -> sent at, to measure late answers
REGROW_AFTER = 32  # full answers at a learned limit before trying twice as many EPCs again


@dataclass
class ControllerStats:
    sent: int = 0
    received: int = 0
    malformed: int = 0  # undecodable datagrams (matched to a request when their TID was readable)
    late: int = 0  # answers whose request had already timed out
    notifications: int = 0
    infc_acked: int = 0
    batch_shrinks: int = 0
    timeouts_raised: int = 0  # a node's wait made longer because its answers came late
    trailing: int = 0  # frames read although bytes followed their last property (padding)


@dataclass
class GetResult:
    """EPC -> EDT for every EPC asked; None where the device answered PDC = 0 (Get_SNA)."""

    values: dict[int, bytes | None]
    sna: bool = False


@dataclass
class Discovery:
    """Node address -> device objects it lists (0xD6 answers and 0xD5 announcements)."""

    nodes: dict[str, tuple[EOJ, ...]] = field(default_factory=dict)


def _expire(fut: asyncio.Future[Frame], address: str, deoj: EOJ, esv: int) -> None:
    if not fut.done():
        fut.set_exception(DeviceTimeout(f"{address} {deoj.hex()}: no answer to ESV 0x{esv:02x}"))


class EchonetController:
    """``await start()``, then ``get`` / ``discover``; ``on_notification`` sees every INF/INFC."""

    def __init__(
        self,
        bind: str = "127.0.0.1",
        port: int = PORT,
        *,
        timeout_s: float = 1.0,
        multicast: bool = True,
        listen_multicast: bool = False,
        buffer_bytes: int = 4 << 20,
    ) -> None:
        self.bind = bind
        self.buffer_bytes = buffer_bytes
        self.port = port
        self.timeout_s = timeout_s
        self.multicast = multicast
        self.listen_multicast = listen_multicast
        self.stats = ControllerStats()
        self.on_notification: Notification | None = None
        self._sock: socket.socket | None = None
        # the loop ``start()`` ran on: asking asyncio for it on every request is a getpid() system call
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: Timers | None = None  # that loop's shared timer (``collector.timers``)
        self._group_sock: socket.socket | None = None
        self._backlog: deque[tuple[bytes, Address]] = deque()  # sends the kernel refused for now
        self._pending: dict[tuple[str, int], asyncio.Future[Frame]] = {}
        self._collectors: dict[int, Callable[[Address, Frame], None]] = {}  # TID -> discovery sink
        self._tid = 0
        self._max_epcs: dict[tuple[str, EOJ], int] = {}
        self._full_answers: dict[tuple[str, EOJ], int] = {}
        self._get_tails: dict[tuple[EOJ, tuple[int, ...]], bytes] = {}
        self._node_timeout: dict[str, float] = {}  # address -> wait learned from its late answers
        self._expired: dict[tuple[str, int], float] = {}  # (address, TID) of timed-out requests -> sent at

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            # Thousands of nodes answer one socket: with the default ~200 KB buffer a burst of
            # replies overflows it and the kernel drops them silently (seen as timeouts).
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, option, self.buffer_bytes)
            sock.bind((self.bind, self.port))
            if self.multicast:
                # TTL 0 and the loopback interface: a discovery probe never leaves this host.
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(self.bind))
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            loop.add_reader(sock.fileno(), self._read_ready, sock)
            self._sock = sock
            self._loop = loop
            self._timers = timers(loop)
        except BaseException:
            sock.close()
            raise
        if self.listen_multicast:
            await self._listen_group(loop)

    async def _listen_group(self, loop: asyncio.AbstractEventLoop) -> None:
        """Join 224.0.23.0 on loopback to hear INF announcements (0xD5 at boot, property changes)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((MULTICAST_GROUP, self.port))
            membership = socket.inet_aton(MULTICAST_GROUP) + socket.inet_aton(self.bind)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            loop.add_reader(sock.fileno(), self._read_ready, sock)
            self._group_sock = sock
        except OSError as exc:
            sock.close()
            log.warning("cannot listen to ECHONET multicast (%s); polling still works", exc)

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in (self._sock, self._group_sock):
            if sock is not None:
                loop.remove_reader(sock.fileno())
                if sock is self._sock and self._backlog:
                    loop.remove_writer(sock.fileno())
                sock.close()
        self._sock = self._group_sock = None
        self._loop = self._timers = None
        self._backlog.clear()
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        self._pending.clear()
        await asyncio.sleep(0)

    # --- receive path ----------------------------------------------------------------------------

    def _read_ready(self, sock: socket.socket) -> None:
        """Drain the socket, not just one datagram: asyncio's datagram transport reads one per loop
        iteration, so with thousands of nodes answering one socket the replies would wait in the
        kernel for seconds while the loop serves everything else (measured: p50 reply delay 2 s at
        700 Gets/s).  Bounded so one busy socket cannot starve the loop either."""
        for _ in range(512):
            try:
                data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP port unreachable reported on the next read
                log.debug("echonet socket error: %s", exc)
                continue
            self._datagram(data, (str(addr[0]), int(addr[1])))

    def _datagram(self, data: bytes, addr: Address) -> None:
        self.stats.received += 1
        try:
            frame, extra = decode_padded(data)
        except FrameError as exc:
            self.stats.malformed += 1
            # The TID sits at bytes 2-3 even in most broken frames: fail that request now rather
            # than let it run into a timeout that hides what really happened.
            if len(data) >= 4:
                fut = self._pending.get((addr[0], data[2] << 8 | data[3]))
                if fut is not None and not fut.done():
                    fut.set_exception(MalformedReply(f"{addr[0]}: {exc}"))
            return
        if extra:  # padding some devices add: OPC and PDC said where the frame ends
            self.stats.trailing += 1
        esv = frame.esv
        if esv == ESV.INFC:
            ack = Frame(
                frame.tid,
                frame.deoj if frame.deoj.class_group else CONTROLLER,
                frame.seoj,
                ESV.INFC_RES,
                tuple(Property(p.epc) for p in frame.props),
            )
            try:
                # to the ECHONET Lite port, like every answer, not to the INFC's source port: a node
                # may send from another socket and listens on 3610
                self._send(ack, (addr[0], self.port))
                self.stats.infc_acked += 1
            except PollError as exc:
                log.debug("INFC_Res to %s not sent: %s", addr, exc)
            self._notify(addr, frame)
            return
        sink = self._collectors.get(frame.tid)
        if sink is not None and esv in _ANSWERS:
            sink(addr, frame)
            return
        fut = self._pending.get((addr[0], frame.tid))
        if fut is not None and esv in _ANSWERS:
            if not fut.done():
                fut.set_result(frame)
            return
        if esv == ESV.INF:
            self._notify(addr, frame)
        elif esv in _ANSWERS:
            self.stats.late += 1
            sent_at = self._expired.pop((addr[0], frame.tid), None)
            if sent_at is not None and self._loop is not None:
                self._learn_delay(addr[0], self._loop.time() - sent_at)

    def _learn_delay(self, address: str, delay: float) -> None:
        """A late answer proves the node is there but slower than the wait: wait longer for it (bounded),
        or it would time out on every request, forever, while answering every one."""
        wait = min(SLOW_MARGIN * delay, MAX_TIMEOUT_FACTOR * self.timeout_s)
        if wait > self._node_timeout.get(address, self.timeout_s):
            self._node_timeout[address] = wait
            self.stats.timeouts_raised += 1
            log.info("%s answers after %.2f s: waiting up to %.2f s for it", address, delay, wait)

    def node_timeout(self, address: str) -> float:
        """How long a request to ``address`` waits for its answer."""
        return self._node_timeout.get(address, self.timeout_s)

    def _notify(self, addr: Address, frame: Frame) -> None:
        self.stats.notifications += 1
        if self.on_notification is not None:
            try:
                self.on_notification(addr, frame)
            except Exception:  # a consumer bug must not take the socket down
                log.exception("notification handler failed for %s", addr)

    def _send(self, frame: Frame, addr: Address) -> None:
        self._send_bytes(encode(frame), addr)

    def _send_bytes(self, data: bytes, addr: Address) -> None:
        sock = self._sock
        if sock is None:
            raise PollError("ECHONET controller is not started", "unreachable")
        self.stats.sent += 1
        if self._backlog:
            self._backlog.append((data, addr))  # keep the order
            return
        try:
            sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self._backlog.append((data, addr))
            asyncio.get_running_loop().add_writer(sock.fileno(), self._write_ready, sock)
        except OSError as exc:
            raise DeviceUnreachable(f"{addr[0]}: cannot send: {exc}") from exc

    def _write_ready(self, sock: socket.socket) -> None:
        while self._backlog:
            data, addr = self._backlog[0]
            try:
                sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("echonet send to %s failed: %s", addr, exc)
            self._backlog.popleft()
        asyncio.get_running_loop().remove_writer(sock.fileno())

    def _next_tid(self, address: str | None) -> int:
        """A TID free for ``address``; ``None`` (discovery, answered from any address) needs one that
        no pending request uses at all."""
        busy = {tid for _, tid in self._pending} if address is None else ()
        for _ in range(0x10000):
            self._tid = (self._tid + 1) & 0xFFFF
            tid = self._tid
            if not tid or tid in self._collectors or tid in busy:
                continue
            if address is None or (address, tid) not in self._pending:
                return tid
        raise PollError("no free ECHONET TID (65535 requests in flight)")

    # --- requests --------------------------------------------------------------------------------

    async def request(
        self, address: str, deoj: EOJ, esv: int, props: Sequence[Property], timeout_s: float | None = None
    ) -> Frame:
        """Send one request and wait for the frame with its TID from that address."""
        tid = self._next_tid(address)
        data = encode(Frame(tid, CONTROLLER, deoj, esv, tuple(props)))
        return await self._exchange(address, deoj, esv, tid, data, timeout_s)

    def _get_request(self, tid: int, deoj: EOJ, epcs: tuple[int, ...]) -> bytes:
        """The bytes of a Get: everything after the TID is the same for every poll of an object, so
        it is encoded once (``_get_tails``) and only the TID put in front of it."""
        key = (deoj, epcs)
        tail = self._get_tails.get(key)
        if tail is None:
            if len(self._get_tails) >= 4096:  # bounded: objects x batch shapes, far fewer in practice
                self._get_tails.clear()
            frame = Frame(0, CONTROLLER, deoj, ESV.GET, tuple(Property(e) for e in epcs))
            tail = self._get_tails[key] = encode(frame)[4:]
        return bytes((EHD1, EHD2_FORMAT1, tid >> 8, tid & 0xFF)) + tail

    async def _exchange(
        self, address: str, deoj: EOJ, esv: int, tid: int, data: bytes, timeout_s: float | None
    ) -> Frame:
        key = (address, tid)
        loop = self._loop or asyncio.get_running_loop()
        fut: asyncio.Future[Frame] = loop.create_future()
        self._pending[key] = fut
        # A deadline on the loop's shared timer (``collector.timers``) that fails the future, not a
        # timer of its own nor asyncio.timeout's context manager: an answered request leaves it to lapse.
        timeout = self._node_timeout.get(address, self.timeout_s) if timeout_s is None else timeout_s
        shared = self._timers if self._timers is not None else timers(loop)
        shared.call_later(timeout, _expire, fut, address, deoj, esv)
        try:
            self._send_bytes(data, (address, self.port))
            sent_at = loop.time()
            try:
                frame = await fut
            except DeviceTimeout:
                self._remember_expired(key, sent_at)
                raise
        finally:
            del self._pending[key]
            if not fut.done():  # the send failed: its deadline must not fail a future nobody awaits
                fut.cancel()
        seoj = frame.seoj
        if seoj[0] != deoj[0] or seoj[1] != deoj[1]:  # the class (``EOJ.cls``) without a property call
            raise MalformedReply(f"{address}: answer from {frame.seoj.hex()} to a request for {deoj.hex()}")
        return frame

    def _remember_expired(self, key: tuple[str, int], sent_at: float) -> None:
        """Keep when a timed-out request was sent, so its late answer tells how slow the node is."""
        if len(self._expired) >= _EXPIRED_KEPT:
            del self._expired[next(iter(self._expired))]  # the oldest
        self._expired[key] = sent_at

    async def get(
        self, address: str, eoj: EOJ, epcs: Iterable[int], timeout_s: float | None = None
    ) -> GetResult:
        """Get several EPCs in as few requests as the device takes.

        Some devices answer only the first N properties of a Get and list the rest with PDC 0 (or
        leave them out); a property may also really have no data now (an unplugged car's battery).
        One answer tells them apart only partly, so:

        - a property that came with data is kept;
        - one without data that comes before a property with data, or that was asked alone, really has
          none (a device with a limit answers a prefix of what it is asked): Get_SNA for it;
        - the run without data after the last property with data may be the device's limit: it is
          asked again, first in a request of its own; if its first property then comes with data, the
          limit was real and is learned (the number of properties the device answered);
        - a request of several properties answered with none at all (some devices refuse a request
          over their limit whole, or answer a Get_SNA listing no property when any one lacks data)
          is asked again in halves; one property asked alone and answered so has no data.
        """
        values: dict[int, bytes | None] = {}
        sna = False
        key = (address, eoj)
        todo = list(dict.fromkeys(epcs))
        suspect: int | None = None  # properties answered by the previous request, if it left a run empty
        while todo:
            limit = self._max_epcs.get(key, DEFAULT_MAX_EPCS)
            batch = todo[:limit]
            tid = self._next_tid(address)
            data = self._get_request(tid, eoj, tuple(batch))
            frame = await self._exchange(address, eoj, ESV.GET, tid, data, timeout_s)
            if frame.esv not in _GET_ANSWERS:
                raise MalformedReply(f"{address} {eoj.hex()}: ESV 0x{frame.esv:02x} answering a Get")
            got = dict(frame.props)  # EPC -> EDT
            if got.keys() != set(batch):
                got = {epc: edt for epc, edt in got.items() if epc in batch}  # what was asked, no more
            if len(got) == len(batch) and all(got.values()):  # the common case: all of it, with data
                if suspect is not None:
                    self._learn_limit(key, suspect)
                    suspect = None
                elif len(batch) == limit < DEFAULT_MAX_EPCS:
                    self._regrow(key, limit)
                values.update(got)
                todo = todo[len(batch) :]
                continue
            if len(batch) == 1 and batch[0] not in got:
                if frame.esv != ESV.GET_SNA:
                    raise MalformedReply(f"{address} {eoj.hex()}: answer lacks the one EPC asked")
                # a Get_SNA listing nothing (OPC 0, as some devices answer): no data for this one
                values[batch[0]] = None
                sna = True
                suspect = None
                todo = todo[1:]
                continue
            with_data = [i for i, e in enumerate(batch) if got.get(e)]
            if suspect is not None and with_data and with_data[0] == 0:
                self._learn_limit(key, suspect)  # what the previous request left empty was readable
            suspect = None
            if not with_data and len(batch) > 1:
                self._learn_limit(key, len(batch) // 2)
                continue
            last = with_data[-1] if with_data else 0
            for e in batch[: last + 1]:
                edt = got.get(e)
                values[e] = edt or None
                sna = sna or not edt
            if last + 1 < len(batch):
                suspect = last + 1
            elif len(batch) == limit < DEFAULT_MAX_EPCS:
                self._regrow(key, limit)
            todo = [e for e in todo if e not in values]
        return GetResult(values, sna)

    def _learn_limit(self, key: tuple[str, EOJ], limit: int) -> None:
        """The device takes at most ``limit`` properties per Get (never raised here: ``_regrow`` does)."""
        limit = max(1, limit)
        if limit < self._max_epcs.get(key, DEFAULT_MAX_EPCS):
            self._max_epcs[key] = limit
            self.stats.batch_shrinks += 1
        self._full_answers.pop(key, None)

    def _regrow(self, key: tuple[str, EOJ], limit: int) -> None:
        """A learned limit is probed upwards again after a run of full answers: an all-empty Get_SNA
        (a fault, an unplugged car) can shrink it without being a real limit, and a device that
        really has one costs a single extra request per probe."""
        streak = self._full_answers.get(key, 0) + 1
        if streak >= REGROW_AFTER:
            self._max_epcs[key] = min(DEFAULT_MAX_EPCS, limit * 2)
            streak = 0
        self._full_answers[key] = streak

    def batch_limit(self, address: str, eoj: EOJ) -> int:
        return self._max_epcs.get((address, eoj), DEFAULT_MAX_EPCS)

    async def property_maps(self, address: str, eoj: EOJ) -> dict[int, tuple[int, ...]]:
        """0x9D (announced), 0x9E (settable), 0x9F (readable) maps of one object, those that decode."""
        maps, _ = await self.read_maps(address, eoj)
        return maps

    async def read_maps(self, address: str, eoj: EOJ) -> tuple[dict[int, tuple[int, ...]], dict[int, str]]:
        """The object's property maps that decode, and why each of the others does not.

        A map that does not decode (its count byte and its list disagree) is left out rather than
        failing the whole read: one bad map must not cost the others, and a caller can fall back to
        what the object's class lists, as for a device that gives no map at all."""
        result = await self.get(address, eoj, (0x9D, 0x9E, 0x9F))
        maps: dict[int, tuple[int, ...]] = {}
        problems: dict[int, str] = {}
        for epc, edt in result.values.items():
            if edt is not None:
                try:
                    maps[epc] = decode_property_map(edt)
                except FrameError as exc:
                    problems[epc] = str(exc)
        return maps, problems

    async def discover(self, addresses: Iterable[str] = (), wait_s: float = 0.5) -> Discovery:
        """Multicast a Get 0xD6 (when multicast is on) and unicast one to each known address; collect
        every answer that arrives within ``wait_s``."""
        found = Discovery()
        tid = self._next_tid(None)

        def sink(addr: Address, frame: Frame) -> None:
            for p in frame.props:
                if p.epc == 0xD6 and p.edt:
                    with contextlib.suppress(FrameError):
                        found.nodes[addr[0]] = parse_instance_list(p.edt)

        self._collectors[tid] = sink
        try:
            probe = Frame(tid, CONTROLLER, NODE_PROFILE, ESV.GET, (Property(0xD6),))
            if self.multicast:
                with contextlib.suppress(OSError):
                    self._send(probe, (MULTICAST_GROUP, self.port))
            for address in addresses:
                self._send(probe, (address, self.port))
            await asyncio.sleep(wait_s)
        finally:
            del self._collectors[tid]
        return found
