"""The release mechanism and the budget behind ``/api/v1/stats`` (``access.privacy``, ``access.budget``).

The privacy guarantee rests on two things this project computes itself: the clamped aggregates, whose
change when one household is added or removed must stay within the sensitivities the noise is scaled
to, and the accounting of the budget.  OpenDP draws the noise and states each measurement's epsilon.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from access.budget import BudgetExhausted, BudgetStore, Release, budget_holder
from access.db import AccessDb
from access.ledger_anchor import GENESIS, plain_hash
from access.privacy import Grid, attack_interval, clamped_aggregates, mechanism, release
from access.world import Principal
from seeds.vocabulary import STATS_RANGES

T0 = datetime(2026, 6, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
FIELDS = ("power_w", "soc_pct")


def _frame(rows: list[tuple[int, str, float | None, float | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "time": [T0 + k * HOUR for k, *_ in rows],
            "household": [h for _, h, *_ in rows],
            "power_w": [p for _, _, p, _ in rows],
            "soc_pct": [s for *_, s in rows],
        },
        schema={
            "time": pl.Datetime("us", "UTC"),
            "household": pl.Utf8,
            "power_w": pl.Float64,
            "soc_pct": pl.Float64,
        },
    )


value = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False))
row = st.tuples(st.integers(0, 5), st.sampled_from(["a", "b", "c", "d"]), value, value)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(row, max_size=24, unique_by=lambda r: (r[0], r[1])),
    extra=st.lists(st.tuples(st.integers(0, 5), value, value), max_size=6, unique_by=lambda r: r[0]),
)
def test_one_household_moves_the_aggregates_by_at_most_the_sensitivity(
    rows: list[tuple[int, str, float | None, float | None]],
    extra: list[tuple[int, float | None, float | None]],
) -> None:
    """Adding a household (any values, in range or not, some missing) changes each window's count by at
    most 1 and each field's centred sum by at most half its range: over K windows, K and K * half in L1,
    the sensitivities ``mechanism`` scales the noise to."""
    grid = Grid(T0, T0 + 6 * HOUR, HOUR)
    without = clamped_aggregates(_frame(rows), FIELDS, grid)
    added = clamped_aggregates(_frame([*rows, *[(k, "new", p, s) for k, p, s in extra]]), FIELDS, grid)
    assert without.height == added.height == grid.count  # every window, data or not
    assert (added["households"] - without["households"]).abs().sum() <= grid.count
    for f in FIELDS:
        low, high = STATS_RANGES[f]
        change = (added[f"{f}_sum"] - without[f"{f}_sum"]).abs().sum()
        assert change <= grid.count * (high - low) / 2 + 1e-6


def test_opendp_charges_what_the_release_asks_and_the_scales_follow_the_sensitivity() -> None:
    m = mechanism(24, FIELDS, 0.9)
    assert m.noise.epsilon == pytest.approx(0.9, rel=1e-9)
    assert m.noise.count_scale == pytest.approx(24 / 0.3)
    assert m.noise.sum_scales == {
        "power_w": pytest.approx(24 * 12_000 / 0.3),
        "soc_pct": pytest.approx(24 * 50 / 0.3),
    }


def test_a_large_group_gets_useful_numbers_and_a_small_one_is_suppressed() -> None:
    """10,000 homes in one window at epsilon 1: the mean is within a few watts; the noise's scale is
    public, so the bound below fails with probability below e^-10 per draw."""
    n = 10_000
    big = _frame([(0, f"h{i}", 300.0 + (i % 7) * 100.0, 50.0) for i in range(n)])
    truth = sum(300.0 + (i % 7) * 100.0 for i in range(n)) / n
    grid = Grid(T0, T0 + HOUR, HOUR)
    m = mechanism(1, ("power_w",), 1.0)
    out, suppressed = release(clamped_aggregates(big, ("power_w",), grid), m, min_group=10)
    assert suppressed == 0 and out.height == 1
    assert abs(out["households"][0] - n) <= 10 * m.noise.count_scale
    bound = 10 * m.noise.sum_scales["power_w"] / (n - 10 * m.noise.count_scale)
    assert abs(out["power_w_mean"][0] - truth) <= bound < 60.0
    # Eight homes, below a minimum of ten: with an epsilon so large the count's noise is nil, suppressed.
    small = clamped_aggregates(_frame([(0, f"h{i}", 500.0, 50.0) for i in range(8)]), ("power_w",), grid)
    out, suppressed = release(small, mechanism(1, ("power_w",), 400.0), min_group=10)
    assert out.height == 0 and suppressed == 1


def test_the_grid_snaps_to_the_resolution() -> None:
    g = Grid.snapped(T0 + timedelta(milliseconds=250), T0 + timedelta(hours=2, seconds=1), HOUR)
    assert (g.start, g.stop, g.count) == (T0, T0 + 3 * HOUR, 3)
    assert Grid.snapped(T0, T0 + HOUR, HOUR) == Grid(T0, T0 + HOUR, HOUR)


def test_the_attack_interval_is_the_difference_of_two_laplace_draws() -> None:
    b = 1000.0
    t = attack_interval(b)
    assert (1 + t / (2 * b)) * 2.718281828459045 ** (-t / b) == pytest.approx(0.05, rel=1e-6)


def test_the_budget_is_spent_by_recorded_releases_and_refused_when_exhausted(tmp_path: Path) -> None:
    db = tmp_path / "access.sqlite"
    budgets = BudgetStore(db, default_epsilon=1.0)
    window = (T0.timestamp(), (T0 + HOUR).timestamp())
    for _ in range(2):
        budgets.spend(
            "ana", "enex.marketing", "electricity", ["power_w"], window, 3600.0, 1, 0.5, ["enex-2.7"]
        )
    with pytest.raises(BudgetExhausted, match="has 0 left of 1"):
        budgets.spend(
            "ana", "enex.marketing", "electricity", ["power_w"], window, 3600.0, 1, 0.01, ["enex-2.7"]
        )
    assert len(budgets.releases("ana")) == 2  # the refused release left no row
    assert budgets.budget("other").left == 1.0  # per principal
    budgets.set_budget("ana", 2.0, by="ops")
    release_, budget = budgets.spend(
        "ana", "enex.marketing", "electricity", ["power_w"], window, 3600.0, 1, 1.0, ["enex-2.7"]
    )
    assert release_.seq == 3 and budget.left == pytest.approx(0.0)
    assert budgets.verify() is None
    budgets.close()
    # The ledger is append-only; rewriting a row behind the triggers' back breaks its chain.
    raw = sqlite3.connect(db)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("UPDATE release_ledger SET epsilon = 0.0 WHERE seq = 1")
    raw.execute("DROP TRIGGER release_ledger_no_update")
    raw.execute("UPDATE release_ledger SET epsilon = 0.0 WHERE seq = 2")
    raw.commit()
    raw.close()
    assert BudgetStore(db).verify() == 2


def test_a_company_s_staff_spend_one_budget_and_others_keep_their_own(access_db: AccessDb) -> None:
    """On both access databases: two analysts of one company draw on one budget (a second account buys
    nothing: deny), while an analyst of another company and one of no company keep theirs (allow)."""
    ana, ana2 = (Principal(p, "analyst", p, frozenset(), company="enex") for p in ("ana", "ana2"))
    sop = Principal("sop", "operator", "sop", frozenset(), company="sps")
    pana = Principal("pana", "analyst", "pana", frozenset())
    assert [budget_holder(p) for p in (ana, ana2, sop, pana)] == ["company:enex"] * 2 + [
        "company:sps",
        "pana",
    ]
    budgets = BudgetStore(access_db, default_epsilon=1.0)
    window = (T0.timestamp(), (T0 + HOUR).timestamp())

    def spend(who: Principal, epsilon: float) -> float:
        _, b = budgets.spend(
            who.id,
            "p.x",
            "electricity",
            ["power_w"],
            window,
            3600.0,
            1,
            epsilon,
            ["c-1"],
            holder=budget_holder(who),
        )
        return b.left

    assert spend(ana, 0.75) == pytest.approx(0.25)
    with pytest.raises(BudgetExhausted, match=r"company enex .* has 0.25 left of 1"):
        spend(ana2, 0.5)
    assert spend(ana2, 0.25) == pytest.approx(0.0)  # what is left is shared, to the last bit
    assert spend(sop, 1.0) == pytest.approx(0.0) and spend(pana, 1.0) == pytest.approx(0.0)
    assert [(r.principal, r.budget_holder) for r in budgets.releases(holder="company:enex")] == [
        ("ana", "company:enex"),
        ("ana2", "company:enex"),
    ]
    assert budgets.verify() is None
    budgets.close()


def test_releases_recorded_before_company_budgets_still_verify_and_count_for_their_principal(
    tmp_path: Path,
) -> None:
    """A release ledger written before releases named a holder has no such column: opening it adds the
    column, its rows still verify and they stay charged to the principal that made them."""
    db = tmp_path / "access.sqlite"
    raw = sqlite3.connect(db)
    raw.execute(
        "CREATE TABLE release_ledger (seq INTEGER PRIMARY KEY, principal TEXT NOT NULL, "
        "purpose TEXT NOT NULL, category TEXT NOT NULL, fields TEXT NOT NULL, start REAL NOT NULL, "
        "stop REAL NOT NULL, "
        "every_s REAL NOT NULL, windows INTEGER NOT NULL, epsilon REAL NOT NULL, clause_ids TEXT NOT NULL, "
        "at REAL NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)"
    )
    old = Release(
        1, "ana", "p.x", "electricity", ("power_w",), 0.0, 3600.0, 3600.0, 1, 0.5, ("c-1",), 10.0, GENESIS, ""
    )
    raw.execute(
        "INSERT INTO release_ledger VALUES (1, 'ana', 'p.x', 'electricity', '[\"power_w\"]', 0, 3600, 3600, "
        "1, 0.5, '[\"c-1\"]', 10, ?, ?)",
        (GENESIS, plain_hash(GENESIS, old.canonical())),
    )
    raw.commit()
    raw.close()
    budgets = BudgetStore(db, default_epsilon=1.0)
    assert budgets.verify() is None
    assert budgets.budget("ana").spent == pytest.approx(0.5)
    assert budgets.budget("company:enex").spent == 0.0
    budgets.spend(
        "ana", "p.x", "electricity", ["power_w"], (0.0, 1.0), 1.0, 1, 0.1, ["c-1"], holder="company:enex"
    )
    assert budgets.verify() is None and budgets.budget("company:enex").spent == pytest.approx(0.1)
    budgets.close()
