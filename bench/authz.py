"""Access decisions at fleet scale, with periods and companies: the fast index vs plain Casbin.

10k households, each a customer of SPS (the monitoring service) for a year and half of them of ENEX
(electricity); a homeowner each, a tenth of the homes with a former occupant who left during the
last month; a sales company, an installer (a tenth changed installer during the month), a wholesaler,
an approved company through an approval and a body SPS's staff designated; retailers and grid
operators for ENEX's joint use (1); a few suspensions.  Requests carry data windows of 1 to 30 days
ending now (the API's shape), so a decision returns the served periods, not a yes/no.

Both paths answer over the same policy lines and the same facts in the same run:

* ``decide``: what the API calls (``Authorizer.decide`` on an ``AccessRequest``);
* the baseline: plain ``casbin.Enforcer`` over the same lines and the time-sliced role snapshot, one
  ``enforce`` per time slice of the window (``access.casbin_adapter``), summed per request -- the cost
  of answering the same question with Casbin alone.  (Casbin's own FastEnforcer, which the tests use,
  is printed too.)

    python -m bench.authz [--households 10000] [--decisions 20000] [--baseline 200]

Goal: decide p50 <= 20 us per decision, and far fewer microseconds than plain Casbin.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import casbin

from access.casbin_adapter import MODEL_PATH, CasbinPath, SnapshotAdapter
from access.compiler import compile_seeds
from access.consent import ConsentStore
from access.decision import Authorizer
from access.periods import Periods, normalize
from access.relationships import RelationshipStore
from access.request import AccessRequest
from seeds.loader import load_seeds

PV = "sps.pv_after_maintenance"
OWN = "sps.disclosure_to_person"
WHEELING = "enex.wheeling_contract"
CATS = ("pv", "electricity", "battery", "identity", "contract", "water")
DAY = 86400.0
KINDS = {
    "sales_company": 50,
    "installer": 200,
    "wholesaler": 10,
    "approved_company": 50,
    "designated_body": 5,
}


def populate(store: RelationshipStore, consent: ConsentStore, n: int, now: float) -> dict[str, list[str]]:
    rng = random.Random(3)
    year, month = now - 365 * DAY, now - 30 * DAY
    households = [f"h{i:05d}" for i in range(n)]
    store.add_households(households)
    store.add_contracts([(h, "sps", "service") for h in households], since=year)
    store.add_contracts([(h, "enex", "supply") for h in households[::2]], since=year)
    names: dict[str, list[str]] = {}
    for kind, count in KINDS.items():
        names[kind] = [f"{kind}-{i}" for i in range(count)]
        for pid in names[kind]:
            store.add_principal(pid, kind, pid.replace("-", " ").title(), [PV])
    for kind, count in (("retailer", 20), ("grid_operator", 5)):
        names[kind] = [f"{kind}-{i}" for i in range(count)]
        for pid in names[kind]:
            store.add_principal(pid, kind, pid.title(), [WHEELING])
    store.add_principal("op", "operator", "SPS Operations", ["sps.service_provision"], company="sps")
    store.add_principal("installer-new", "installer", "New Installer", [PV])
    current, former, partners = [], [], []
    moved: dict[str, float] = {}
    for i, h in enumerate(households):
        store.add_principal(f"owner-{i}", "homeowner", f"Owner {i}", [OWN])
        if i % 10 == 3:  # a former occupant left during the last month
            store.add_principal(f"former-{i}", "homeowner", f"Former owner {i}", [OWN])
            moved[h] = month + rng.random() * 29 * DAY
            former.append((f"former-{i}", h, year, moved[h]))
            current.append((f"owner-{i}", h, moved[h]))
        else:
            current.append((f"owner-{i}", h, year))
        partners += [
            (names["sales_company"][i % 50], h, "sales_company"),
            (names["wholesaler"][i % 10], h, "wholesaler"),
        ]
        if i % 2 == 0:
            partners += [
                (names["retailer"][i % 20], h, "retailer"),
                (names["grid_operator"][i % 5], h, "grid_operator"),
            ]
    store.link_many(partners, since=year)
    for owner, h, since in current:
        store.link(owner, h, "homeowner", since=since)
    for owner, h, since, until in former:
        store.link(owner, h, "homeowner", since=since, until=until)
    changed = [h for i, h in enumerate(households) if i % 10 == 7]
    store.link_many(
        [(names["installer"][i % 200], h, "installer") for i, h in enumerate(households) if h not in changed],
        since=year,
    )
    for h in changed:  # the installer changed during the month
        t = month + rng.random() * 29 * DAY
        store.link(names["installer"][int(h[1:]) % 200], h, "installer", since=year, until=t)
        store.link("installer-new", h, "installer", since=t)
    store.designate_many(
        "op", [(names["designated_body"][i % 5], h) for i, h in enumerate(households)], at=year
    )
    for i in range(50):  # each sales company approved one company ten days ago
        store.approve(
            names["sales_company"][i], names["approved_company"][i], CATS, [PV], valid_from=now - 10 * DAY
        )
    for h in households[::97]:  # some households suspended something
        consent.suspend(h, "provision", category=rng.choice(CATS), at=now - rng.random() * 20 * DAY)
    names["household"] = households
    return names


def requests(names: dict[str, list[str]], count: int, now: float, seed: int = 7) -> list[AccessRequest]:
    """A mix a partner API sees: mostly reads of own households over 1-30 days, some foreign or
    mis-purposed, homeowners' own reads and exports, retailers' supply operations."""
    rng = random.Random(seed)
    hh = names["household"]
    out: list[AccessRequest] = []
    for _ in range(count):
        i = rng.randrange(len(hh))
        window = (now - rng.choice((1, 1, 7, 30)) * DAY, now)
        roll = rng.random()
        if roll < 0.15:
            action = rng.choice(("read", "export"))
            out.append(
                AccessRequest(
                    f"owner-{i}", hh[i], rng.choice(CATS), action, OWN, window, identity_verified=True
                )
            )
            continue
        if roll < 0.22:
            out.append(AccessRequest(names["retailer"][i % 20], hh[i], "identity", "read", WHEELING, window))
            continue
        kind = rng.choice(("sales_company", "installer", "wholesaler", "approved_company", "designated_body"))
        principal = names[kind][i % len(names[kind])]
        if kind == "installer" and i % 10 == 7:
            principal = "installer-new"  # the home changed installers this month
        household = hh[i] if roll < 0.8 else hh[(i + 1) % len(hh)]  # 20% foreign household
        purpose = PV if roll < 0.9 else "sps.service_provision"
        out.append(AccessRequest(principal, household, rng.choice(CATS), "read", purpose, window))
    return out


def timed(fn: Callable[[AccessRequest], object], reqs: list[AccessRequest]) -> tuple[float, list[float]]:
    lat = []
    clock = time.perf_counter_ns
    start = clock()
    for r in reqs:
        t0 = clock()
        fn(r)
        lat.append((clock() - t0) / 1000)
    total = (clock() - start) / 1e9
    return len(reqs) / total, lat


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def plain_served(enforcer: casbin.Enforcer, path: CasbinPath, req: AccessRequest) -> Periods:
    """``CasbinPath.served`` with a plain ``casbin.Enforcer``: one enforce per slice of the window."""
    start, stop = req.window
    idv = "verified" if req.identity_verified else "unverified"
    out = []
    for k, (lo, hi) in enumerate(path.roles.slices(req.household)):
        a, b = max(lo, start), min(hi, stop)
        if a < b and enforcer.enforce(
            req.principal, f"{req.household}@{k}", req.category, req.action, req.purpose, idv
        ):
            out.append((a, b))
    return normalize(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--households", type=int, default=10_000)
    ap.add_argument("--decisions", type=int, default=20_000)
    ap.add_argument("--baseline", type=int, default=200, help="requests for the (slow) plain enforcer")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "access.sqlite"
        seeds = load_seeds()
        store, consent = RelationshipStore(path, seeds), ConsentStore(path, seeds)
        now = time.time()
        t0 = time.perf_counter()
        names = populate(store, consent, args.households, now)
        t_populate = time.perf_counter() - t0
        policy = compile_seeds(seeds)
        authz = Authorizer(policy, store, consent)
        at = now + 1
        t0 = time.perf_counter()
        facts = authz.facts()
        t_facts = time.perf_counter() - t0
        t0 = time.perf_counter()
        snap = authz.snapshot(at)
        t_snapshot = time.perf_counter() - t0
        t0 = time.perf_counter()
        fast_casbin = snap.casbin()
        t_casbin = time.perf_counter() - t0
        t0 = time.perf_counter()
        plain = casbin.Enforcer(str(MODEL_PATH), SnapshotAdapter(snap.rules, fast_casbin.roles))
        t_plain = time.perf_counter() - t0
        print(
            f"world: {args.households} households, {len(facts.principals)} principals, "
            f"{len(facts.links)} links, {len(facts.contracts)} contracts, "
            f"{len(facts.suspensions)} suspensions; "
            f"{len(snap.rules)} policy "
            f"lines, {len(fast_casbin.roles.g)} g links over time slices (populate {t_populate:.1f} s)"
        )
        print(
            f"load:  facts {t_facts * 1000:.0f} ms; fast index {t_snapshot * 1000:.0f} ms; "
            f"casbin role snapshot + FastEnforcer {t_casbin * 1000:.0f} ms; "
            f"plain Enforcer {t_plain * 1000:.0f} ms"
        )
        reqs = requests(names, args.decisions, now)
        base = reqs[: args.baseline]
        disagree = sum(
            1 for r in base if authz.decide(r, at=at).served != plain_served(plain, fast_casbin, r)
        )
        decisions = [authz.decide(r, at=at) for r in reqs]
        allowed = sum(d.allowed for d in decisions)
        partial = sum(d.allowed and bool(d.refused) for d in decisions)

        authz.decide(reqs[0])  # warm the snapshot for "now"
        fast_rate, fast_lat = timed(authz.decide, reqs)
        slow_rate, slow_lat = timed(lambda r: plain_served(plain, fast_casbin, r), base)
        filt_rate, filt_lat = timed(fast_casbin.served, base)
        print(
            f"requests: {len(reqs)} ({allowed / len(reqs):.0%} served, "
            f"{partial / len(reqs):.0%} of them only in part); "
            f"plain casbin agreement on {len(base)}: {len(base) - disagree}/{len(base)}"
        )
        print(
            f"decide (fast index):         {fast_rate:>10,.0f} decisions/s  p50 {pct(fast_lat, 50):8.1f} us  "
            f"p99 {pct(fast_lat, 99):8.1f} us"
        )
        print(
            f"casbin.Enforcer, per slice:  {slow_rate:>10,.0f} decisions/s  p50 {pct(slow_lat, 50):8.1f} us  "
            f"p99 {pct(slow_lat, 99):8.1f} us"
        )
        print(
            f"casbin.FastEnforcer (tests): {filt_rate:>10,.0f} decisions/s  p50 {pct(filt_lat, 50):8.1f} us  "
            f"p99 {pct(filt_lat, 99):8.1f} us"
        )
        print(
            f"ratio: {fast_rate / slow_rate:.0f}x throughput, "
            f"{pct(slow_lat, 50) / pct(fast_lat, 50):.0f}x p50 "
            "against plain Casbin (goal: p50 <= 20 us)"
        )
        store.close()
        consent.close()


if __name__ == "__main__":
    main()
