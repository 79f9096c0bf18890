"""One task per device on an absolute schedule, with bounded concurrency, backoff and health.

Why absolute: poll k of a device is due at ``phase + k * interval``.  A slow poll never pushes the
later ones back (no drift); a poll that finds its slot already passed skips to the next free slot
and counts the skip.  Phases are spread over one interval by a hash of the device id, so a
thousand homes restarted together still do not poll in lockstep, and the spread is the same on
every run (reproducible lateness figures).

After a start, though, nobody should wait up to a whole interval (a minute, for a meter) for a first
reading: each device's first poll comes within ``first_poll_spread_s`` (5 s, or the interval if that
is shorter), spread over that window by the same hash, and the device then joins its own grid at the
first slot at least half an interval later -- so consecutive polls are never closer than half an
interval, nor further apart than one and a half.

Lateness = when a poll actually got its turn (after the concurrency limits) minus when it was due:
it shows both an overloaded event loop and contention for the semaphores.  Slots falling due within
``collector.timers.WINDOW_S`` (25 ms) of each other are woken together, so a poll is up to that late
by design: one wake-up of the process for several polls, not one each.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from collector.config import CollectorConfig, DeviceConfig
from collector.errors import PollError
from collector.slots import Slots
from collector.timers import timers

log = logging.getLogger(__name__)

# (health reason of a poll that yielded readings: "ok" / "partial" / "implausible", note)
Poll = Callable[[DeviceConfig, bool], Awaitable[tuple[str, str]]]
ANSWERED = frozenset({"ok", "partial", "implausible"})  # reasons of a poll that yielded readings
FIRST_POLL_SPREAD_S = 5.0  # after a start, every device is polled within this window


def jitter_fraction(key: str) -> float:
    """A stable number in [0, 1) from the device id: its phase within the interval."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0**64


def percentile(values: Iterable[float], q: float) -> float | None:
    data = sorted(values)
    if not data:
        return None
    rank = min(len(data) - 1, max(0, math.ceil(q / 100.0 * len(data)) - 1))
    return data[rank]


@dataclass(frozen=True)
class Health:
    """``reason``: ok / partial / implausible (readings came, some values were missing or refused) or
    timeout / exception:<code> / malformed / unsupported / no_data / unreachable / error:<type>."""

    reason: str = "pending"
    since: datetime | None = None
    last_ok: datetime | None = None
    failures: int = 0  # consecutive
    message: str = ""
    polls: int = 0

    @property
    def healthy(self) -> bool:
        """The device's last poll yielded readings (the reason says whether all was well)."""
        return self.reason in ANSWERED


@dataclass
class _DeviceRun:
    device: DeviceConfig
    phase: float
    first: float | None = None  # when the prompt first poll is due (None once it is done)
    k: int = 0
    next_counter: float = -math.inf
    failures: int = 0
    busy: bool = False
    skipped: int = 0
    lateness: deque[float] = field(default_factory=lambda: deque(maxlen=256))


