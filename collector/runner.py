"""The collector as one object: devices in, an async stream of ``Reading``s out.

Each device's health (``collector.scheduler.Health``) joins the same stream as a reading of category
``equipment`` (fields ``health`` and ``health_since_s``) when it changes and every
``health_interval_s`` while it does not, so it reaches the store, and through it the API, the same
way readings do, wherever the store runs.

Readings go through a bounded queue.  By default a full queue makes polls wait for the consumer,
which shows up as schedule lateness and in ``stats()["queue_waits"]``; with ``drop_when_full`` the
newest reading is dropped instead and counted in ``stats()["dropped"]``.  Either way nothing is
lost silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from collector import echonet_decode
from collector.config import CollectorConfig, DeviceConfig
from collector.echonet_client import Address, Discovery, EchonetController
from collector.errors import ConfigError, MalformedReply, PollError
from collector.reading import FieldValue, Quality, Reading, Source
from collector.scheduler import Health, Scheduler
from collector.sunspec_client import ModbusPool, SunSpecDevice
from protocols.echonet.classes import CLASSES, EchonetClass
from protocols.echonet.frame import EOJ, NODE_PROFILE, Frame, FrameError
from protocols.echonet.node_profile import parse_instance_list
from seeds.vocabulary import STATUS_CATEGORY

log = logging.getLogger(__name__)


@dataclass
class _EchonetDevice:
    config: DeviceConfig
    eoj: EOJ
    spec: EchonetClass
    readable: frozenset[int] | None = None  # from the Get property map (0x9F), read once
    # the spec's EPCs the device can give, fixed once ``readable`` is known: every poll / counter poll
    fast_epcs: tuple[int, ...] = ()
    all_epcs: tuple[int, ...] = ()
    stamped: dict[str, datetime] = field(default_factory=dict)  # last fixed-time stamp per field


def _reading(
    dev: DeviceConfig,
    ts: datetime,
    fields: dict[str, FieldValue],
    quality: Quality,
    source: Source,
    counter_wrap: dict[str, float],
) -> Reading:
    return Reading(dev.household, dev.device, dev.category, ts, fields, quality, source, counter_wrap)


class _End:
    pass


_END = _End()


class Collector:
    """Polls every configured device on its schedule; ``readings()`` is the output stream.

    One ECHONET controller socket and one Modbus connection per host serve all devices; health and
    statistics are snapshots any part of the system may read at any time.
    """

    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self._queue: asyncio.Queue[Reading | _End] = asyncio.Queue(config.queue_size)
        self.controller = EchonetController(
            config.echonet_bind,
            config.echonet_port,
            timeout_s=config.timeout_s,
            multicast=config.echonet_multicast,
            listen_multicast=config.listen_multicast,
        )
        self.pool = ModbusPool(config.timeout_s)
        self.scheduler = Scheduler(config, self._poll, self._health_changed)
        self._devices = {dev.key: dev for dev in config.devices}
        self._modbus: dict[str, SunSpecDevice] = {}
        self._echonet: dict[str, _EchonetDevice] = {}
        self._by_object: dict[tuple[str, EOJ], _EchonetDevice] = {}
        for dev in config.devices:
            if dev.protocol == "modbus":
                assert dev.unit_id is not None
                self._modbus[dev.key] = SunSpecDevice(
                    self.pool, dev.address, dev.port, dev.unit_id, dev.power_sign
                )
            else:
                assert dev.eoj is not None
                spec = CLASSES.get(dev.eoj.cls)
                if spec is None:
                    known = ", ".join(f"{c:04X}" for c in sorted(CLASSES))
                    raise ConfigError(
                        f"{config.source}: {dev.key}: no decoder for ECHONET class {dev.eoj.cls:04X} "
                        f"(known: {known})"
                    )
                state = _EchonetDevice(dev, dev.eoj, spec)
                self._echonet[dev.key] = state
                self._by_object[(dev.address, dev.eoj)] = state
        self.discovery = Discovery()
        self.readings_out = 0
        self.dropped = 0
        self.queue_waits = 0
        self.pushed = 0
        self.health_readings = 0
        self.health_skipped = 0  # health readings a full queue had no room for (the next one repeats it)
        self._started = False
        self._closed = False
        self._rediscovery: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("collector already started")
        self._started = True
        if self._echonet:
            self.controller.on_notification = self._notification
            await self.controller.start()
            await self.discover()
            self._rediscovery = asyncio.get_running_loop().create_task(self._rediscover_loop())
        self.scheduler.start(self.config.devices)
        if self.config.health_interval_s > 0:
            self._heartbeat = asyncio.get_running_loop().create_task(self._health_loop())

    async def stop(self) -> None:
        for task in (self._rediscovery, self._heartbeat):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.scheduler.stop()
        await self.controller.stop()
        await self.pool.close()
        # End of stream: a reader blocked on an empty queue needs the marker; with a full queue the
        # reader is not blocked and stops once it has drained it (nothing queued is thrown away).
        self._closed = True
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_END)

    async def __aenter__(self) -> Collector:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def readings(self) -> AsyncIterator[Reading]:
        """Every reading, in the order produced, until ``stop()``."""
        while True:
            if self._closed and self._queue.empty():
                return
            item = await self._queue.get()
            if isinstance(item, _End):
                return
            yield item

    # --- discovery -------------------------------------------------------------------------------

    async def discover(self) -> Discovery:
        """Ask every known node (and the multicast group) for its instance list; configured ECHONET
        devices whose node does not list them are marked unreachable."""
        addresses = sorted({d.config.address for d in self._echonet.values()})
        found = await self.controller.discover(addresses, self.config.discovery_wait_s)
        self.discovery = found
        for state in self._echonet.values():
            listed = found.nodes.get(state.config.address)
            if listed is None or state.eoj not in listed:
                self.scheduler.mark(state.config.key, "unreachable", "not listed by node discovery")
        return found

    async def _rediscover_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.rediscovery_s)
            try:
                await self.discover()
            except OSError as exc:
                log.warning("re-discovery failed: %s", exc)

    # --- polling ---------------------------------------------------------------------------------

    async def _poll(self, dev: DeviceConfig, counters: bool) -> tuple[str, str]:
        if dev.protocol == "modbus":
            return await self._poll_modbus(dev)
        return await self._poll_echonet(self._echonet[dev.key], counters)

    async def _poll_modbus(self, dev: DeviceConfig) -> tuple[str, str]:
        data = await self._modbus[dev.key].read()
        if not data.fields:
            raise MalformedReply(f"{dev.key}: no usable point (missing {data.missing})", "partial")
        quality: Quality = "partial" if data.missing else "ok"
        await self._emit(_reading(dev, datetime.now(UTC), data.fields, quality, "modbus", data.counter_wrap))
        return quality, f"missing {sorted(data.missing)}" if data.missing else ""

    async def _poll_echonet(self, state: _EchonetDevice, counters: bool) -> tuple[str, str]:
        dev = state.config
        ctl = self.controller
        spec = state.spec
        if state.readable is None:
            maps = await ctl.property_maps(dev.address, state.eoj)
            readable = state.readable = frozenset(maps.get(0x9F, ()))
            state.fast_epcs = tuple(e for e in spec.fast if e in readable)
            state.all_epcs = tuple(e for e in spec.fast + spec.slow if e in readable)
        epcs = state.all_epcs if counters else state.fast_epcs
        if not epcs:
            return "ok", "nothing readable is due"
        result = await ctl.get(dev.address, state.eoj, epcs)
        polled_at = datetime.now(UTC)
        try:
            decoded = echonet_decode.decode_class(spec, result.values)
        except FrameError as exc:
            raise MalformedReply(f"{dev.key}: {exc}") from exc
        if dev.power_sign != 1 and "power_w" in decoded.fields:
            decoded.fields["power_w"] = -decoded.fields["power_w"]  # type: ignore[operator]
        lacking = decoded.missing - spec.optional
        quality: Quality = "partial" if lacking else "ok"
        if not decoded.fields:
            raise PollError(f"{dev.key}: device answered none of {[hex(e) for e in epcs]}", "partial")
        for ts, fields in decoded.stamped if self.config.fixed_time_readings else ():
            name = next(iter(fields))
            if state.stamped.get(name) != ts:  # each fixed-time value once (same series + ts = same point)
                state.stamped[name] = ts
                wrap = {k: v for k, v in decoded.counter_wrap.items() if k in fields}
                await self._emit(_reading(dev, ts, fields, "ok", "echonet", wrap))
        await self._emit(_reading(dev, polled_at, decoded.fields, quality, "echonet", decoded.counter_wrap))
        return quality, ("Get_SNA for " + ", ".join(f"0x{e:02X}" for e in sorted(lacking))) if lacking else ""

    def _notification(self, addr: Address, frame: Frame) -> None:
        """INF/INFC: instance lists update discovery; device properties become readings."""
        if frame.seoj == NODE_PROFILE:
            for p in frame.props:
                if p.epc in (0xD5, 0xD6) and p.edt:
                    with contextlib.suppress(FrameError):
                        self.discovery.nodes[addr[0]] = parse_instance_list(p.edt)
            return
        state = self._by_object.get((addr[0], frame.seoj))
        if state is None:
            return
        values = {p.epc: (p.edt or None) for p in frame.props}
        try:
            decoded = echonet_decode.decode_class(state.spec, values)
        except FrameError:
            return
        if decoded.fields:
            self.pushed += 1
            now = datetime.now(UTC)
            # a callback cannot wait for room: with a full queue the pushed reading is dropped
            self._offer(_reading(state.config, now, decoded.fields, "ok", "echonet", decoded.counter_wrap))

    def _offer(self, reading: Reading) -> None:
        """Queue the reading if there is room (counted as out), else count it dropped."""
        try:
            self._queue.put_nowait(reading)
        except asyncio.QueueFull:
            self.dropped += 1
            return
        self.readings_out += 1

    async def _emit(self, reading: Reading) -> None:
        if not self._queue.full() or self.config.drop_when_full:
            self._offer(reading)
            return
        self.queue_waits += 1  # a full queue slows polling (visible as lateness)
        await self._queue.put(reading)
        self.readings_out += 1

    # --- health as readings ----------------------------------------------------------------------

    def _health_reading(self, key: str, health: Health) -> Reading:
        dev = self._devices[key]
        since = health.since or datetime.now(UTC)
        fields: dict[str, FieldValue] = {
            "health": health.reason,
            "health_since_s": round(since.timestamp(), 3),
        }
        source: Source = "modbus" if dev.protocol == "modbus" else "echonet"
        return Reading(dev.household, dev.device, STATUS_CATEGORY, datetime.now(UTC), fields, "ok", source)

    def _offer_health(self, reading: Reading) -> None:
        """Never waits and never counts as a dropped reading: a health reading a full queue has no room
        for is counted apart (and logged), and the next change or heartbeat says the same again."""
        if self._closed or self.config.health_interval_s <= 0:
            return
        try:
            self._queue.put_nowait(reading)
        except asyncio.QueueFull:
            self.health_skipped += 1
            if self.health_skipped in (1, 10, 100) or self.health_skipped % 1000 == 0:
                log.warning("reading queue full: %d health readings skipped so far", self.health_skipped)
            return
        self.readings_out += 1
        self.health_readings += 1

    def _health_changed(self, key: str, health: Health) -> None:
        if self._started:
            self._offer_health(self._health_reading(key, health))

    async def _health_loop(self) -> None:
        while True:
            for key, health in self.scheduler.health().items():
                self._offer_health(self._health_reading(key, health))
            await asyncio.sleep(self.config.health_interval_s)

    # --- views -----------------------------------------------------------------------------------

    def health(self) -> dict[str, Health]:
        """Device key (``household/device``) -> its health, a snapshot."""
        return self.scheduler.health()

    def stats(self) -> dict[str, Any]:
        return {
            **self.scheduler.stats(),
            "readings": self.readings_out,
            "pushed": self.pushed,
            "dropped": self.dropped,
            "queue_waits": self.queue_waits,
            "health_readings": self.health_readings,
            "health_skipped": self.health_skipped,
            "queued": self._queue.qsize(),
            "echonet": vars(self.controller.stats).copy(),
        }
