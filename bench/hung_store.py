"""What a hung InfluxDB costs a batch: the store's own write next to ``Pipeline.submit``, same run.

A hung server accepts connections and never answers (here: a listening socket nobody reads, which is
what a SIGSTOPped or wedged influxd looks like from the collector).  The baseline is one
``InfluxStore.write`` with the deployed client settings (10 s per request, 4 attempts): what the
writer awaited before ``store_write_timeout_s`` existed, about 44 s per batch.  The figure is
``Pipeline.submit`` with the deployed default bound (5 s): the first batch waits out the bound and is
spooled, later ones go behind the spool at once.

Run from the repository root: ``python -m bench.hung_store`` (about a minute, most of it the baseline).
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from collector.reading import Reading
from pipeline.influx_store import InfluxStore
from pipeline.spool import Spool
from pipeline.store import StoreUnavailable
from pipeline.writer import Pipeline, reading_to_point


def readings(n: int, start: int = 0) -> list[Reading]:
    now = datetime.now(UTC)
    return [
        Reading(
            household="hh-1", device="meter", category="electricity", ts_utc=now, fields={"power_w": float(i)}
        )
        for i in range(start, start + n)
    ]


async def measure() -> list[str]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    store = InfluxStore(url, "org", "bucket", "token")
    lines = []
    try:
        batch = readings(10)
        points = [reading_to_point(r, r.fields, time.time_ns() + i) for i, r in enumerate(batch)]
        t0 = time.monotonic()
        try:
            await store.write(points)
            outcome = "written (the server was not hung?)"
        except StoreUnavailable:
            outcome = "then StoreUnavailable"
        lines.append(
            f"baseline  InfluxStore.write, deployed retries: {time.monotonic() - t0:6.1f} s, {outcome}"
        )
        with tempfile.TemporaryDirectory() as work:
            pipeline = Pipeline(store, spool=Spool(Path(work) / "spool"), max_delay=0.01)
            await pipeline.start()
            t0 = time.monotonic()
            await pipeline.submit(readings(10, 100))
            first = time.monotonic() - t0
            t0 = time.monotonic()
            await pipeline.submit(readings(10, 200))
            later = time.monotonic() - t0
            spooled = pipeline.stats.spooled_points
            await asyncio.wait_for(pipeline.close(), 60)
        lines.append(
            f"figure    Pipeline.submit, first batch:         {first:6.1f} s (store_write_timeout_s=5)"
        )
        lines.append(
            f"figure    Pipeline.submit, next batch:          {later:6.2f} s ({spooled} readings spooled)"
        )
    finally:
        await store.close()
        listener.close()
    return lines


def main() -> int:
    for line in asyncio.run(measure()):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