class Scheduler:
    def __init__(
        self,
        config: CollectorConfig,
        poll: Poll,
        on_change: Callable[[str, Health], None] | None = None,
        *,
        first_poll_spread_s: float = FIRST_POLL_SPREAD_S,
    ) -> None:
        self.config = config
        self._poll = poll
        self._on_change = on_change  # told of every change of a device's health reason or message
        self.first_poll_spread_s = first_poll_spread_s
        self._global = Slots(config.max_in_flight)
        self._hosts: dict[str, Slots] = {}
        self._runs: dict[str, _DeviceRun] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._health: dict[str, Health] = {}
        self._polls: dict[str, int] = {}
        self._last_ok: dict[str, float] = {}  # epoch seconds, kept apart so a healthy poll is cheap
        self._lateness: deque[float] = deque(maxlen=50_000)
        self._stopping = False
        self._t0 = 0.0
        self.polls = 0
        self.failures = 0
        self.in_flight = 0
        for dev in config.devices:  # visible (as pending) before the first poll
            self._health[dev.key] = Health(since=datetime.now(UTC))
            self._polls[dev.key] = 0

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self, devices: Iterable[DeviceConfig]) -> None:
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        for dev in devices:
            jitter = jitter_fraction(dev.key)
            spread = min(dev.interval_s, self.first_poll_spread_s)
            run = _DeviceRun(dev, self._t0 + jitter * dev.interval_s, first=self._t0 + jitter * spread)
            self._runs[dev.key] = run
            self._health.setdefault(dev.key, Health(since=datetime.now(UTC)))
            self._polls.setdefault(dev.key, 0)
            self._tasks[dev.key] = loop.create_task(self._loop(run), name=f"poll {dev.key}")

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop scheduling; polls already talking to a device may finish within ``grace_s``."""
        self._stopping = True
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        busy = []
        for key, task in self._tasks.items():
            if self._runs[key].busy:
                busy.append(task)
            else:
                task.cancel()
        if busy:
            _, pending = await asyncio.wait(busy, timeout=grace)
            for task in pending:
                task.cancel()
        tasks = list(self._tasks.values())
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    # --- the per-device loop ---------------------------------------------------------------------

    def _host_slots(self, address: str) -> Slots:
        slots = self._hosts.get(address)
        if slots is None:
            slots = self._hosts[address] = Slots(self.config.max_in_flight_per_host)
        return slots

    async def _loop(self, run: _DeviceRun) -> None:
        loop = asyncio.get_running_loop()
        dev = run.device
        interval = dev.interval_s
        host = self._host_slots(f"{dev.protocol}:{dev.address}:{dev.port}")
        every = self._global
        wake_at = timers(loop).wake_at  # slots due within a few ms of each other share one wake-up
        while not self._stopping:
            due = run.first if run.first is not None else run.phase + run.k * interval
            if due > loop.time():
                await wake_at(due)
            counter_due = due >= run.next_counter - 1e-6
            if not every.take_now():
                await every.take()
            try:
                if not host.take_now():
                    await host.take()
                try:
                    if self._stopping:
                        return
                    late = loop.time() - due
                    run.lateness.append(late)
                    self._lateness.append(late)
                    run.busy = True
                    self.in_flight += 1
                    try:
                        quality, note = await self._poll(dev, counter_due)
                    except PollError as exc:
                        self._fail(run, exc.reason, str(exc))
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # a bug in a decoder must not stop this device for good
                        log.exception("poll of %s failed", dev.key)
                        self._fail(run, f"error:{type(exc).__name__}", str(exc))
                    else:
                        self._ok(run, quality, note)
                        if counter_due:
                            run.next_counter = due + dev.counter_interval_s
                    finally:
                        run.busy = False
                        self.in_flight -= 1
                        self.polls += 1
                finally:
                    host.release()
            finally:
                every.release()
            earliest = loop.time()
            if run.failures:
                earliest += min(
                    self.config.backoff_base_s * 2.0 ** (run.failures - 1), self.config.backoff_max_s
                )
            if run.first is not None:  # join the grid at least half an interval after the first poll
                earliest = max(earliest, run.first + interval / 2)
                run.first = None
                run.k = max(0, math.ceil((earliest - run.phase) / interval - 1e-9))
                continue
            nxt = max(run.k + 1, math.ceil((earliest - run.phase) / interval - 1e-9))
            if not run.failures:
                run.skipped += nxt - run.k - 1
            run.k = nxt

    def _set(self, key: str, reason: str, message: str, ok: bool, failures: int) -> None:
        old = self._health[key]
        if ok and old.reason == reason and old.message == message:
            self._last_ok[key] = time.time()  # the common case: nothing changed, no allocation
            return
        now = datetime.now(UTC)
        if ok:
            self._last_ok[key] = now.timestamp()
        new = self._health[key] = replace(
            old,
            reason=reason,
            since=old.since if old.reason == reason else now,
            failures=failures,
            message=message,
        )
        if self._on_change is not None and new.reason != old.reason:
            self._on_change(key, new)

    def _ok(self, run: _DeviceRun, quality: str, note: str) -> None:
        run.failures = 0
        self._polls[run.device.key] += 1
        self._set(run.device.key, quality if quality in ANSWERED else "ok", note, True, 0)

    def _fail(self, run: _DeviceRun, reason: str, message: str) -> None:
        run.failures += 1
        self.failures += 1
        self._polls[run.device.key] += 1
        self._set(run.device.key, reason, message, False, run.failures)

    # --- views -----------------------------------------------------------------------------------

    def health(self) -> dict[str, Health]:
        out: dict[str, Health] = {}
        for key, h in self._health.items():
            ok_at = self._last_ok.get(key)
            last_ok = datetime.fromtimestamp(ok_at, UTC) if ok_at is not None else None
            out[key] = replace(h, last_ok=last_ok, polls=self._polls[key])
        return out

    def mark(self, key: str, reason: str, message: str) -> None:
        """Health from outside the poll loop (discovery found the device missing)."""
        if key in self._health and self._health[key].reason == "pending":
            self._set(key, reason, message, False, 0)  # not a poll: the count stays

    @property
    def first_round_s(self) -> float:
        """Seconds after ``start()`` by which every device's first poll was due."""
        return max((min(d.interval_s, self.first_poll_spread_s) for d in self.config.devices), default=0.0)

    def device_lateness(self, key: str) -> list[float]:
        return list(self._runs[key].lateness)

    def stats(self) -> dict[str, float | int | None]:
        late = list(self._lateness)
        return {
            "devices": len(self._runs),
            "polls": self.polls,
            "failures": self.failures,
            "in_flight": self.in_flight,
            "skipped_slots": sum(r.skipped for r in self._runs.values()),
            "lateness_p50_s": percentile(late, 50),
            "lateness_p99_s": percentile(late, 99),
            "lateness_max_s": max(late) if late else None,
        }

    def reset_lateness(self) -> None:
        """Start a new measurement window (lateness samples and skipped-slot counts)."""
        self._lateness.clear()
        for run in self._runs.values():
            run.lateness.clear()
            run.skipped = 0
