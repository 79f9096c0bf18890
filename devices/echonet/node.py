"""An emulated ECHONET Lite node: one UDP socket on the home's own loopback address, port 3610.

Behaviour follows the protocol reference §1.3, the way real nodes behave as far as a collector can tell:
Get -> Get_Res, or Get_SNA listing every asked EPC (PDC = 0 where unreadable); SetC -> Set_Res / SetC_SNA;
SetI silent unless it fails; INF_REQ -> INF unicast to the asker with its TID; a DEOJ the node does not hold
gets no answer at all.  Every answer goes to the asker's address at the ECHONET Lite port (3610, the
node's own ``port``), not to the port the request came from: the protocol fixes the port for both sides,
and a controller that sends from another port (KAIT's sends from 23610) listens on 3610.  Announced
properties (the 0x9D map) are multicast as INF when they change and sent as INFC to controllers that
talked to the node recently.  Malformed datagrams are counted and dropped: a datagram can never take the
server down.  Each object may have a profile (``devices.profile``): a per-Get limit, slow answers,
lifted counters, a clock of its own.

Multicast requests (discovery) arrive on one process-wide ``MulticastResponder`` socket and are handed to
every registered node, which answers by unicast from its own socket, so the reply's source address is
the node's, as on a real network.  Every multicast we send has TTL 0: the kernel delivers it to local
listeners only and never puts it on a physical interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar

from devices.echonet.table import NODE_PROFILE_CLASS, DeviceClass, DeviceContext, identification
from devices.errors import DeviceSettingsError
from devices.profile import STANDARD, Profile
from devices.state import Faults, HomeState
from protocols.echonet.frame import (
    EOJ,
    ESV,
    HEADER_LEN,
    MULTICAST_GROUP,
    NODE_PROFILE,
    PORT,
    REQUEST_ESVS,
    Frame,
    FrameError,
    Property,
    decode,
    encode,
)
from protocols.echonet.node_profile import node_profile_values

log = logging.getLogger(__name__)

_GET, _GET_RES, _GET_SNA = int(ESV.GET), int(ESV.GET_RES), int(ESV.GET_SNA)
_INF, _INF_SNA = int(ESV.INF), int(ESV.INF_SNA)

_MAX_CONTROLLERS = 16  # remembered INFC recipients per node; bounded so a flood cannot grow memory
_MAX_PENDING_INFC = 64
_DISCOVERY_GROUP = 32  # nodes answering a multicast request together ...
_DISCOVERY_GAP_S = 0.01  # ... and the pause between groups (1,000 nodes answer within ~0.3 s)

# The node profile's properties never read the household; it is served from this placeholder.
_ZEROS: dict[str, Any] = {f.name: 0.0 for f in fields(HomeState) if f.default is MISSING}
_IDLE_STATE = HomeState(**{**_ZEROS, "ts": datetime(2000, 1, 1, tzinfo=UTC), "ev_connected": False})


def _idle_state() -> HomeState:
    return _IDLE_STATE


@dataclass(eq=False)
class EchonetObject:
    """One device object of a node: its class table, where its state comes from, its faults and
    settings (class defaults overridden per device) and the values written to it by SetC/SetI."""

    eoj: EOJ
    device: str
    cls: DeviceClass
    state: Callable[[], HomeState]
    faults: Faults = field(default_factory=Faults)
    settings: dict[str, float] = field(default_factory=dict)
    node_id: str = ""
    profile: Profile = STANDARD
    ctx: DeviceContext = field(init=False)
    eoj_bytes: bytes = field(init=False)
    _profile_since: datetime | None = field(init=False, default=None)
    _profile_in: HomeState | None = field(init=False, default=None)  # the last state the profile saw
    _profile_out: HomeState | None = field(init=False, default=None)  # and what it made of it
    _cache_state: HomeState | None = field(init=False, default=None)
    _cache: dict[int, bytes | None] = field(init=False, default_factory=dict)
    _announced: dict[int, bytes | None] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.eoj_bytes = bytes(self.eoj)
        try:
            self.cls.validate(self.settings)
        except ValueError as exc:
            raise DeviceSettingsError(f"{self.device}: {exc}") from exc
        merged = {**self.cls.defaults, **self.settings}
        self.ctx = DeviceContext(merged, self.cls.initial_values(), identification(self.node_id, self.eoj))

    def set_profile(self, profile: Profile) -> None:
        """From now on behave as ``profile`` says (its clock drift runs from the next state seen)."""
        self.profile = profile
        self._profile_since = self._profile_in = self._profile_out = self._cache_state = None

    def view(self) -> HomeState:
        """The state as this device reports it right now (one physics call per request)."""
        st = self.faults.view(self.state())
        if self.profile.changes_state:
            if st is not self._profile_in:
                if self._profile_since is None:
                    self._profile_since = st.ts
                self._profile_in, self._profile_out = st, self.profile.view(st, self._profile_since)
            st = self._profile_out  # type: ignore[assignment]
        if st is not self._cache_state:
            self._cache_state = st
            self._cache.clear()
        return st

    def read(self, st: HomeState, epc: int) -> bytes | None:
        """EDT of a readable property, or None (unknown, not readable, faulted, or no data now)."""
        if epc in self.faults.sna_epcs:
            return None
        cache = self._cache
        if epc in cache:
            return cache[epc]
        prop = self.cls.props.get(epc)
        edt = prop.produce(st, self.ctx) if prop is not None and prop.get else None
        cache[epc] = edt
        return edt

    def write(self, epc: int, edt: bytes) -> bool:
        prop = self.cls.props.get(epc)
        if prop is None or not prop.settable or prop.accept is None or not prop.accept(edt):
            return False
        self.ctx.values[epc] = bytes(edt)
        self._cache_state = None  # producers may depend on the stored value
        return True

    def get_props(self, props: Iterable[Property]) -> tuple[list[Property], bool]:
        st = self.view()
        out: list[Property] = []
        ok = True
        for epc, _ in props:
            edt = self.read(st, epc)
            if edt is None:
                ok = False
                out.append(Property(epc))
            else:
                out.append(Property(epc, edt))
        return out, ok and bool(out)

    def answer_get_raw(self, tid: bytes, seoj: bytes, epcs: bytes, ok_esv: int, sna_esv: int) -> bytes:
        """Get_Res/Get_SNA (or INF/INF_SNA) bytes for ``epcs``, built directly: the hot path of every
        poll.  Every asked EPC is listed in order; unreadable ones with PDC 0, and so is every one past
        the profile's per-request limit (``max_epcs``)."""
        st = self.view()
        read = self.read
        parts = [b""]
        ok = bool(epcs)
        limit = self.profile.max_epcs
        for i, epc in enumerate(epcs):
            edt = None if limit is not None and i >= limit else read(st, epc)
            if edt is None:
                ok = False
                parts.append(bytes((epc, 0)))
            else:
                parts.append(bytes((epc, len(edt))))
                parts.append(edt)
        parts[0] = b"\x10\x81" + tid + self.eoj_bytes + seoj + bytes((ok_esv if ok else sna_esv, len(epcs)))
        return b"".join(parts)

    def set_props(self, props: Iterable[Property]) -> tuple[list[Property], bool, list[int]]:
        """Accepted EPCs answer with PDC 0, rejected ones echo the requested EDT (reference §1.3)."""
        out: list[Property] = []
        ok = True
        changed: list[int] = []
        for epc, edt in props:
            if self.write(epc, edt):
                out.append(Property(epc))
                if epc in self.cls.inf_epcs:
                    changed.append(epc)
            else:
                ok = False
                out.append(Property(epc, edt))
        return out, ok and bool(out), changed


