"""A home gateway's way to the fleet: batches POSTed to the fleet's ingest endpoint.

``FleetUploader`` is the writer's sink in gateway mode (``hems collect --upload-url``).  The writer
puts every batch into the gateway's spool first and only its replayer calls ``write``, so a batch is
uploaded from the spool, in order, and is deleted from the spool only after the fleet answered that
it is stored (see ``pipeline.writer``: ``spool_first``).

Never a duplicate: a retry sends the same points again (same series and timestamps, so the fleet's
store keeps one copy), and with them the same batch id, the hex SHA-256 of the uncompressed body
(``Idempotency-Key``), so a fleet replica that already committed the batch answers without writing
it again.  The body is line protocol written point by point in each point's own field order, so the
same spool record always gives the same bytes and the same id.

What an answer means here:

* 200: stored; points the fleet's validation refused are listed in the answer, logged and counted
  here (they were never going to be stored, so the batch is done);
* 429 or 503: the fleet is saturated or its store is down: ``StoreUnavailable`` with the answer's
  ``Retry-After`` (plus up to a quarter more, so thousands of gateways do not come back in step);
  the writer's replayer makes no attempt before then;
* 401 or 403: the credential is revoked, or does not cover a household this gateway collects: a
  configuration to fix, not data to drop, so the batch stays in the spool (logged loudly);
* 413: the batch is split in two and each half sent on its own;
* another 4xx: the fleet refuses the batch itself (a bug): ``UploadRejected``, which the writer's
  replayer quarantines (kept on disk, counted) so one bad batch cannot block the ones behind it;
* no answer, a timeout, 5xx: ``StoreUnavailable``, retried with the replayer's backoff.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import random
import ssl
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import aiohttp

from pipeline.errors import PipelineError
from pipeline.influx_store import retry_after_seconds
from pipeline.lineproto import LineEncoder
from pipeline.points import Point
from pipeline.store import StoreUnavailable

log = logging.getLogger(__name__)

INGEST_PATH: Final = "/api/v1/ingest"
LINE_PROTOCOL: Final = "text/plain; charset=utf-8"
BATCH_ID_HEADER: Final = "Idempotency-Key"
_RETRYABLE: Final = frozenset({408, 500, 502, 504})
_CREDENTIAL: Final = frozenset({401, 403})
_MAX_ANSWER: Final = 64 * 1024
_INLINE_GZIP: Final = 64 * 1024
USER_AGENT: Final = "hems-gateway/1"


class UploadRejected(PipelineError, ValueError):
    """The fleet refused a batch outright (a 4xx other than 401/403/413/429): retrying cannot help."""


def batch_id(body: bytes) -> str:
    """The id of a batch: the same body always has the same id (the fleet checks it)."""
    return hashlib.sha256(body).hexdigest()


@dataclass
class UploadStats:
    batches: int = 0
    points: int = 0
    duplicates: int = 0  # batches the fleet had already committed (a retry after a lost answer)
    refused_points: Counter[str] = field(default_factory=Counter)  # by the fleet's validation
    statuses: Counter[int] = field(default_factory=Counter)  # every answer that was not 200
    unreachable: int = 0
    retry_after_s: float = 0.0  # total time the fleet asked this gateway to wait

    def as_dict(self) -> dict[str, object]:
        """For the gateway's /metrics (``hems collect --metrics-port``)."""
        return {
            "batches": self.batches,
            "points": self.points,
            "duplicates": self.duplicates,
            "refused_points": dict(self.refused_points),
            "answers": {str(status): n for status, n in self.statuses.items()},
            "unreachable": self.unreachable,
            "retry_after_s": self.retry_after_s,
        }


