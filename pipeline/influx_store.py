"""The fleet store: InfluxDB 2.x through influxdb-client's async API.

Writes: points are serialized by ``pipeline.lineproto`` (validated, injection-safe), sent in batches
of ``batch_points`` with a bounded number in flight (the next batch is encoded while earlier ones
are with the server, see ``write``), gzip-compressed by ISA-L (4x less CPU than zlib's level 1 for
the same size; the client library's own gzip uses level 9, which costs more CPU per point than the
serializing itself).  A failed batch is retried with exponential backoff (jittered), and a 429/503 answer's
``Retry-After`` is honoured, but only a bounded number of times: after that the store raises
``StoreUnavailable`` so the writer spools instead of stalling collection.  Writes are idempotent (same
series + timestamp overwrites), so resending a batch that partly landed is always safe.

Queries: Flux whose text is fixed by this module; every value that comes from a ``SeriesQuery``
(households, devices, category, fields, start/stop, every) travels as a query parameter (an ``extern``
option the server receives as a typed literal in the request's AST), never as Flux source text, so a
hostile id can at worst be an unmatched string.  The answer (annotated CSV) is reshaped to the exact
frame ``SeriesQuery`` promises, via ``pipeline.frames`` for raw points, so it equals the SQLite
store's frame for the same data.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import io
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any, Final

import aiohttp
import polars as pl
from influxdb_client import WritePrecision
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.domain.dialect import Dialect
from influxdb_client.rest import ApiException
from influxdb_client.service.write_service import WriteService
from isal import igzip

from pipeline.columns import ColumnBatch
from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError
from pipeline.frames import empty_result, result_schema, shape_result
from pipeline.lineproto import LineEncoder
from pipeline.points import Point
from pipeline.query import BOOL_FIELDS, TEXT_FIELDS, Deletion, SeriesQuery, datetime_to_ns, valid_id
from pipeline.rollup import DAY_NS, HOUR_NS
from pipeline.store import StoreUnavailable
from pipeline.stores import StorePlugin
from seeds.vocabulary import STORED_CATEGORIES

# Statuses after which the same request may succeed later.
_RETRYABLE: Final = frozenset({408, 429, 500, 502, 503, 504})
# Statuses that mean "this deployment is misconfigured" (token, org, bucket): nothing to retry now,
# but the data is fine, so it must be kept (spooled) rather than dropped.
_CONFIG: Final = frozenset({401, 403, 404})
# The only Flux text that depends on a query: the function name, looked up from the validated ``agg``
# (a function cannot be passed as a parameter).
_FLUX_AGG: Final[Mapping[str, str]] = {
    "mean": "mean",
    "min": "min",
    "max": "max",
    "sum": "sum",
    "first": "first",
    "last": "last",
    "count": "count",
}
CSV_DIALECT: Final = Dialect(
    header=True, delimiter=",", annotations=["datatype"], date_time_format="RFC3339Nano"
)
_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%S%.fZ"
_NS: Final[Any] = WritePrecision.NS  # a str constant, though the method is annotated with the class
_LINE_PROTOCOL: Final = "text/plain; charset=utf-8"


_TURNS_TO_SEND: Final = 2


def _nothing() -> None:
    """(``write``: nobody to tell that everything is sent.)"""


def _isal_level(gzip_level: int) -> int:
    """``gzip_level`` (zlib's 1-9) as ISA-L's 0-3: 1 stays the fastest, 9 the smallest."""
    return 1 if gzip_level == 1 else 2 if gzip_level <= 5 else 3


class InfluxWriteRejected(PipelineError, ValueError):
    """InfluxDB refused the data itself (400/413/422, e.g. a field type conflict): retrying cannot help."""


class InfluxQueryError(PipelineError, RuntimeError):
    """The server could not run a query this module built; carries the server's message."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: ``attempts`` tries per batch, backoff ``base * 2**n`` capped at ``max_delay_s``
    (full jitter), a server's ``Retry-After`` honoured up to ``max_retry_after_s``."""

    attempts: int = 4
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0
    max_retry_after_s: float = 30.0

    def backoff(self, attempt: int) -> float:
        cap = min(self.max_delay_s, self.base_delay_s * (2**attempt))
        return random.uniform(cap / 2, cap)


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date; ``None`` if absent/garbled."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    with contextlib.suppress(AttributeError, TypeError):
        for key, value in headers.items():
            if str(key).lower() == name.lower():
                return str(value)
    return None


class InfluxStore:
    """``Store`` on InfluxDB 2.x.  Create it anywhere; the HTTP session opens on first use (it must
    belong to the running event loop)."""

    def __init__(
        self,
        url: str,
        org: str,
        bucket: str,
        token: str,
        *,
        batch_points: int = 5000,
        max_in_flight: int = 2,
        timeout_s: float = 10.0,
        gzip_level: int = 1,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if batch_points < 1 or max_in_flight < 1:
            raise ValueError("batch_points and max_in_flight must be >= 1")
        for label, value in (("url", url), ("org", org), ("bucket", bucket), ("token", token)):
            if not value:
                raise ValueError(f"InfluxDB {label} is not configured")
        self.url = url
        self.org = org
        self.bucket = bucket
        self._token = token
        self.batch_points = batch_points
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        if not 0 <= gzip_level <= 9:
            raise ValueError("gzip_level must be 0 (off) to 9")
        self.gzip_level = gzip_level
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        # Every number is stored as a float: InfluxDB fixes a field's type at first write, and the query
        # contract promises Float64 for all numeric fields anyway.
        self._encoder = LineEncoder(ints_as_floats=True)
        self._client: InfluxDBClientAsync | None = None
        self._closed = False
        self._gate_slots = asyncio.Semaphore(max_in_flight)
        self._gate_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_config(cls, config: PipelineConfig, **kwargs: Any) -> InfluxStore:
        if not (config.influx_url and config.influx_org and config.influx_bucket and config.influx_token):
            raise ValueError("InfluxDB needs HEMS_INFLUX_URL, _ORG, _BUCKET and _TOKEN")
        kwargs.setdefault("batch_points", config.batch_size)
        return cls(config.influx_url, config.influx_org, config.influx_bucket, config.influx_token, **kwargs)

    def _api(self) -> InfluxDBClientAsync:
        if self._closed:
            raise StoreUnavailable("InfluxDB store is closed")
        if self._client is None:
            self._client = InfluxDBClientAsync(
                url=self.url,
                token=self._token,
                org=self.org,
                enable_gzip=False,  # writes are compressed here; query answers are small
                timeout=int(self.timeout_s * 1000),
            )
        return self._client

    # -- writing ------------------------------------------------------------------------------------

    async def write(self, points: Sequence[Point]) -> None:
        await self.write_sending(points, _nothing)

    async def write_sending(self, points: Sequence[Point], sent: Callable[[], None]) -> None:
        """``write``, calling ``sent()`` once every chunk is encoded and has its request slot (only the
        answers, or retries, are left to wait for; see ``pipeline.store.SendsAhead``).

        Chunks of ``batch_points`` are pipelined: chunk n+1 is encoded and compressed while earlier
        ones are with the server, so the encoding time hides behind the server's.  At most
        ``max_in_flight`` requests of this store are with the server at once, whichever ``write``
        call they belong to: a writer may start its next batch while the last chunks of the one
        before are still in flight (``Pipeline(write_concurrency=...)``), and the server sees the
        same concurrency as from one call.  Encoding runs on the event loop, between the requests'
        I/O: in a worker thread it was starved of the GIL by the loop's own Python (a pipeline's
        intake), each of its ~30 returns from polars waiting up to a switch interval, so a chunk took
        3-4x longer to encode there (measured in ``bench.ingest`` (d): 65-95 ms a 10,000-point chunk
        against 20-30 ms on the loop) and the server was left without a request a fifth of the time.
        Concurrent chunks are safe because points are upserts by series and timestamp; a failure
        cancels the rest of the call and is raised (a prefix may have landed, which the ``Store``
        contract allows)."""
        if not points:
            return
        client = self._api()
        gate = self._gate()
        step = self.batch_points
        if len(points) <= step:
            payload = self._payload(points)  # may raise LineProtocolError
            async with gate:
                sent()
                await self._post(client, points, payload)
            return
        pending: set[asyncio.Future[None]] = set()
        chunks: Sequence[Sequence[Point]] = (
            points.chunks(step)
            if isinstance(points, ColumnBatch)
            else [points[i : i + step] for i in range(0, len(points), step)]
        )
        try:
            for chunk in chunks:
                # May raise LineProtocolError: nothing more is sent.
                payload = self._payload(chunk)
                await gate.acquire()
                post = asyncio.ensure_future(self._post(client, chunk, payload))
                post.add_done_callback(lambda _: gate.release())
                pending.add(post)
                # The request goes out before the next chunk's encoding holds the loop for milliseconds
                # (it waited for it: a request slot idle ~15% of the time at 1.8 fields a reading):
                # one turn of the loop starts it (aiohttp writes the headers and schedules the body),
                # the next writes the body (a task of its own before Python 3.12).
                for _ in range(_TURNS_TO_SEND):
                    await asyncio.sleep(0)
                for done in [p for p in pending if p.done()]:
                    pending.discard(done)
                    done.result()  # the first failure ends the call
            sent()
            await asyncio.gather(*pending)  # raises the first failure; the rest are cancelled below
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _gate(self) -> asyncio.Semaphore:
        """The store's ``max_in_flight`` request slots, made for the running event loop."""
        loop = asyncio.get_running_loop()
        if self._gate_loop is not loop:
            self._gate_slots, self._gate_loop = asyncio.Semaphore(self.max_in_flight), loop
        return self._gate_slots

    async def _send(self, client: InfluxDBClientAsync, chunk: Sequence[Point]) -> None:
        await self._post(client, chunk, self._payload(chunk))

    def _payload(self, chunk: Sequence[Point]) -> bytes:
        """The chunk's request body: line protocol, gzip'd by ISA-L unless ``gzip_level`` is 0."""
        body = self._encoder.encode(chunk)
        return igzip.compress(body, _isal_level(self.gzip_level), mtime=0) if self.gzip_level else body

    async def _post(self, client: InfluxDBClientAsync, chunk: Sequence[Point], payload: bytes) -> None:
        extra = {"content_encoding": "gzip"} if self.gzip_level else {}
        service = WriteService(client.api_client)
        policy = self.retry
        last = "no attempt"
        for attempt in range(policy.attempts):
            delay: float | None = None
            try:
                await service.post_write_async(
                    org=self.org,
                    bucket=self.bucket,
                    body=payload,
                    precision=_NS,
                    content_type=_LINE_PROTOCOL,
                    **extra,
                )
                return
            except ApiException as exc:
                status = int(exc.status or 0)
                detail = _error_text(exc)
                if status == 413 and len(chunk) > 1:
                    half = len(chunk) // 2
                    await self._send(client, chunk[:half])
                    await self._send(client, chunk[half:])
                    return
                if status in _CONFIG:
                    raise StoreUnavailable(
                        f"InfluxDB refused the write with {status} (check token, org {self.org!r} and "
                        f"bucket {self.bucket!r}): {detail}"
                    ) from exc
                if status and status not in _RETRYABLE:
                    raise InfluxWriteRejected(f"InfluxDB rejected a batch with {status}: {detail}") from exc
                last = f"HTTP {status or '?'}: {detail}"
                if status in (429, 503):
                    after = retry_after_seconds(_header(exc.headers, "Retry-After"))
                    if after is not None:
                        delay = min(after, policy.max_retry_after_s)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt + 1 < policy.attempts:
                await self._sleep(policy.backoff(attempt) if delay is None else delay)
        raise StoreUnavailable(
            f"InfluxDB at {self.url} unavailable after {policy.attempts} attempts ({last})"
        )

    # -- querying -----------------------------------------------------------------------------------

    async def query(self, q: SeriesQuery) -> pl.DataFrame:
        flux, params = build_flux(q, self.bucket)
        try:
            text = (
                await self._api()
                .query_api()
                .query_raw(flux, org=self.org, dialect=CSV_DIALECT, params=params)
            )
        except ApiException as exc:
            status = int(exc.status or 0)
            if not status or status in _RETRYABLE or status in _CONFIG:
                raise StoreUnavailable(f"InfluxDB query failed with {status}: {_error_text(exc)}") from exc
            raise InfluxQueryError(f"InfluxDB refused the query ({status}): {_error_text(exc)}") from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise StoreUnavailable(f"InfluxDB at {self.url} unreachable: {exc}") from exc
        frame = parse_annotated_csv(text)
        if frame.height == 0:
            return empty_result(q)
        if q.every is None:
            return shape_result(frame, q)
        return shape_windows(frame, q)

    async def delete(self, d: Deletion) -> None:
        """The delete API on the raw bucket and on the rollup buckets (``pipeline.influx_retention``: a
        rollup point is stamped at its window's start, so the range reaches back to the start of the
        window holding ``d.start`` there).  A rollup bucket that does not exist (retention never set
        up) has nothing to delete.  InfluxDB does not say how many points went: ``None``."""
        predicate = delete_predicate(d.household, d.measurement)
        start, stop = datetime_to_ns(d.start), datetime_to_ns(d.stop)
        api = self._api().delete_api()
        targets = [
            (self.bucket, start, False),
            (f"{self.bucket}_hourly", start // HOUR_NS * HOUR_NS, True),
            (f"{self.bucket}_daily", start // DAY_NS * DAY_NS, True),
        ]
        for bucket, first, optional in targets:
            try:
                # The API's range is closed at both ends: one nanosecond short of ``stop`` is [start, stop).
                await api.delete(_rfc3339(first), _rfc3339(stop - 1), predicate, bucket, org=self.org)
            except ApiException as exc:
                status = int(exc.status or 0)
                if status == 404 and optional:
                    continue
                if not status or status in _RETRYABLE or status in _CONFIG:
                    raise StoreUnavailable(
                        f"InfluxDB delete failed with {status}: {_error_text(exc)}"
                    ) from exc
                raise InfluxQueryError(f"InfluxDB refused the delete ({status}): {_error_text(exc)}") from exc
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise StoreUnavailable(f"InfluxDB at {self.url} unreachable: {exc}") from exc
        return None

    def data_version(self) -> None:
        """InfluxDB offers no cheap change counter (other writers, late points and retention all change
        answers), so nothing derived from a query is ever reused."""
        return None

    async def open(self) -> None:
        """Makes the HTTP client (its TLS context takes tens of milliseconds to load), so the first
        write does not pay for it.  Nothing else to prepare: InfluxDB has no schema to migrate (a
        field is typed at its first write) and an unreachable server is an outage the writer spools
        through, not a reason not to start."""
        if self._closed:
            raise StoreUnavailable("InfluxDB store is closed")
        self._api()

    async def ping(self) -> bool:
        if self._closed:
            return False
        try:
            return bool(await self._api().ping())
        except (TimeoutError, aiohttp.ClientError, OSError, ApiException):
            return False

    async def close(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.close()


def _error_text(exc: ApiException) -> str:
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return (str(body or exc.reason or "")).strip()[:500]


def delete_predicate(household: str, measurement: str) -> str:
    """The delete API's predicate for one household's measurement.  The API takes no parameters, only
    this text, so both values are checked again here whatever the caller did: a household id of
    letters, digits, '.', '_' and '-' and a measurement of the field table can hold no quote, and
    nothing else is ever put in."""
    if not valid_id(household) or measurement not in STORED_CATEGORIES:
        raise ValueError(f"refusing a delete predicate for {household!r}/{measurement!r}")
    return f'_measurement="{measurement}" AND household="{household}"'


def _rfc3339(ns: int) -> str:
    """An instant as RFC 3339 with nanoseconds (the delete API's resolution; a datetime has only us)."""
    seconds, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"


# -- Flux -------------------------------------------------------------------------------------------


def _any_of(column: str, prefix: str, values: Sequence[str], params: dict[str, Any]) -> str:
    """``r.col == p0 or r.col == p1 ...`` with the values bound as parameters ``prefix0..n``.

    Equality chains (rather than ``contains``) keep the predicate simple enough for InfluxDB to push
    down into its storage scan."""
    terms = []
    for i, value in enumerate(values):
        name = f"{prefix}{i}"
        params[name] = value
        terms.append(f"r.{column} == {name}")
    return " or ".join(terms)


def build_flux(q: SeriesQuery, bucket: str) -> tuple[str, dict[str, Any]]:
    """The Flux text (only this module's fixed fragments and generated parameter names) and the
    parameters carrying every value of ``q``."""
    params: dict[str, Any] = {
        "hems_bucket": bucket,
        "hems_start": q.start.astimezone(UTC),
        "hems_stop": q.stop.astimezone(UTC),
        "hems_category": q.category,
    }
    base = [
        "from(bucket: hems_bucket)",
        "  |> range(start: hems_start, stop: hems_stop)",
        "  |> filter(fn: (r) => r._measurement == hems_category)",
        f"  |> filter(fn: (r) => {_any_of('household', 'hems_h', q.households, params)})",
    ]
    if q.devices is not None:
        base.append(f"  |> filter(fn: (r) => {_any_of('device', 'hems_d', q.devices, params)})")
    # No Flux pivot: it more than doubles the server's time; the long rows are widened in polars.
    tail = ['  |> keep(columns: ["_time", "_value", "_field", "household", "device"])']
    if q.every is None:
        base.append(f"  |> filter(fn: (r) => {_any_of('_field', 'hems_f', q.fields, params)})")
        return "\n".join(base + tail), params

    params["hems_every"] = q.every
    fn = _FLUX_AGG[q.agg]
    # Fields are aggregated in groups of one value type, since Flux cannot average a bool: flags are
    # turned into 0/1 floats first for the numeric aggregates (the frame casts min/max back to bool).
    groups: dict[str, list[str]] = {}
    for name in q.fields:
        if name in BOOL_FIELDS and q.agg in ("mean", "sum", "min", "max"):
            groups.setdefault("as_float", []).append(name)
        else:
            groups.setdefault("native", []).append(name)
    lines = ["data = " + "\n".join(base).lstrip()]
    names = []
    for counter, (kind, members) in enumerate(groups.items()):
        sel = _any_of("_field", f"hems_f{counter}_", members, params)
        branch = f"b_{kind}"
        names.append(branch)
        lines.append(f"{branch} = data\n  |> filter(fn: (r) => {sel})")
        if kind == "as_float":
            lines.append("  |> toFloat()")
        lines.append(
            f'  |> aggregateWindow(every: hems_every, fn: {fn}, timeSrc: "_start", createEmpty: false)'
        )
    if len(names) == 1:
        lines.append(names[0])
    else:
        lines.append(f"union(tables: [{', '.join(names)}])")
    return "\n".join(lines + tail), params


# -- results ----------------------------------------------------------------------------------------

_CSV_TYPES: Final[Mapping[str, pl.DataType]] = {
    "double": pl.Float64(),
    "long": pl.Int64(),
    "unsignedLong": pl.UInt64(),
    "string": pl.Utf8(),
}


def parse_annotated_csv(text: str) -> pl.DataFrame:
    """Annotated CSV (``#datatype`` only) of long rows (``_time``, ``_value``, ``_field``, tags) -> one
    wide frame with ``ts_ns``, ``household``, ``device`` and a column per field (null where a point
    lacks that field).

    The answer comes in blocks, one per value type (a header is repeated whenever the column types
    change), so each block is split by field and the per-field columns are joined on the point's
    identity."""
    frames: list[pl.DataFrame] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        lines = block.split("\n")
        if not lines[0].startswith("#datatype"):
            raise InfluxQueryError(f"unexpected query answer: {lines[0][:200]!r}")
        types = lines[0].split(",")
        header = lines[1].split(",") if len(lines) > 1 else []
        if "error" in header and "reference" in header:
            message = lines[2] if len(lines) > 2 else "(no message)"
            raise InfluxQueryError(f"InfluxDB query error: {message[:500]}")
        if len(lines) < 3:
            continue
        raw = pl.read_csv(
            io.StringIO("\n".join(lines[1:])),
            infer_schema=False,
            has_header=True,
            quote_char='"',
        )
        casts: list[pl.Expr] = []
        for name, kind in zip(header, types, strict=False):
            if name in ("", "result", "table"):
                continue
            col = pl.col(name)
            if name == "_time":
                casts.append(
                    col.str.to_datetime(_TIME_FORMAT, time_unit="ns", time_zone="UTC")
                    .dt.epoch("ns")
                    .alias("ts_ns")
                )
            elif kind == "boolean":
                casts.append(col.replace_strict({"true": True, "false": False}, return_dtype=pl.Boolean))
            elif kind.startswith("dateTime"):
                continue  # _start/_stop are never kept
            else:
                casts.append(col.cast(_CSV_TYPES.get(kind, pl.Utf8()), strict=True))
        frames.append(raw.select(casts))
    return _widen(frames)


_KEYS: Final = ["ts_ns", "household", "device"]


def _widen(blocks: list[pl.DataFrame]) -> pl.DataFrame:
    per_field: dict[str, list[pl.DataFrame]] = {}
    for block in blocks:
        if "_field" not in block.columns or "_value" not in block.columns:
            raise InfluxQueryError(f"unexpected query answer with columns {block.columns}")
        for key, part in block.partition_by("_field", as_dict=True).items():
            name = str(key[0])
            per_field.setdefault(name, []).append(part.select(*_KEYS, pl.col("_value").alias(name)))
    wide: pl.DataFrame | None = None
    for parts in per_field.values():
        column = pl.concat(parts, how="diagonal_relaxed") if len(parts) > 1 else parts[0]
        wide = column if wide is None else wide.join(column, on=_KEYS, how="full", coalesce=True)
    if wide is None:
        return pl.DataFrame(schema={"ts_ns": pl.Int64(), "household": pl.Utf8(), "device": pl.Utf8()})
    return wide


def shape_windows(frame: pl.DataFrame, q: SeriesQuery) -> pl.DataFrame:
    """Server-aggregated windows -> the result frame.  Flux clips the first window to the range start,
    so ``time`` is re-aligned to the epoch grid here; a field without samples in a window that other
    fields have is null, which for ``count`` means 0."""
    assert q.every is not None
    every_us = q.every // timedelta(microseconds=1)
    schema = result_schema(q)
    cols: list[pl.Expr] = [
        ((pl.col("ts_ns") // 1000 // every_us) * every_us).cast(pl.Datetime("us", "UTC")).alias("time"),
        pl.col("household"),
        pl.col("device"),
    ]
    for name in q.fields:
        dtype = schema[name]
        col = pl.col(name) if name in frame.columns else pl.lit(None)
        if q.agg == "count":
            col = col.fill_null(0)
        elif dtype == pl.Boolean() and name in BOOL_FIELDS and q.agg in ("min", "max"):
            col = col.cast(pl.Float64) > 0.5
        elif name in TEXT_FIELDS:
            col = col.cast(pl.Utf8)
        cols.append(col.cast(dtype).alias(name))
    out = frame.select(cols).sort(["household", "device", "time"])
    return out.cast(schema)  # type: ignore[arg-type]


# Downsampling runs as InfluxDB tasks (``pipeline.influx_retention.setup_retention``): no job here.
STORE: Final = StorePlugin(open=InfluxStore.from_config, describe=lambda cfg: cfg.influx_url or "InfluxDB")