@dataclass
class NodeStats:
    received: int = 0
    malformed: int = 0  # datagrams that failed to decode (dropped)
    ignored: int = 0  # not a request for us: unknown DEOJ, or a response/notification ESV
    replies: int = 0
    dropped: int = 0  # requests swallowed by the no_reply fault
    announcements: int = 0  # INF/INFC frames sent
    infc_res: int = 0  # INFC acknowledgements received
    send_errors: int = 0
    errors: int = 0  # unexpected exceptions while serving (logged; the server keeps running)


class _NodeProtocol(asyncio.DatagramProtocol):
    def __init__(self, node: EchonetNode) -> None:
        self.node = node

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.node.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.node.stats.send_errors += 1


def _multicast_socket_options(sock: socket.socket, interface: str) -> None:
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)  # local delivery only
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)


class EchonetNode:
    """A node holding the node profile plus ``objects``; ``announce_interval_s`` None disables the
    change-announcement loop (the boot INF is still sent when ``multicast`` is on)."""

    def __init__(
        self,
        address: str,
        objects: list[EchonetObject],
        port: int = PORT,
        *,
        node_id: str | None = None,
        announce_interval_s: float | None = 10.0,
        multicast: bool = True,
        controller_ttl_s: float = 600.0,
    ) -> None:
        if len({o.eoj for o in objects}) != len(objects):
            raise DeviceSettingsError("two objects of one node share an EOJ")
        self.address = address
        self.port = port
        self.node_id = node_id or address
        self.objects = list(objects)
        self.announce_interval_s = announce_interval_s
        self.multicast = multicast
        self.controller_ttl_s = controller_ttl_s
        self.stats = NodeStats()
        self.profile = EchonetObject(
            NODE_PROFILE, "node_profile", NODE_PROFILE_CLASS, _idle_state, node_id=self.node_id
        )
        self.profile.ctx.values.update(node_profile_values([o.eoj for o in self.objects]))
        targets: dict[EOJ, list[EchonetObject]] = {}
        for obj in [self.profile, *self.objects]:
            targets.setdefault(obj.eoj, []).append(obj)
            targets.setdefault(obj.eoj._replace(instance=0), []).append(obj)
        self._targets = targets
        self._targets_raw = {bytes(eoj): objs for eoj, objs in targets.items()}
        self.by_device = {o.device: o for o in self.objects}
        self._polled = [o for o in self.objects if o.cls.polled_inf_epcs]
        self._transport: asyncio.DatagramTransport | None = None
        self._tid = 0
        self._controllers: dict[tuple[str, int], tuple[bytes, float]] = {}  # addr -> (SEOJ, last seen)
        self._pending_infc: dict[int, tuple[str, int]] = {}
        self._responder: MulticastResponder | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._transport is not None:
            raise RuntimeError(f"node {self.address}:{self.port} already started")
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            try:
                sock.bind((self.address, self.port))
            except OSError as exc:
                raise OSError(
                    exc.errno, f"ECHONET node cannot bind {self.address}:{self.port}: {exc.strerror}"
                ) from exc
            if self.multicast:
                _multicast_socket_options(sock, self.address)
            transport, _ = await loop.create_datagram_endpoint(lambda: _NodeProtocol(self), sock=sock)
        except BaseException:
            sock.close()
            raise
        self._transport = transport
        if self.multicast:
            self._responder = await MulticastResponder.register(self)
            self._send_boot_announcement()
        if self.announce_interval_s is not None:
            _Announcer.add(self, self.announce_interval_s)

    async def stop(self) -> None:
        await _Announcer.remove(self)
        if self._responder is not None:
            await self._responder.unregister(self)
            self._responder = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            await asyncio.sleep(0)  # let the transport's close callback run

    async def __aenter__(self) -> EchonetNode:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def next_tid(self) -> int:
        self._tid = (self._tid + 1) & 0xFFFF
        return self._tid

    # --- requests --------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.stats.received += 1
        try:
            self._receive(data, addr)
        except Exception:  # a bug must cost one request, never the server
            self.stats.errors += 1
            log.exception("node %s failed to serve %r from %s", self.address, data, addr)

    def _receive(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        n = len(data)
        # Fast path for the bulk of the traffic: a well-formed format-1 Get (every PDC 0).  Anything
        # else, or anything odd about it, goes through the full decoder below.
        if (
            n >= 14
            and data[10] == _GET
            and data[0] == 0x10
            and data[1] == 0x81
            and n == 12 + 2 * data[11]
            and not any(data[13::2])
        ):
            targets = self._targets_raw.get(data[7:10])
            if targets is None:
                self.stats.ignored += 1
                return
            self._remember_controller(addr, data[4:7])
            epcs = data[12::2]
            for obj in targets:
                faults = obj.faults
                if faults.no_reply:
                    self.stats.dropped += 1
                    continue
                reply = obj.answer_get_raw(data[2:4], data[4:7], epcs, _GET_RES, _GET_SNA)
                self._reply(obj, _mangle(faults, reply), addr)
            return
        try:
            frame = decode(data)
        except FrameError:
            self.stats.malformed += 1
            return
        self._handle(frame, addr)

    def handle_frame(self, frame: Frame, addr: tuple[str | Any, int]) -> None:
        """Serve one decoded frame (from our socket, or from the multicast responder)."""
        try:
            self._handle(frame, addr)
        except Exception:  # a bug must cost one request, never the server
            self.stats.errors += 1
            log.exception("node %s failed to serve %s from %s", self.address, frame, addr)

    def _handle(self, frame: Frame, addr: tuple[str | Any, int]) -> None:
        esv = frame.esv
        if esv == ESV.INFC_RES:
            if self._pending_infc.pop(frame.tid, None) is not None:
                self.stats.infc_res += 1
            return
        if esv not in REQUEST_ESVS:
            self.stats.ignored += 1
            return
        targets = self._targets.get(frame.deoj)
        if targets is None:
            self.stats.ignored += 1  # real nodes stay silent for objects they do not hold
            return
        self._remember_controller(addr, bytes(frame.seoj))
        for obj in targets:
            if obj.faults.no_reply:
                self.stats.dropped += 1
                continue
            reply, changed = self._serve(obj, frame)
            if reply is not None:
                self._reply(obj, _mangle(obj.faults, reply), addr)
            if changed:  # the answer first, then the notifications it caused
                self._announce_now(obj, changed)

    def _reply(self, obj: EchonetObject, data: bytes, asker: tuple[str | Any, int]) -> None:
        """Answer at the asker's address on the ECHONET Lite port, after the profile's delay."""
        destination = (asker[0], self.port)
        delay = obj.profile.delay_s
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._send_reply, data, destination)
        else:
            self._send_reply(data, destination)

    def _send_reply(self, data: bytes, destination: tuple[str, int]) -> None:
        if self._transport is not None:  # a delayed answer may find the node stopped
            self._transport.sendto(data, destination)
            self.stats.replies += 1

    def _serve(self, obj: EchonetObject, frame: Frame) -> tuple[bytes | None, list[int]]:
        """The reply (None: none is due) and the announced EPCs a Set changed."""
        esv = frame.esv
        set_out: list[Property] | None = None
        changed: list[int] = []
        if esv == ESV.GET or esv == ESV.INF_REQ:
            # INF_REQ: the notification goes back to the asker only, with its TID
            ok_esv, sna_esv = (_GET_RES, _GET_SNA) if esv == _GET else (_INF, _INF_SNA)
            epcs = bytes(p.epc for p in frame.props)
            tid = frame.tid.to_bytes(2, "big")
            return obj.answer_get_raw(tid, bytes(frame.seoj), epcs, ok_esv, sna_esv), changed
        elif esv == ESV.SETC or esv == ESV.SETI:
            out, ok, changed = obj.set_props(frame.props)
            if esv == ESV.SETI:
                if ok:
                    return None, changed
                res = ESV.SETI_SNA
            else:
                res = ESV.SET_RES if ok else ESV.SETC_SNA
        else:  # SetGet: write, then read
            set_out, set_ok, changed = obj.set_props(frame.set_props or ())
            out, get_ok = obj.get_props(frame.props)
            res = ESV.SETGET_RES if set_ok and get_ok else ESV.SETGET_SNA
        set_list = None if set_out is None else tuple(set_out)
        return encode(Frame(frame.tid, obj.eoj, frame.seoj, res, tuple(out), set_list)), changed

    def _remember_controller(self, addr: tuple[str | Any, int], seoj: bytes) -> None:
        """Notifications go where answers go: the controller's address, the ECHONET Lite port."""
        controllers = self._controllers
        key = (str(addr[0]), self.port)
        if key not in controllers and len(controllers) >= _MAX_CONTROLLERS:
            del controllers[min(controllers, key=lambda a: controllers[a][1])]
        controllers[key] = (seoj, time.monotonic())

    # --- announcements ---------------------------------------------------------------------------

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(data, addr)
            self.stats.announcements += 1

    def _send_boot_announcement(self) -> None:
        props = tuple(Property(epc, self.profile.ctx.values.get(epc, b"\x30")) for epc in (0x80, 0xD5))
        frame = Frame(self.next_tid(), NODE_PROFILE, NODE_PROFILE, ESV.INF, props)
        self._send(encode(frame), (MULTICAST_GROUP, PORT))

    def _announce(self, obj: EchonetObject, props: tuple[Property, ...]) -> None:
        """INF to the multicast group, INFC to each recent controller (each waits for INFC_Res)."""
        if not props or obj.faults.no_reply:
            return
        if self.multicast:
            inf = Frame(self.next_tid(), obj.eoj, NODE_PROFILE, ESV.INF, props)
            self._send(_mangle(obj.faults, encode(inf)), (MULTICAST_GROUP, PORT))
        now = time.monotonic()
        for addr, (seoj, seen) in list(self._controllers.items()):
            if now - seen > self.controller_ttl_s:
                del self._controllers[addr]
                continue
            tid = self.next_tid()
            if len(self._pending_infc) >= _MAX_PENDING_INFC:
                self._pending_infc.pop(next(iter(self._pending_infc)))
            self._pending_infc[tid] = addr
            infc = Frame(tid, obj.eoj, EOJ(*seoj), ESV.INFC, props)
            self._send(_mangle(obj.faults, encode(infc)), addr)

    def _announce_now(self, obj: EchonetObject, epcs: list[int]) -> None:
        if not epcs:
            return
        st = obj.view()
        props = tuple(Property(epc, edt) for epc in epcs if (edt := obj.read(st, epc)) is not None)
        self._announce(obj, props)

    def check_announcements(self) -> int:
        """Compare the state-driven announced properties with what was last announced and send the
        changes.  Returns the number of objects that announced.  The first call records the baseline."""
        sent = 0
        for obj in self._polled:
            st = obj.view()
            now = {epc: obj.read(st, epc) for epc in obj.cls.polled_inf_epcs}
            before = obj._announced
            obj._announced = now
            if before is None:
                continue
            changed = tuple(Property(e, v) for e, v in now.items() if v is not None and before.get(e) != v)
            if changed:
                self._announce(obj, changed)
                sent += 1
        return sent


