"""The pipeline's front door: Readings in, durable points out.

``Pipeline.submit(readings)`` validates each reading (bad fields dropped and counted), turns counters
into monotonic totals, converts to ``Point``s and adds them to the current batch; a batch is written
when it reaches ``batch_size`` points or ``max_delay`` after its first point, whichever comes first.

Acknowledgement: ``submit`` returns only when every accepted reading of the call is either committed
in the store or fsync'd in the spool (several concurrent callers share one batch and one commit).
If neither is possible -- the spool refuses the batch (full under the ``refuse`` policy, or its disk
failed) and the store does not take it either -- ``submit`` raises ``Backpressure`` with a
``reason`` (``spool_full``, ``spool_write_failed``): those readings are NOT stored, are not counted
as accepted, and the caller still owns them (``hems collect`` counts them as lost by that reason;
an ingest endpoint would answer "retry later").  Rejected readings are reported in the returned
``SubmitResult`` and counted; they are never acknowledged as stored.

The store never holds anything up for long: a write that takes longer than ``store_write_timeout``
is abandoned as an outage (``StoreUnavailable``) and its batch spooled, however long the store's own
retries would have taken (a hung InfluxDB used to cost ~44 s per batch).  Abandoning is safe because
writes are upserts: a prefix that landed is simply written again at replay.

A store error that is not ``StoreUnavailable`` means the store refuses the data itself (a bug
upstream, or a ``SchemaError``: a schema that does not fit); it is counted by kind, logged and raised
to the submitters rather than spooled, since a retry cannot succeed.

While the spool holds anything, new batches are appended behind it rather than written directly, and
a background task replays the spool oldest first; this keeps the store receiving data in arrival
order.  Batches are written one at a time (an I/O lock) for the same reason; the replayer runs
outside that lock so a store that is slow to fail never delays acknowledgements from the spool.
``write_concurrency`` > 1 lets that many batches be encoded and sent at once (a fleet's ingest: the
next batch's first chunks go out while the last ones of the batch before are still in flight, so
the store is never left idle between batches); a batch a store has sent whole (``SendsAhead``: the
InfluxDB store) makes room for the next one while its answers are awaited, so that one's first
request is ready when a request slot frees, up to twice ``write_concurrency`` batches with the store
in all.  Then a batch can land before an earlier one that
failed and was spooled; points are upserts by series and timestamp, so that only matters for a point
sent twice with different values, as between the concurrent chunks of one store write.
The exception: a batch the spool would refuse, or make room for by dropping older readings, is
offered to the store first -- so a full spool neither refuses nor drops anything the store would
take, even while the replayer still waits out its backoff.

A home gateway's pipeline is ``spool_first``: every batch goes into the spool (its outbox) and only
the replayer talks to the fleet, a backlog several batches per request (``Spool.peek_records``, each
batch committed or released on its own).  A store that says when to come back (``StoreUnavailable``
with ``retry_after_s``: a fleet's 429/503 ``Retry-After``) is not tried again before then, neither
by the replayer nor by a full spool's offer.  ``copy_to`` keeps the home's own store current as each
batch is spooled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from collector.reading import Reading
from pipeline.columns import ColumnBatch
from pipeline.counters import CounterStateFile, CounterTracker
from pipeline.errors import PipelineError, SchemaError
from pipeline.losses import SPOOL_FULL, SPOOL_WRITE_FAILED
from pipeline.points import Point
from pipeline.query import datetime_to_ns
from pipeline.spool import RecordId, Spool, SpoolFull, SpoolWriteFailed
from pipeline.store import SendsAhead, Sink, Store, StoreUnavailable
from pipeline.validate import Validator

log = logging.getLogger(__name__)


# A ``submit`` gives the event loop back after this many readings (see ``Pipeline.submit``).
SUBMIT_SLICE = 500
# At close, how long a Retry-After is waited out before the last replay (systemd allows 90 s to stop).
CLOSE_WAIT_MAX_S = 10.0


class Backpressure(PipelineError):
    """The store is unavailable and the spool refused the batch: the readings were not acknowledged.

    ``reason`` says why the spool refused: ``spool_full`` (at its limit under ``refuse``) or
    ``spool_write_failed`` (its disk failed), the names ``pipeline.losses`` counts losses under."""

    def __init__(self, message: str, reason: str = SPOOL_FULL) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SubmitResult:
    accepted: int
    rejected: tuple[tuple[int, str], ...]  # (index in the submitted sequence, reason)


@dataclass
class WriterStats:
    readings_accepted: int = 0
    points_written: int = 0
    batches_written: int = 0
    spooled_batches: int = 0
    spooled_points: int = 0
    replayed_batches: int = 0
    replayed_points: int = 0
    backpressure_batches: int = 0
    backpressure_points: int = 0
    store_failures: Counter[str] = field(default_factory=Counter)
    store_latency_count: int = 0
    store_latency_sum_s: float = 0.0
    store_latency_max_s: float = 0.0

    def observe_latency(self, seconds: float) -> None:
        self.store_latency_count += 1
        self.store_latency_sum_s += seconds
        self.store_latency_max_s = max(self.store_latency_max_s, seconds)


@dataclass
class _Batch:
    # Readings go straight into columns (one buffer per measurement and field names): the stores write
    # them column by column, and no ``Point`` object is made per reading on the way.
    points: ColumnBatch = field(default_factory=ColumnBatch)
    done: asyncio.Future[None] | None = None


class Pipeline:
    def __init__(
        self,
        store: Sink,
        *,
        spool: Spool | None = None,
        counter_state: CounterStateFile | None = None,
        validator: Validator | None = None,
        batch_size: int = 5000,
        max_delay: float = 1.0,
        replay_interval: float = 1.0,
        max_replay_backoff: float = 30.0,
        store_write_timeout: float = 5.0,
        spool_first: bool = False,
        copy_to: Store | None = None,
        write_concurrency: int = 1,
    ) -> None:
        if spool_first and spool is None:
            raise ValueError("spool_first needs a spool")
        if copy_to is not None and not spool_first:
            raise ValueError("copy_to is for spool_first pipelines (a gateway's own store)")
        if write_concurrency < 1:
            raise ValueError("write_concurrency must be >= 1")
        self.store = store
        self.spool = spool
        # A home gateway's pipeline: every batch goes to the spool (its outbox) and only the replayer
        # talks to the fleet, so polling never waits on the network; ``copy_to`` (the home's own
        # embedded store) is written as each batch is spooled, so it stays current during an outage.
        self.spool_first = spool_first
        self.copy_to = copy_to
        self.validator = validator or Validator()
        self.counters = CounterTracker()
        self._state_file = counter_state
        if counter_state is not None:
            self.counters.states.update(counter_state.load())
        self.batch_size = batch_size
        self.max_delay = max_delay
        self.replay_interval = replay_interval
        self.max_replay_backoff = max_replay_backoff
        self.store_write_timeout = store_write_timeout
        self.store_up = True  # the last store write's outcome (optimistic before the first)
        self.stats = WriterStats()
        self._batch = _Batch()  # filling; full ones wait in ``_sealed`` (oldest first) to be written
        self._sealed: deque[_Batch] = deque()
        # Batches being written at once (see the module docstring); one by default.
        self.write_concurrency = write_concurrency
        # Batches being encoded and sent at once; with ``write_concurrency`` > 1, a batch a store has
        # sent whole (``SendsAhead``) gives its place to the next one while it waits for its answers,
        # and up to ``_max_writes`` batches are with the store in all (sending or waiting).
        self._io_lock = asyncio.Semaphore(write_concurrency)
        self._max_writes = 2 * write_concurrency if write_concurrency > 1 else 1
        self._writing: set[asyncio.Task[BaseException | None]] = set()  # the flusher's writes
        self._intake = asyncio.Lock()  # one slice of a submit's intake at a time (see ``submit``)
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._replay_wakeup = asyncio.Event()
        self._replay_lock = asyncio.Lock()  # one replay at a time: replayer or close()
        self._stopping = False
        # Loop time before which the store asked not to be tried again (``StoreUnavailable.retry_after_s``).
        self._not_before = 0.0
        self._in_flight_points = 0

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the batching and replay tasks (call once, inside the event loop)."""
        if self._tasks:
            return
        self._tasks.append(asyncio.create_task(self._flusher(), name="pipeline-flusher"))
        if self.spool is not None:
            self._tasks.append(asyncio.create_task(self._replayer(), name="pipeline-replayer"))

    async def __aenter__(self) -> Pipeline:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def flush(self) -> None:
        """Make everything submitted so far durable (store or spool); raises ``Backpressure`` if a
        batch could be neither written nor spooled, or the store's refusal of a batch's data (its
        submitters got the same error)."""
        failure: BaseException | None = None
        while self._sealed or self._batch.points:
            failure = await self._flush_once() or failure
        for outcome in await asyncio.gather(*self._writing, return_exceptions=True):
            failure = failure or outcome
        if isinstance(failure, PipelineError):  # Backpressure, or the store's refusal of the data
            raise failure
        if failure is not None:
            raise Backpressure(str(failure)) from failure

    async def close(self) -> None:
        """Drain the current batch, try one last replay, stop background tasks.  The store is not
        closed: whoever opened it owns it."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.flush()
        except Backpressure as exc:
            log.error("pipeline closed with unacknowledged readings: %s", exc)
        except Exception as exc:  # shutdown goes on whatever the store or the disk does
            log.error("pipeline could not flush at close: %s", exc)
        self._stopping = True
        self._replay_wakeup.set()  # the replayer finishes its current batch and returns
        for task in self._tasks:
            if task.get_name() != "pipeline-replayer":
                task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await asyncio.gather(*self._writing, return_exceptions=True)  # writes the flusher started
        if self.spool is not None:
            try:
                await self._last_replay()
            except Exception as exc:  # what is left stays spooled for the next start
                log.error("last replay at close failed, %d batches stay spooled: %s", len(self.spool), exc)
            self.spool.close()
        if self._state_file is not None:
            await self._save_state()
            self._state_file.close()
        self.validator.stats.flush_log()  # the refusals since each reason's last line

    async def _last_replay(self) -> None:
        """One last replay at close.  A store that asks for a short pause (Retry-After) gets it, and
        is asked again, for up to ``CLOSE_WAIT_MAX_S``; a longer pause, or a store that does not
        answer, is honoured by leaving the batches in the spool for the next start."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_WAIT_MAX_S
        while True:
            hold = self._not_before - loop.time()
            if loop.time() + max(0.0, hold) > deadline:
                return
            await asyncio.sleep(max(0.0, hold))
            told_before = self._not_before
            if await self._replay_some() or self._not_before == told_before:
                return  # replayed, or failed without being told when to come back

    # -- intake --------------------------------------------------------------------------------------

    async def submit(self, readings: Iterable[Reading], now: datetime | None = None) -> SubmitResult:
        """Validate and enqueue; return once durable (see module docstring for the exact promise).

        A long call gives the event loop back every ``SUBMIT_SLICE`` readings, and one slice is
        taken in at a time whoever submits it (``_intake``, a fair lock held over the pause after
        a slice): intake is the pipeline's costliest Python, and a store write waiting behind a
        queue of large submits would leave the store idle.  With many concurrent callers (an
        ingest's uploads) the loop's ready queue so holds one slice of intake, not one per caller,
        and every step of a store write (a chunk encoded, a request sent, an answer read) waits for
        at most one slice instead of a round of all of them.  Readings of one call may so land in
        more than one batch; the call returns when all of them are durable."""
        if self._closed:
            raise RuntimeError("pipeline is closed")
        now_ns = datetime_to_ns(now or datetime.now(UTC))
        given = readings if isinstance(readings, list | tuple) else list(readings)
        rejected: list[tuple[int, str]] = []
        waits: list[tuple[_Batch, int]] = []  # the batches holding this call's readings, and how many
        for start in range(0, len(given), SUBMIT_SLICE):
            async with self._intake:
                batch = self._batch  # (the flusher may have taken the one filled before the pause)
                before = len(batch.points)
                refused = self.validator.accept_into(
                    given[start : start + SUBMIT_SLICE], now_ns, self.counters.apply, batch.points.add
                )
                rejected += [(start + i, reason) for i, reason in refused]
                if len(batch.points) > before:
                    waits.append((batch, self._mark(batch, len(batch.points) - before)))
                # The loop runs what is ready (the store's I/O) before anyone's next slice: the other
                # callers wait on the lock, not in the loop's ready queue.
                await asyncio.sleep(0)
        return await self._acknowledged(waits, rejected)

    async def submit_points(
        self, points: ColumnBatch | Iterable[Point], now: datetime | None = None
    ) -> SubmitResult:
        """``submit`` for points whose counters were already made monotonic where their readings were
        taken (a home gateway's upload, see ``access.api.ingest``): validated again, not counted again.
        A ``ColumnBatch`` (an upload as ``pipeline.lineparse`` reads it) joins the batch being filled
        as it is, without a ``Point`` per row.  Same promise as ``submit``."""
        if self._closed:
            raise RuntimeError("pipeline is closed")
        given = points if isinstance(points, ColumnBatch) else ColumnBatch(points)
        good, rejected = self.validator.check_batch(given, now)
        batch = self._batch
        batch.points.extend(good)
        return await self._enqueued(batch, len(good), rejected)

    @property
    def pending_points(self) -> int:
        """Points accepted but not yet durable: how far the store is behind (the ingest's saturation)."""
        return len(self._batch.points) + sum(len(b.points) for b in self._sealed) + self._in_flight_points

    async def _enqueued(self, batch: _Batch, added: int, rejected: list[tuple[int, str]]) -> SubmitResult:
        """Wait until the ``added`` points just put into ``batch`` are durable."""
        if added == 0:
            return SubmitResult(0, tuple(rejected))
        return await self._acknowledged([(batch, self._mark(batch, added))], rejected)

    def _mark(self, batch: _Batch, added: int) -> int:
        """Note that ``added`` points were just put into ``batch`` (which a caller will wait for), and
        seal it if it is full; returns ``added``."""
        if batch.done is None:
            batch.done = asyncio.get_running_loop().create_future()
        self._wake.set()
        if batch is self._batch and len(batch.points) >= self.batch_size:
            # Later readings start the next batch, so this one can be written while that one fills.
            self._sealed.append(batch)
            self._batch = _Batch()
            self._full.set()
        return added

    async def _acknowledged(
        self, waits: list[tuple[_Batch, int]], rejected: list[tuple[int, str]]
    ) -> SubmitResult:
        """Wait until every batch in ``waits`` is durable; the first failure is raised."""
        added = sum(n for _, n in waits)
        for batch, _ in waits:
            done = batch.done
            assert done is not None
            while not self._tasks and not done.done():  # not started: write now, oldest batch first
                await self._flush_once()
            await asyncio.shield(done)
        # Counted once acknowledged: a refused batch a caller submits again is not counted twice.
        self.stats.readings_accepted += added
        return SubmitResult(added, tuple(rejected))

    # -- batching ------------------------------------------------------------------------------------

    async def _flusher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._sealed:
                if not self._batch.points:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), timeout=self.max_delay)
            self._full.clear()
            # Each write is a task of its own (one path for any ``write_concurrency``): the flusher
            # never dies of a write's failure (submitters would wait forever), and stopping it at
            # close does not cancel a write in progress (``close`` waits for it).
            await self._start_flush()
            if self._sealed or self._batch.points:
                self._wake.set()

    async def _start_flush(self) -> None:
        """Start writing the oldest batch beside those being written, once fewer than
        ``write_concurrency`` are being sent (and fewer than ``_max_writes`` are with the store): the
        next batch's first chunks go to the store while the last ones of the batch before are still
        in flight, so the store is never left idle between batches."""
        while len(self._writing) >= self._max_writes:
            await asyncio.wait(self._writing, return_when=asyncio.FIRST_COMPLETED)
        await self._io_lock.acquire()  # (handed to the task: no await before it owns it)
        task = asyncio.create_task(self._flush_once(locked=True))
        self._writing.add(task)
        task.add_done_callback(self._flush_done)

    def _flush_done(self, task: asyncio.Task[BaseException | None]) -> None:
        self._writing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # (_flush_once turns store/spool failures into per-batch errors; this is for the unexpected.)
            log.error("flush failed", exc_info=task.exception())

    async def _flush_once(self, *, locked: bool = False) -> BaseException | None:
        """Write the oldest batch (the one filling if none is sealed), holding a place of
        ``_io_lock`` (taken here unless ``locked``: the caller took it) until the batch is written or,
        with ``write_concurrency`` > 1, until the store has sent it whole."""
        if not locked:
            await self._io_lock.acquire()
        release = _ReleaseOnce(self._io_lock)
        try:
            if self._sealed:
                batch = self._sealed.popleft()
            else:
                batch, self._batch = self._batch, _Batch()
            if not batch.points:
                return None
            self._in_flight_points += len(batch.points)
            try:
                return await self._flush_batch(batch, release if self.write_concurrency > 1 else None)
            finally:
                self._in_flight_points -= len(batch.points)
        finally:
            release()

    async def _flush_batch(
        self, batch: _Batch, sent: Callable[[], None] | None = None
    ) -> BaseException | None:
        # State first, points second: a crash in between leaves the state ahead of the data,
        # which still gives monotonic totals (see pipeline.counters).
        if self._state_file is not None:
            await self._save_state()
        try:
            await self._persist(batch.points, sent)
        except Exception as exc:
            if isinstance(exc, Backpressure):  # refused by the spool and the store alike
                self.stats.backpressure_batches += 1
                self.stats.backpressure_points += len(batch.points)
            if batch.done is not None and not batch.done.done():
                batch.done.set_exception(exc)
                batch.done.exception()  # mark retrieved: callers may have gone away
            return exc
        if batch.done is not None and not batch.done.done():
            batch.done.set_result(None)
        return None

    async def _save_state(self) -> None:
        assert self._state_file is not None
        changed = self.counters.take_dirty()  # snapshot now, in step with the batch just taken
        try:
            await asyncio.to_thread(self._state_file.save, changed)
        except Exception:
            # Keep them dirty for the next attempt; a failed save costs a possible reset, not data.
            self.counters.dirty.update(changed)
            self.stats.store_failures["counter_state_save"] += 1
            log.exception("could not persist counter state")

    async def _persist(self, points: Sequence[Point], sent: Callable[[], None] | None = None) -> None:
        """Store or spool ``points``; ``sent`` is called once a store that ``SendsAhead`` has sent
        them whole (written straight to the store only: a spooled batch holds its place to the end)."""
        spool = self.spool
        if spool is not None and (self.spool_first or len(spool) > 0):
            # Behind what is already spooled, to keep arrival order; the replayer drains it.
            if self.copy_to is not None:
                await self._copy(points)
            try:
                await self._to_spool(points, make_room=False)
            except Backpressure:
                # The spool would refuse it, or drop older readings for it: offer it to the store
                # first (it may be back while the replayer waits out its backoff); only if the store
                # will not take it either is it refused, or room made by dropping the oldest.
                if await self._write_direct(points, quiet=True):
                    self._replay_wakeup.set()
                    return
                if spool.policy != "drop_oldest":
                    raise
                await self._to_spool(points)
            self._replay_wakeup.set()
            return
        if await self._write_direct(points, sent=sent):
            return
        await self._to_spool(points)
        self._replay_wakeup.set()

    async def _write_direct(
        self, points: Sequence[Point], *, quiet: bool = False, sent: Callable[[], None] | None = None
    ) -> bool:
        """Write to the store; False on an outage (when there is a spool to fall back on).  A store
        that refuses the data itself raises (counted and logged).  A store that asked not to be tried
        before a time is not tried before it (an outage until then)."""
        hold = self._not_before - asyncio.get_running_loop().time()
        if hold > 0:
            if self.spool is None:
                raise StoreUnavailable(f"the store asked not to be tried for another {hold:.1f} s")
            return False
        try:
            await self._write_store(points, sent)
        except StoreUnavailable as exc:
            self._note_failure(exc, quiet=quiet)
            if self.spool is None:
                raise
            return False
        except Exception as exc:
            self._note_failure(exc)
            raise
        self.stats.points_written += len(points)
        self.stats.batches_written += 1
        return True

    async def _copy(self, points: Sequence[Point]) -> None:
        """The gateway's own copy: a failure is logged and counted but never holds up the upload, which
        is the copy the fleet keeps."""
        assert self.copy_to is not None
        try:
            await self.copy_to.write(points)
        except Exception:
            self.stats.store_failures["local_copy"] += 1
            log.exception("could not write %d points to the local store", len(points))

    async def _write_store(self, points: Sequence[Point], sent: Callable[[], None] | None = None) -> None:
        """One store write, bounded by ``store_write_timeout`` (then it counts as an outage); ``sent``
        is told when a store that ``SendsAhead`` has sent the points whole."""
        t0 = time.perf_counter()
        store = self.store
        writing = (
            store.write_sending(points, sent)
            if sent is not None and isinstance(store, SendsAhead)
            else store.write(points)
        )
        try:
            await asyncio.wait_for(writing, timeout=self.store_write_timeout)
        except TimeoutError:
            self.store_up = False
            self.stats.store_failures["timeout"] += 1
            raise StoreUnavailable(
                f"store write of {len(points)} points took longer than {self.store_write_timeout:g} s"
            ) from None
        except StoreUnavailable as exc:
            self.store_up = False
            if exc.retry_after_s is not None:  # the store said when to come back (429/503 Retry-After)
                self._not_before = asyncio.get_running_loop().time() + exc.retry_after_s
            raise
        self.store_up = True
        self.stats.observe_latency(time.perf_counter() - t0)

    def _note_failure(self, exc: BaseException, *, quiet: bool = False) -> None:
        if isinstance(exc, StoreUnavailable):
            self.stats.store_failures["unavailable"] += 1
            if not quiet:  # quiet: a retry of a store already known down, not news for the log
                log.warning("store unavailable: %s", exc)
        elif isinstance(exc, SchemaError):
            # Not an outage either: the store's schema does not fit this code; fix it, do not wait.
            self.stats.store_failures["schema"] += 1
            log.error("store schema error, batch refused: %s", exc)
        else:
            # Not an outage but a refusal of this data (a bug upstream): retrying cannot help.
            self.stats.store_failures["error"] += 1
            log.error("store refused a batch", exc_info=exc)

    async def _to_spool(self, points: Sequence[Point], *, make_room: bool = True) -> None:
        assert self.spool is not None
        spool = self.spool
        try:
            await asyncio.to_thread(functools.partial(spool.append, points, make_room=make_room))
        except SpoolFull as exc:
            raise Backpressure(str(exc), SPOOL_FULL) from exc
        except (SpoolWriteFailed, OSError) as exc:
            # Disk full or the spool volume itself failing: refused like a full spool, by its reason.
            self.stats.store_failures["spool_io"] += 1
            raise Backpressure(f"spool write failed: {exc}", SPOOL_WRITE_FAILED) from exc
        self.stats.spooled_batches += 1
        self.stats.spooled_points += len(points)

    # -- replay --------------------------------------------------------------------------------------

    async def _replay_some(self, max_batches: int = 50) -> bool:
        """Replay up to ``max_batches`` hand-outs of spooled batches in order (a gateway's several
        batches at once); False if the store failed.  Each batch handed out is committed or released
        on its own, so the spool's accounting (and ``drop_oldest``'s losses) stays per batch."""
        assert self.spool is not None
        spool = self.spool
        async with self._replay_lock:
            single = False
            for _ in range(max_batches):
                if self.spool_first and not single:
                    # A gateway's backlog (after an outage) goes up in few requests, not one per batch.
                    found = await asyncio.to_thread(spool.peek_records, self.batch_size)
                else:
                    oldest = await asyncio.to_thread(spool.peek_record)
                    found = [] if oldest is None else [oldest]
                if not found:
                    return True
                records = [record for record, _ in found]
                points = [p for _, batch in found for p in batch]
                try:
                    await self._write_store(points)
                except StoreUnavailable as exc:
                    self._note_failure(exc)
                    await asyncio.to_thread(_release_all, spool, records)
                    return False
                except Exception as exc:
                    self._note_failure(exc)
                    if len(records) > 1:
                        # Find which batch the store refuses: one at a time from here.
                        await asyncio.to_thread(_release_all, spool, records)
                        single = True
                        continue
                    # The store refuses this batch itself: set it aside (kept on disk, counted) so
                    # one poisoned record cannot block every later one.
                    await asyncio.to_thread(spool.quarantine, records[0])
                    continue
                for record, batch in found:
                    if await asyncio.to_thread(spool.commit, record):
                        self.stats.replayed_batches += 1
                        self.stats.replayed_points += len(batch)
                if self._stopping and self._in_replayer():
                    return True
        return True

    def _in_replayer(self) -> bool:
        task = asyncio.current_task()
        return task is not None and task.get_name() == "pipeline-replayer"

    async def _replayer(self) -> None:
        assert self.spool is not None
        loop = asyncio.get_running_loop()
        delay = backoff = self.replay_interval
        retry_at = 0.0  # after a failed replay: not before this loop time, unless the store is back
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._replay_wakeup.wait(), timeout=delay)
            self._replay_wakeup.clear()
            if self._stopping:
                return
            if len(self.spool) == 0:
                delay = backoff = self.replay_interval
                retry_at = 0.0
                continue
            wait = retry_at - loop.time()
            if wait > 0 and not self.store_up:
                # Woken by a new batch spooled during the outage: knocking on a store known down at
                # every flush would only fill the log; the backoff stands until a direct write (a
                # full spool's offer) finds the store back.
                delay = wait
                continue
            hold = self._not_before - asyncio.get_running_loop().time()
            if hold > 0:
                # The store said when to come back (429/503 Retry-After): a new batch waking the
                # replayer earlier must not make it knock again sooner.
                delay = hold
                continue
            try:
                # Not under the I/O lock: a slow or failing store must not hold up acknowledgements.
                # Flushes only bypass the spool once it is empty, so order is still kept.
                ok = await self._replay_some()
            except Exception:
                # The replayer must outlive any surprise, or the spool would never drain.
                log.exception("spool replay failed")
                ok = False
            backoff = self.replay_interval if ok else min(backoff * 2, self.max_replay_backoff)
            delay = backoff
            retry_at = 0.0 if ok else loop.time() + backoff
            if ok and len(self.spool) > 0:
                delay = 0.0

    # -- observability -------------------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        """Flat-ish dict for /metrics: everything counted anywhere in the pipeline."""
        s = self.stats
        out: dict[str, Any] = {
            "readings_accepted": s.readings_accepted,
            "validation": self.validator.stats.as_dict(),
            "counters": dict(self.counters.stats),
            "points_written": s.points_written,
            "batches_written": s.batches_written,
            "spooled_batches": s.spooled_batches,
            "spooled_points": s.spooled_points,
            "replayed_batches": s.replayed_batches,
            "replayed_points": s.replayed_points,
            "backpressure_batches": s.backpressure_batches,
            "backpressure_points": s.backpressure_points,
            "store_failures": dict(s.store_failures),
            "store_latency_count": s.store_latency_count,
            "store_latency_sum_s": s.store_latency_sum_s,
            "store_latency_max_s": s.store_latency_max_s,
            "store_up": int(self.store_up),
            "pending_points": self.pending_points,
            "lost": {},
        }
        if self.spool is not None:
            out["spool_depth_batches"] = self.spool.depth_batches
            out["spool_depth_points"] = self.spool.depth_points
            out["spool_bytes"] = self.spool.size_bytes
            out["spool_max_bytes"] = self.spool.max_bytes
            out["spool_fill_ratio"] = self.spool.fill_ratio
            out["spool_fill_warning"] = int(self.spool.fill_ratio >= self.spool.warn_fraction)
            out["spool_events"] = dict(self.spool.stats.events)
            out["lost"] = self.spool.losses.counts()
        return out


class _ReleaseOnce:
    """Gives a batch's place of the writer's ``_io_lock`` back once, whichever comes first: the store
    saying it sent the batch whole, or the batch's write ending."""

    __slots__ = ("_lock",)

    def __init__(self, lock: asyncio.Semaphore) -> None:
        self._lock: asyncio.Semaphore | None = lock

    def __call__(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()


def _release_all(spool: Spool, records: list[RecordId]) -> None:
    """Give back every batch of a hand-out the store did not take (a batch ``drop_oldest`` deleted
    meanwhile is counted as lost by the spool, each on its own)."""
    for record in records:
        spool.release(record)
