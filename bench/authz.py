"""Access decisions at fleet scale: the compiled index (``Authorizer.decide``) vs plain Casbin.

10k households, 5 partners each (sales company, installer, wholesaler, an approved company through
an approval, a designated body) plus a homeowner each.  Both answer over the same policy lines and the
same relationship snapshot in the same run; the plain ``casbin.Enforcer.enforce`` is the baseline.
Also prints how long the store takes to produce the snapshot and each side takes to load it.

    python bench/authz.py [--households 10000] [--decisions 20000] [--baseline 200]

Goal: decide p50 <= 20 us and >= 40x the plain enforcer's throughput.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from access.compiler import compile_seeds
from access.consent import ConsentStore
from access.decision import Authorizer
from access.relationships import RelationshipStore
from seeds.loader import load_seeds

PV = "sps.pv_after_maintenance"
CATS = ("pv", "electricity", "battery", "identity", "contract", "water")

Request = tuple[str, str, str, str, str]


def populate(store: RelationshipStore, n: int) -> dict[str, list[str]]:
    households = [f"h{i:05d}" for i in range(n)]
    store.add_households(households)
    kinds = {
        "sales_company": 50,
        "installer": 200,
        "wholesaler": 10,
        "approved_company": 50,
        "designated_body": 5,
    }
    names: dict[str, list[str]] = {}
    for kind, count in kinds.items():
        names[kind] = [f"{kind}-{i}" for i in range(count)]
        for pid in names[kind]:
            store.add_principal(pid, kind, pid.replace("-", " ").title(), [PV])
    store.add_principal("op", "operator", "Operator", ["sps.service_provision"])
    rows = []
    designations = []
    for i, h in enumerate(households):
        rows.append((names["sales_company"][i % 50], h, "sales_company"))
        rows.append((names["installer"][i % 200], h, "installer"))
        rows.append((names["wholesaler"][i % 10], h, "wholesaler"))
        designations.append((names["designated_body"][i % 5], h))
    for i in range(len(households)):  # one homeowner each
        store.add_principal(f"owner-{i}", "homeowner", f"Owner {i}", ["sps.disclosure_to_person"])
    rows += [(f"owner-{i}", h, "homeowner") for i, h in enumerate(households)]
    store.link_many(rows, since=0)
    store.designate_many("op", designations)
    for i in range(50):  # each sales company approves one company for everything it holds
        store.approve(names["sales_company"][i], names["approved_company"][i], CATS, [PV], valid_from=0)
    names["household"] = households
    return names


def requests(names: dict[str, list[str]], count: int, seed: int = 7) -> list[Request]:
    """A mix a partner API sees: mostly reads of own households, some foreign or mis-purposed."""
    rng = random.Random(seed)
    hh = names["household"]
    out: list[Request] = []
    for _ in range(count):
        i = rng.randrange(len(hh))
        roll = rng.random()
        if roll < 0.15:
            out.append((f"owner-{i}", hh[i], rng.choice(CATS), "export", "sps.disclosure_to_person"))
            continue
        kind = rng.choice(("sales_company", "installer", "wholesaler", "approved_company", "designated_body"))
        size = len(names[kind])
        principal = names[kind][i % size]
        household = hh[i] if roll < 0.8 else hh[(i + 1) % len(hh)]  # 20% foreign household
        purpose = PV if roll < 0.9 else "sps.service_provision"
        out.append((principal, household, rng.choice(CATS), "read", purpose))
    return out


def timed(fn: Callable[[str, str, str, str, str], object], reqs: list[Request]) -> tuple[float, list[float]]:
    lat = []
    clock = time.perf_counter_ns
    start = clock()
    for r in reqs:
        t0 = clock()
        fn(*r)
        lat.append((clock() - t0) / 1000)
    total = (clock() - start) / 1e9
    return len(reqs) / total, lat


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--households", type=int, default=10_000)
    ap.add_argument("--decisions", type=int, default=20_000)
    ap.add_argument("--baseline", type=int, default=200, help="requests for the (slow) plain enforcer")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "access.sqlite"
        store, consent = RelationshipStore(path), ConsentStore(path)
        t0 = time.perf_counter()
        names = populate(store, args.households)
        t_populate = time.perf_counter() - t0
        policy = compile_seeds(load_seeds())
        authz = Authorizer(policy, store, consent)
        at = time.time()
        t0 = time.perf_counter()
        links = store.role_links(at)
        t_links = time.perf_counter() - t0
        t0 = time.perf_counter()
        snap = authz.snapshot(at)
        t_snapshot = time.perf_counter() - t0
        t0 = time.perf_counter()
        enforcer = authz.enforcer(at)
        t_casbin = time.perf_counter() - t0
        g_lines = sum(1 for _ in links.household_lines())
        print(
            f"world: {args.households} households, {len(store.principals())} principals, {g_lines} g links, "
            f"{len(snap.rules)} policy lines (populate {t_populate:.1f} s)"
        )
        print(
            f"load:  store snapshot {t_links * 1000:.0f} ms; "
            f"fast index incl. snapshot {t_snapshot * 1000:.0f} ms; "
            f"casbin enforcer incl. snapshot {t_casbin * 1000:.0f} ms"
        )

        reqs = requests(names, args.decisions)
        base = reqs[: args.baseline]
        disagree = sum(1 for r in base if authz.decide(*r, at=at).allowed != enforcer.enforce(*r))
        allowed = sum(1 for r in reqs if authz.decide(*r, at=at).allowed)

        def fast(p: str, h: str, c: str, a: str, u: str) -> object:
            return authz.decide(p, h, c, a, u)

        authz.decide(*reqs[0])  # warm the snapshot for "now"
        fast_rate, fast_lat = timed(fast, reqs)
        slow_rate, slow_lat = timed(enforcer.enforce, base)
        print(
            f"requests: {len(reqs)} ({allowed / len(reqs):.0%} allowed); casbin agreement on {len(base)}: "
            f"{len(base) - disagree}/{len(base)}"
        )
        print(
            f"decide (compiled index): {fast_rate:>10,.0f} decisions/s  p50 {pct(fast_lat, 50):7.1f} us  "
            f"p99 {pct(fast_lat, 99):7.1f} us"
        )
        print(
            f"casbin.Enforcer.enforce: {slow_rate:>10,.0f} decisions/s  p50 {pct(slow_lat, 50):7.1f} us  "
            f"p99 {pct(slow_lat, 99):7.1f} us"
        )
        print(
            f"ratio: {fast_rate / slow_rate:.0f}x throughput, "
            f"{pct(slow_lat, 50) / pct(fast_lat, 50):.0f}x p50 "
            f"(goal: p50 <= 20 us, >= 40x)"
        )
        store.close()
        consent.close()


if __name__ == "__main__":
    main()