class _Announcer:
    """One task per event loop checks every node's announced properties, each node once per its
    interval (in a heap by due time): a thousand nodes cost one task and one timer, not a thousand."""

    _instances: ClassVar[dict[asyncio.AbstractEventLoop, _Announcer]] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.nodes: dict[int, tuple[EchonetNode, float]] = {}  # id(node) -> (node, interval)
        self.heap: list[tuple[float, int, int]] = []  # (due, sequence, id(node))
        self.seq = 0
        self.wakeup = asyncio.Event()
        self.task = loop.create_task(self.run())

    @classmethod
    def add(cls, node: EchonetNode, interval: float) -> None:
        loop = asyncio.get_running_loop()
        announcer = cls._instances.get(loop)
        if announcer is None:
            announcer = cls._instances[loop] = cls(loop)
        announcer.nodes[id(node)] = (node, interval)
        # first check at a random point of the interval: spreads the nodes out
        announcer.push(loop.time() + random.uniform(0, interval), node)

    @classmethod
    async def remove(cls, node: EchonetNode) -> None:
        loop = asyncio.get_running_loop()
        announcer = cls._instances.get(loop)
        if announcer is None or announcer.nodes.pop(id(node), None) is None:
            return
        if not announcer.nodes:
            del cls._instances[loop]
            announcer.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await announcer.task

    def push(self, due: float, node: EchonetNode) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (due, self.seq, id(node)))
        if self.heap[0][2] == id(node):
            self.wakeup.set()  # the new entry is due before whatever the task sleeps for

    async def run(self) -> None:
        heap = self.heap
        while True:
            now = self.loop.time()
            while heap and heap[0][0] <= now:
                _, _, key = heapq.heappop(heap)
                entry = self.nodes.get(key)
                if entry is None:
                    continue  # stopped meanwhile
                node, interval = entry
                try:
                    node.check_announcements()
                except Exception:
                    node.stats.errors += 1
                    log.exception("node %s: announcement check failed", node.address)
                self.seq += 1
                heapq.heappush(heap, (now + interval, self.seq, key))
            self.wakeup.clear()
            timeout = heap[0][0] - self.loop.time() if heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), timeout)


