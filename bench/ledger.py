"""Provision-ledger throughput: one transaction per record vs group commit, same run, same disk.

Three ways of writing the same number of records, each into a fresh access database (synchronous=FULL,
WAL, as in production; put ``--dir`` on the disk the service uses, not on tmpfs, or fsync is free):

* sequential: ``Ledger.record`` in a loop, one transaction and one fsync per record;
* per-record executor: ``--concurrency`` callers each awaiting ``Ledger.record`` on the one ledger
  thread, which is how ``AppState.record_provision`` wrote before group commit;
* group commit: ``--concurrency`` callers awaiting ``AppState.record_provision`` of a real app.

    python -m bench.ledger [--records 3000] [--concurrency 200] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from access.api.state import STATE
from access.app import make_app
from access.compiler import compile_seeds
from access.ledger import Ledger
from pipeline.sqlite_store import SQLiteStore
from seeds.loader import load_seeds

PV = "sps.pv_after_maintenance"
CLAUSES = ("sps-2.2.4",)


def sequential(path: Path, n: int) -> float:
    ledger = Ledger(path)
    t0 = time.perf_counter()
    for i in range(n):
        ledger.record(f"inst{i % 7}", f"h{i % 13}", ("pv",), 0.0, 3600.0, PV, CLAUSES, at=1.0e9 + i)
    elapsed = time.perf_counter() - t0
    assert ledger.verify().rows == n
    ledger.close()
    return elapsed


async def _callers(n: int, concurrency: int, one: Callable[[int], Awaitable[object]]) -> float:
    async def caller(c: int) -> None:
        for i in range(c, n, concurrency):
            await one(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(concurrency)))
    return time.perf_counter() - t0


async def per_record_executor(path: Path, n: int, concurrency: int) -> float:
    ledger = Ledger(path)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
    loop = asyncio.get_running_loop()

    def one(i: int) -> Awaitable[object]:
        return loop.run_in_executor(
            pool,
            lambda: ledger.record(f"inst{i % 7}", f"h{i % 13}", ("pv",), 0.0, 3600.0, PV, CLAUSES, 1.0e9 + i),
        )

    elapsed = await _callers(n, concurrency, one)
    pool.shutdown(wait=True)
    assert ledger.verify().rows == n
    ledger.close()
    return elapsed


async def group_commit(path: Path, store_path: Path, n: int, concurrency: int) -> tuple[float, int]:
    store = SQLiteStore(store_path)
    app = make_app(store, path, policy=compile_seeds(load_seeds()), rate_per_s=None, web_views=False)
    state = app[STATE]
    app.freeze()
    await app.startup()

    def one(i: int) -> Awaitable[object]:
        return state.record_provision(f"inst{i % 7}", f"h{i % 13}", ("pv",), 0.0, 3600.0, PV, CLAUSES)

    elapsed = await _callers(n, concurrency, one)
    transactions = state.ledger.commits
    assert state.ledger.verify().rows == n == state.metrics.ledger_records
    await app.shutdown()
    await app.cleanup()
    await store.close()
    return elapsed, transactions


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--dir", default=None, help="where the databases go (default: the system temp dir)")
    args = parser.parse_args()
    n, c = args.records, args.concurrency
    with tempfile.TemporaryDirectory(prefix="bench-ledger-", dir=args.dir) as tmp:
        d = Path(tmp)
        seq = sequential(d / "seq.sqlite", n)
        old = asyncio.run(per_record_executor(d / "old.sqlite", n, c))
        new, transactions = asyncio.run(group_commit(d / "new.sqlite", d / "series.sqlite", n, c))
    print(f"{n} records, {c} concurrent callers, databases under {args.dir or tempfile.gettempdir()}")
    print(f"  sequential Ledger.record          {n / seq:9.0f} records/s  ({n} transactions)")
    print(f"  {c} callers, one record per txn   {n / old:9.0f} records/s  ({n} transactions)")
    print(
        f"  {c} callers, group commit         {n / new:9.0f} records/s  ({transactions} transactions, "
        f"{n / transactions:.1f} records each)"
    )
    print(f"  group commit / sequential: {seq / new:.1f}x; / one record per txn: {old / new:.1f}x")


if __name__ == "__main__":
    main()
