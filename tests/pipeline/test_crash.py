"""kill -9 in the middle of writing: everything acknowledged before the kill is in the store afterwards.

A real child process writes through the real pipeline into a real SQLite file and spool; halfway the
store's directory disappears (so acknowledgements come from the spool), the child is SIGKILLed while
batches are in flight, the directory comes back, and a new pipeline replays the spool.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from pipeline.counters import CounterStateFile
from pipeline.query import SeriesQuery
from pipeline.spool import Spool
from pipeline.sqlite_store import SQLiteStore
from pipeline.writer import Pipeline

CHILD = Path(__file__).with_name("crash_child.py")


def read_acks(stream: IO[str], acked: set[int], until: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(acked) < until:
        assert time.monotonic() < deadline, f"child too slow: {len(acked)} acks"
        line = stream.readline()
        assert line, "child exited early"
        if line.startswith("ACK "):
            first, last = map(int, line.split()[1:])
            acked.update(range(first, last + 1))


async def test_kill_9_loses_nothing_acknowledged(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    db, spool_dir, state = vol / "hems.sqlite", tmp_path / "spool", tmp_path / "state.sqlite"
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(db), str(spool_dir), str(state)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    acked: set[int] = set()
    try:
        assert child.stdout is not None
        base = int(child.stdout.readline().split()[1])
        read_acks(child.stdout, acked, 400)
        vol.rename(tmp_path / "vol-away")  # store outage: acks now come from the spool
        read_acks(child.stdout, acked, len(acked) + 400)
        child.send_signal(signal.SIGKILL)  # while submitters are mid-batch
        child.wait(timeout=10)
        # Acks printed between our last read and the kill count too: drain what the child wrote.
        for line in child.stdout:
            if line.startswith("ACK "):
                first, last = map(int, line.split()[1:])
                acked.update(range(first, last + 1))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    (tmp_path / "vol-away").rename(vol)

    spool = Spool(spool_dir)
    assert spool.depth_points > 0  # the outage part really went through the spool
    store = SQLiteStore(db)
    p = Pipeline(store, spool=spool, counter_state=CounterStateFile(state))
    await p.start()
    await p.close()  # close replays the spool
    assert len(Spool(spool_dir)) == 0
    start = datetime.fromtimestamp(base, UTC)
    q = SeriesQuery(
        ("hh-crash",), "electricity", ("power_w", "import_wh_total"), start, start + timedelta(days=1)
    )
    df = await store.query(q)
    await store.close()
    stored = {int(v) for v in df["power_w"].to_list()}
    missing = acked - stored
    assert not missing, f"{len(missing)} acknowledged readings lost, e.g. {sorted(missing)[:5]}"
    assert df.height == len(stored)  # no duplicates
    totals = df["import_wh_total"].to_list()
    assert all(t == 1000.0 + i for t, i in zip(totals, df["power_w"].to_list(), strict=True))