def _mangle(faults: Faults, reply: bytes) -> bytes:
    """Fault injection on the way out: garbage keeps the TID (so a client can pair it and see the
    damage), a truncated reply stops inside the property list (or inside the header if there is none)."""
    if faults.malformed:
        return b"\xde\xad" + reply[2:]
    if faults.truncated:
        if len(reply) > HEADER_LEN + 1:
            return reply[: HEADER_LEN + (len(reply) - HEADER_LEN) // 2]
        return reply[: HEADER_LEN - 1]
    return reply


class MulticastResponder(asyncio.DatagramProtocol):
    """The process's one socket on 224.0.23.0:3610 (joined on loopback): multicast requests are
    decoded once and handed to every registered node, which answers from its own unicast socket.

    Node sockets bind their own address, the responder binds the group address: no two of them
    overlap, so no node needs SO_REUSEADDR (which would let two nodes silently share an address).
    """

    _instances: ClassVar[dict[asyncio.AbstractEventLoop, MulticastResponder]] = {}

    def __init__(self, interface: str = "127.0.0.1", group: str = MULTICAST_GROUP, port: int = PORT) -> None:
        self.interface = interface
        self.group = group
        self.port = port
        self.nodes: dict[str, EchonetNode] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.available = False
        self.received = 0
        self.malformed = 0
        self.error: str | None = None

    @classmethod
    async def register(cls, node: EchonetNode) -> MulticastResponder:
        loop = asyncio.get_running_loop()
        responder = cls._instances.get(loop)
        if responder is None:
            responder = cls()
            cls._instances[loop] = responder
            await responder.start()
        responder.nodes[node.address] = node
        return responder

    async def unregister(self, node: EchonetNode) -> None:
        if self.nodes.get(node.address) is node:
            del self.nodes[node.address]
        if not self.nodes:
            loop = asyncio.get_running_loop()
            if self._instances.get(loop) is self:
                del self._instances[loop]
            await self.stop()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.group, self.port))
            membership = socket.inet_aton(self.group) + socket.inet_aton(self.interface)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            _multicast_socket_options(sock, self.interface)
            self.transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=sock)
            self.available = True
        except OSError as exc:
            sock.close()
            self.error = str(exc)
            log.warning("multicast discovery unavailable (%s); nodes still answer unicast", exc)

    async def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
            await asyncio.sleep(0)
        self.available = False

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received += 1
        if addr[0] in self.nodes:
            return  # our own nodes' announcements
        try:
            frame = decode(data)
        except FrameError:
            self.malformed += 1
            return
        if frame.esv not in REQUEST_ESVS:
            return
        # A thousand nodes answering in the same instant would overflow the asker's receive buffer
        # (real nodes answer after a random delay too): answer in small groups a few ms apart.
        nodes = list(self.nodes.values())
        loop = asyncio.get_running_loop()
        for k in range(0, len(nodes), _DISCOVERY_GROUP):
            group = nodes[k : k + _DISCOVERY_GROUP]
            if k == 0:
                _answer_all(group, frame, addr)
            else:
                loop.call_later(_DISCOVERY_GAP_S * (k // _DISCOVERY_GROUP), _answer_all, group, frame, addr)


def _answer_all(nodes: list[EchonetNode], frame: Frame, addr: tuple[str | Any, int]) -> None:
    for node in nodes:
        if node._transport is not None:  # it may have stopped meanwhile
            node.handle_frame(frame, addr)