class FleetUploader:
    """``Sink`` on the fleet's ``POST /api/v1/ingest``; the HTTP session opens on first use (it must
    belong to the running event loop).  ``credential`` is the gateway credential's text."""

    def __init__(
        self,
        base_url: str,
        credential: str,
        *,
        timeout_s: float = 30.0,
        max_points: int = 5000,
        gzip_level: int = 6,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"upload URL {base_url!r} must start with https:// (or http:// on a trusted link)"
            )
        if not credential:
            raise ValueError("a gateway credential is needed to upload")
        if max_points < 1:
            raise ValueError("max_points must be >= 1")
        self.url = base_url.rstrip("/") + INGEST_PATH
        self._auth = f"Bearer {credential}"
        self.timeout_s = timeout_s
        self.max_points = max_points
        self.gzip_level = gzip_level
        self._ssl = ssl_context
        self._encoder = LineEncoder(ints_as_floats=True)
        self._session: aiohttp.ClientSession | None = None
        self.stats = UploadStats()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=2, ssl=self._ssl if self._ssl is not None else True),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def write(self, points: Sequence[Point]) -> None:
        for i in range(0, len(points), self.max_points):
            await self._upload(points[i : i + self.max_points])

    def body(self, points: Sequence[Point]) -> bytes:
        """Line protocol point by point (``lines``, not the column-wise ``encode``, whose field order
        depends on what the encoder saw before): the same points always give the same bytes."""
        return "\n".join(self._encoder.lines(points)).encode("utf-8")

    async def _upload(self, points: Sequence[Point]) -> None:
        body = self.body(points)
        bid = batch_id(body)
        if len(body) > _INLINE_GZIP:
            payload = await asyncio.to_thread(gzip.compress, body, self.gzip_level)
        else:  # a home's few seconds of readings: a thread would cost more than the compression
            payload = gzip.compress(body, self.gzip_level)
        headers = {
            "Authorization": self._auth,
            "Content-Type": LINE_PROTOCOL,
            "Content-Encoding": "gzip",
            BATCH_ID_HEADER: bid,
        }
        try:
            async with self._client().post(self.url, data=payload, headers=headers) as resp:
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
                text = (await resp.content.read(_MAX_ANSWER)).decode("utf-8", "replace")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.stats.unreachable += 1
            raise StoreUnavailable(f"fleet at {self.url} unreachable: {type(exc).__name__}: {exc}") from exc
        if status == 200:
            self._stored(bid, len(points), text)
            return
        self.stats.statuses[status] += 1
        detail = _problem_detail(text)
        if status == 413 and len(points) > 1:
            half = len(points) // 2
            await self._upload(points[:half])
            await self._upload(points[half:])
            return
        if status in (429, 503):
            wait = retry_after_seconds(retry_after)
            if wait is not None:
                wait *= random.uniform(1.0, 1.25)
                self.stats.retry_after_s += wait
            raise StoreUnavailable(f"fleet answered {status}: {detail}", retry_after_s=wait)
        if status in _CREDENTIAL:
            log.error(
                "fleet refused this gateway's credential (%d: %s); batch %s kept in the spool until the "
                "credential is fixed",
                status,
                detail,
                bid[:16],
            )
            raise StoreUnavailable(f"fleet refused the credential ({status}): {detail}")
        if status in _RETRYABLE or status >= 500:
            raise StoreUnavailable(f"fleet answered {status}: {detail}")
        raise UploadRejected(f"fleet refused batch {bid[:16]} ({status}): {detail}")

    def _stored(self, bid: str, n: int, text: str) -> None:
        try:
            answer = json.loads(text)
        except ValueError:
            answer = {}
        refused = answer.get("rejected") if isinstance(answer, dict) else None
        lost = 0
        if isinstance(refused, dict):
            for reason, count in refused.items():
                if isinstance(count, int) and count > 0:
                    self.stats.refused_points[str(reason)[:64]] += count
                    lost += count
        if lost:
            log.warning("fleet refused %d of %d points of batch %s: %s", lost, n, bid[:16], refused)
        self.stats.batches += 1
        self.stats.points += n - lost
        if isinstance(answer, dict) and answer.get("duplicate") is True:
            self.stats.duplicates += 1

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _problem_detail(text: str) -> str:
    """The ``detail`` of a problem+json answer, else the start of the answer."""
    try:
        answer = json.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(answer, dict):
        return f"{answer.get('code', '')}: {answer.get('detail', '')}"[:300]
    return text[:200]
