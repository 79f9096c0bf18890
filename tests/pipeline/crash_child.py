"""Child process for the kill -9 test: submits readings forever and prints each acknowledged id.

Run as ``python crash_child.py DB SPOOL STATE``.  Stdout lines ``ACK <first> <last>`` are printed only
after ``submit`` returned, i.e. after the readings are in the store or fsync'd in the spool.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta

from collector.reading import Reading
from pipeline.counters import CounterStateFile
from pipeline.spool import Spool
from pipeline.sqlite_store import SQLiteStore
from pipeline.writer import Backpressure, Pipeline

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)


def reading(i: int) -> Reading:
    return Reading(
        household="hh-crash",
        device="meter",
        category="electricity",
        ts_utc=BASE + timedelta(seconds=i),
        fields={"power_w": float(i), "import_wh_total": 1000.0 + i},
    )


async def submitter(p: Pipeline, lane: int, lanes: int) -> None:
    i = lane * 10
    while True:
        ids = list(range(i, i + 10))
        try:
            await p.submit([reading(k) for k in ids])
        except Backpressure:
            await asyncio.sleep(0.01)
            continue
        print(f"ACK {ids[0]} {ids[-1]}", flush=True)
        i += 10 * lanes


async def main(db: str, spool_dir: str, state: str) -> None:
    store = SQLiteStore(db)
    pipeline = Pipeline(
        store,
        spool=Spool(spool_dir, segment_bytes=64 * 1024),
        counter_state=CounterStateFile(state),
        batch_size=40,
        max_delay=0.005,
        replay_interval=0.01,
    )
    await pipeline.start()
    print(f"BASE {int(BASE.timestamp())}", flush=True)
    lanes = 4
    await asyncio.gather(*(submitter(pipeline, k, lanes) for k in range(lanes)))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
