"""The collector as one object: devices in, an async stream of ``Reading``s out.

Each device's health (``collector.scheduler.Health``) joins the same stream as a reading of category
``equipment`` (fields ``health`` and ``health_since_s``) when it changes and every
``health_interval_s`` while it does not, so it reaches the store, and through it the API, the same
way readings do, wherever the store runs.

What a device says passes ``collector.plausibility`` first: a value it cannot have meant (beyond its
rating or its field's physical range, or stamped by a clock far off the collector's) is refused, counted
and logged, and the device's health says so.  A device's ``power_sign`` applies to every power it
reports, polled or pushed (INF/INFC), so the two can never disagree in sign.

Readings go through a bounded queue.  By default a full queue makes polls wait for the consumer,
which shows up as schedule lateness and in ``stats()["queue_waits"]``; with ``drop_when_full`` the
newest reading is dropped instead and counted in ``stats()["dropped"]``.  Either way nothing is
lost silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from collector import echonet_decode, plausibility
from collector.config import CollectorConfig, DeviceConfig
from collector.echonet_client import Address, Discovery, EchonetController
from collector.errors import ConfigError, MalformedReply, PollError
from collector.plausibility import Refusal
from collector.reading import FieldValue, Quality, Reading, Source
from collector.scheduler import Health, Scheduler
from collector.sunspec_client import ModbusPool, SunSpecDevice
from collector.timers import wake
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
    ratings: dict[str, float] | None = None  # field -> the device's rating for it, read once
    stamped: dict[str, datetime] = field(default_factory=dict)  # last fixed-time stamp per field
    # the clock refusals of the last poll that read the fixed-time values (counter polls only): a
    # wrong clock stays in the device's health between those polls instead of blinking back to ok
    clock_refused: list[Refusal] = field(default_factory=list)


def _reading(
    dev: DeviceConfig,
    ts: datetime,
    fields: dict[str, FieldValue],
    quality: Quality,
    source: Source,
    counter_wrap: dict[str, float],
) -> Reading:
    return Reading(dev.household, dev.device, dev.category, ts, fields, quality, source, counter_wrap)


def _outcome(quality: Quality, note: str, refused: list[Refusal]) -> tuple[str, str]:
    """The health of a poll that yielded readings: ``implausible`` when values were refused (the message
    says which and why), else ``partial``/``ok`` as the reading's quality says."""
    if refused:
        return "implausible", "; ".join(filter(None, (plausibility.describe(refused), note)))
    return quality, note


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
                # the device's power_sign is applied here, in ``_plausible``, as for ECHONET devices
                self._modbus[dev.key] = SunSpecDevice(self.pool, dev.address, dev.port, dev.unit_id)
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
        self._clock_skew = timedelta(seconds=config.clock_skew_s)
        self.readings_out = 0
        self.dropped = 0
        self.queue_waits = 0
        self.pushed = 0
        self.health_readings = 0
        self.health_skipped = 0  # health readings a full queue had no room for (the next one repeats it)
        self.implausible: Counter[str] = Counter()  # refused values by kind (range, rating, clock)
        self._refusal_logged: dict[str, str] = {}  # device -> what was last logged about it
        self._started = False
        self._closed = False
        self._ended = False  # the end of the stream was handed out by ``next_readings``
        self._batch_waiter: asyncio.Future[None] | None = None  # ``next_readings`` waiting for ...
        self._batch_size = 0  # ... this many queued readings
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
        self._wake_batch(force=True)

    async def __aenter__(self) -> Collector:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def readings(self) -> AsyncIterator[Reading]:
        """Every reading, in the order produced, until ``stop()``."""
        queue = self._queue
        while True:
            if not queue.empty():
                item = queue.get_nowait()  # no coroutine per reading while the queue has some
            elif self._closed:
                return
            else:
                item = await queue.get()
            if isinstance(item, _End):
                return
            yield item

    @property
    def warm_up_s(self) -> float:
        """Seconds after ``start()`` by which every device has had its first poll, with the reads only
        a first poll makes (SunSpec scan, property maps, ratings) each given its timeout: what is
        built by then lasts (``common.heap.settle`` may freeze it)."""
        return self.config.discovery_wait_s + self.scheduler.first_round_s + 4 * self.config.timeout_s

    async def next_readings(self, max_items: int, wait_s: float) -> list[Reading] | None:
        """The readings queued, in the order produced, as soon as ``max_items`` are or once ``wait_s``
        has passed (then maybe none); None once the stream has ended (after ``stop()``, with everything
        queued taken).  One wake-up per batch, not one per reading as ``readings()`` has: for a consumer
        that groups readings anyway (``hems collect``'s pump).  One such consumer at a time."""
        if self._ended:
            return None
        if self._batch_waiter is not None:
            raise RuntimeError("next_readings is already waiting")
        queue = self._queue
        if queue.qsize() < max_items and not self._closed and wait_s > 0:
            loop = asyncio.get_running_loop()
            waiter = self._batch_waiter = loop.create_future()
            self._batch_size = max_items
            timer = loop.call_later(wait_s, wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._batch_waiter = None
        out: list[Reading] = []
        while len(out) < max_items and not queue.empty():
            item = queue.get_nowait()
            if isinstance(item, _End):
                self._ended = True
                break
            out.append(item)
        if not out and (self._ended or (self._closed and queue.empty())):
            self._ended = True
            return None
        return out

    def _wake_batch(self, force: bool = False) -> None:
        waiter = self._batch_waiter
        if waiter is not None and (force or self._queue.qsize() >= self._batch_size):
            wake(waiter)

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

    def _poll(self, dev: DeviceConfig, counters: bool) -> Awaitable[tuple[str, str]]:
        """The poll of one device, to be awaited (a plain call: no coroutine of its own per poll)."""
        if dev.protocol == "modbus":
            return self._poll_modbus(dev)
        return self._poll_echonet(self._echonet[dev.key], counters)

    async def _poll_modbus(self, dev: DeviceConfig) -> tuple[str, str]:
        data = await self._modbus[dev.key].read()
        if not data.fields:
            raise PollError(f"{dev.key}: answered, but no usable point (missing {data.missing})", "no_data")
        fields, refused = self._plausible(dev, data.fields, data.ratings)
        self._count(dev, refused)
        if not fields:
            raise PollError(f"{dev.key}: {plausibility.describe(refused)}", "implausible")
        quality: Quality = "partial" if data.missing or refused else "ok"
        reading = _reading(dev, datetime.now(UTC), fields, quality, "modbus", data.counter_wrap)
        if not self._emit_now(reading):
            await self._emit_when_room(reading)
        return _outcome(quality, f"missing {sorted(data.missing)}" if data.missing else "", refused)

    async def _poll_echonet(self, state: _EchonetDevice, counters: bool) -> tuple[str, str]:
        dev = state.config
        ctl = self.controller
        spec = state.spec
        notes: list[str] = []
        if state.ratings is not None:  # known since the first poll: no coroutine to learn it again
            fast, every = state.fast_epcs, state.all_epcs
        else:
            fast, every = await self._echonet_plan(state, notes)
        epcs = every if counters or not fast else fast  # a device with nothing fast: its counters
        if not epcs:
            wanted = ", ".join(f"0x{e:02X}" for e in spec.fast + spec.slow)
            raise PollError(f"{dev.key}: its Get property map lists none of {wanted}", "no_data")
        result = await ctl.get(dev.address, state.eoj, epcs)
        polled_at = datetime.now(UTC)
        try:
            decoded = echonet_decode.decode_class(spec, result.values)
        except FrameError as exc:
            raise MalformedReply(f"{dev.key}: {exc}") from exc
        if not decoded.fields and not decoded.stamped:
            raise self._nothing(dev, decoded, result.values)
        fields, refused = self._plausible(dev, decoded.fields, state.ratings or {})
        lacking = decoded.missing - spec.optional
        if lacking:
            notes.append("Get_SNA for " + ", ".join(f"0x{e:02X}" for e in sorted(lacking)))
        if decoded.wrong_length:
            notes.append(echonet_decode.wrong_lengths(decoded))
        for ts, values in decoded.stamped if self.config.fixed_time_readings else ():
            name = next(iter(values))
            # a clock that is off stays off: refused (and said in health) on every poll, not once
            why = plausibility.check_stamp(ts, polled_at, self._clock_skew)
            if why is not None:
                refused.append(Refusal(name, ts, "clock", f"fixed-time {name} {why}"))
                continue
            if state.stamped.get(name) == ts:  # each fixed-time value once (same series + ts = same point)
                continue
            state.stamped[name] = ts
            kept, wrong = self._plausible(dev, values, {})
            refused += wrong
            if kept:
                wrap = {k: v for k, v in decoded.counter_wrap.items() if k in kept}
                reading = _reading(dev, ts, kept, "ok", "echonet", wrap)
                if not self._emit_now(reading):
                    await self._emit_when_room(reading)
        if epcs == every:  # this poll asked for the fixed-time values: what it found about the clock holds
            state.clock_refused = [r for r in refused if r.kind == "clock"]
            shown = refused
        else:
            shown = refused + state.clock_refused
        self._count(dev, refused, shown)
        quality: Quality = "partial" if lacking or refused or decoded.wrong_length else "ok"
        if fields:
            reading = _reading(dev, polled_at, fields, quality, "echonet", decoded.counter_wrap)
            if not self._emit_now(reading):
                await self._emit_when_room(reading)
        elif not refused:
            raise self._nothing(dev, decoded, result.values)
        return _outcome(quality, "; ".join(notes), shown)

    @staticmethod
    def _nothing(
        dev: DeviceConfig, decoded: echonet_decode.Decoded, values: echonet_decode.Values
    ) -> PollError:
        """The failure of a poll whose answer yields no field: ``malformed`` when a property came in a
        length its class does not have (a device to look at), else ``no_data``."""
        message = f"{dev.key}: {echonet_decode.why_nothing(decoded, values)}"
        if decoded.wrong_length:
            return MalformedReply(message)
        return PollError(message, "no_data")

    async def _echonet_plan(
        self, state: _EchonetDevice, notes: list[str]
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """What to ask this object for: (every poll, counter polls), from its Get property map (0x9F),
        read once and kept only when the device really gave it; its ratings are read once too."""
        dev, spec = state.config, state.spec
        if state.readable is None:
            maps, problems = await self.controller.read_maps(dev.address, state.eoj)
            readable = maps.get(0x9F)
            if readable is None:
                # never keep a map from an answer without a usable one: ask again next time, read the
                # class meanwhile
                why = (
                    f"a Get property map (0x9F) that does not decode: {problems[0x9F]}"
                    if 0x9F in problems
                    else "no Get property map (0x9F)"
                )
                notes.append(f"gave {why}; polling what its class lists")
                return spec.fast, spec.fast + spec.slow
            state.readable = frozenset(readable)
            state.fast_epcs = tuple(e for e in spec.fast if e in state.readable)
            state.all_epcs = tuple(e for e in spec.fast + spec.slow if e in state.readable)
        if state.ratings is None:
            state.ratings = await self._echonet_ratings(state)
        return state.fast_epcs, state.all_epcs

    async def _echonet_ratings(self, state: _EchonetDevice) -> dict[str, float]:
        """The object's nameplate figures (rated output, maximum charge power), by the field each bounds."""
        spec = state.spec
        epcs = [e for e in spec.ratings if state.readable is None or e in state.readable]
        if not epcs:
            return {}
        result = await self.controller.get(state.config.address, state.eoj, epcs)
        ratings: dict[str, float] = {}
        for epc in epcs:
            edt = result.values.get(epc)
            prop = spec.by_epc[epc]
            value = prop.codec.decode(edt, {}) if edt and len(edt) == prop.codec.size else None
            if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                name = spec.ratings[epc]
                ratings[name] = max(ratings.get(name, 0.0), float(value))
        return ratings

    def _plausible(
        self, dev: DeviceConfig, fields: dict[str, FieldValue], ratings: dict[str, float]
    ) -> tuple[dict[str, FieldValue], list[Refusal]]:
        """The device's sign applied (every path: polled, pushed, stamped), then the values it cannot
        have meant taken out."""
        if dev.power_sign != 1 and isinstance(fields.get("power_w"), int | float):
            fields = {**fields, "power_w": -fields["power_w"]}  # type: ignore[operator]
        return plausibility.check_fields(fields, ratings)

    def _count(
        self, dev: DeviceConfig, refused: list[Refusal], standing: list[Refusal] | None = None
    ) -> None:
        """Count this poll's refusals by kind; log when what a device stands refused for (``standing``:
        this poll's, and a wrong clock found by an earlier poll) changes, so a clock that stays wrong is
        logged once, not on every poll nor again after each poll that did not read the clock."""
        for r in refused:
            self.implausible[r.kind] += 1
        standing = refused if standing is None else standing
        if not standing:
            self._refusal_logged.pop(dev.key, None)
            return
        message = plausibility.describe(standing)
        kinds = ",".join(sorted({r.kind for r in standing}))
        if self._refusal_logged.get(dev.key) != kinds:
            self._refusal_logged[dev.key] = kinds
            log.warning("%s: %s", dev.key, message)

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
        fields, refused = self._plausible(state.config, decoded.fields, state.ratings or {})
        self._count(state.config, refused, refused + state.clock_refused)
        if fields:
            self.pushed += 1
            now = datetime.now(UTC)
            quality: Quality = "partial" if refused else "ok"
            # a callback cannot wait for room: with a full queue the pushed reading is dropped
            self._offer(_reading(state.config, now, fields, quality, "echonet", decoded.counter_wrap))

    def _offer(self, reading: Reading) -> None:
        """Queue the reading if there is room (counted as out), else count it dropped."""
        try:
            self._queue.put_nowait(reading)
        except asyncio.QueueFull:
            self.dropped += 1
            return
        self.readings_out += 1
        if self._batch_waiter is not None:
            self._wake_batch()

    def _emit_now(self, reading: Reading) -> bool:
        """Offer the reading unless the queue is full and polls wait for room (then False: the caller
        awaits ``_emit_when_room``); a plain call, no coroutine, in the common case."""
        if not self._queue.full() or self.config.drop_when_full:
            self._offer(reading)
            return True
        return False

    async def _emit_when_room(self, reading: Reading) -> None:
        self.queue_waits += 1  # a full queue slows polling (visible as lateness)
        await self._queue.put(reading)
        self.readings_out += 1
        self._wake_batch()

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
            self._wake_batch()
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
            "implausible": dict(self.implausible),
            "queued": self._queue.qsize(),
            "echonet": vars(self.controller.stats).copy(),
        }
