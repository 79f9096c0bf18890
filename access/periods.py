"""Periods of time as the access layer reasons about them: half-open ``[start, stop)`` in epoch seconds.

Every relationship a grant rests on holds for a period (a link, a contract, an approval, a mandate, a
suspension), and a request asks for a window of data.  The decision's answer is itself a set of
periods: the part of the window that may be served.  So the one representation used everywhere is a
*period set*: a tuple of ``(start, stop)`` pairs, sorted, disjoint, non-adjacent and non-empty
(``start < stop``), with ``-inf``/``inf`` for open ends.  Tuples keep the sets small, hashable (they go
into page-cache keys) and fast to walk in the decision's hot path, where a set rarely has more than
two members.
"""

from __future__ import annotations

from collections.abc import Iterable

from access import clock

Period = tuple[float, float]
Periods = tuple[Period, ...]

NEVER: Periods = ()
ALWAYS: Periods = ((float("-inf"), float("inf")),)


def normalize(pairs: Iterable[tuple[float, float]]) -> Periods:
    """A period set from any pairs: empty ones dropped, overlapping or touching ones merged."""
    spans = sorted((float(a), float(b)) for a, b in pairs if a < b)
    if not spans:
        return NEVER
    out = [spans[0]]
    for a, b in spans[1:]:
        last_a, last_b = out[-1]
        if a <= last_b:
            if b > last_b:
                out[-1] = (last_a, b)
        else:
            out.append((a, b))
    return tuple(out)


def span(start: float, stop: float) -> Periods:
    """One period (empty when ``stop <= start``)."""
    return ((start, stop),) if start < stop else NEVER


def contains(periods: Periods, t: float) -> bool:
    for a, b in periods:
        if t < a:
            return False
        if t < b:
            return True
    return False


def intersect(x: Periods, y: Periods) -> Periods:
    if not x or not y:
        return NEVER
    if len(x) == 1 and len(y) == 1:  # the common case, without building lists
        a = max(x[0][0], y[0][0])
        b = min(x[0][1], y[0][1])
        return ((a, b),) if a < b else NEVER
    out: list[Period] = []
    i = j = 0
    while i < len(x) and j < len(y):
        a = max(x[i][0], y[j][0])
        b = min(x[i][1], y[j][1])
        if a < b:
            out.append((a, b))
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def union(x: Periods, y: Periods) -> Periods:
    if not x:
        return y
    if not y:
        return x
    return normalize((*x, *y))


def subtract(x: Periods, y: Periods) -> Periods:
    """``x`` without ``y``."""
    if not x or not y:
        return x
    out: list[Period] = []
    for a, b in x:
        cur = a
        for c, d in y:
            if d <= cur:
                continue
            if c >= b:
                break
            if c > cur:
                out.append((cur, c))
            cur = max(cur, d)
            if cur >= b:
                break
        if cur < b:
            out.append((cur, b))
    return tuple(out)


def shrink(periods: Periods, before: float, after: float) -> Periods:
    """The instants ``t`` of ``periods`` whose whole reach ``[t - before, t + after)`` lies within one of
    them: where a value made of that reach (a derived item, ``FieldSpec.reach``) may be served."""
    if not before and not after:
        return periods
    return tuple((a + before, b - after) for a, b in periods if a + before < b - after)


def total(periods: Periods) -> float:
    return sum(b - a for a, b in periods)


def boundaries(periods: Iterable[Periods]) -> list[float]:
    """Every finite start and stop of the given sets, sorted and distinct."""
    points = {t for ps in periods for p in ps for t in p if t not in (float("inf"), float("-inf"))}
    return sorted(points)


def show_instant(t: float) -> str:
    """Tokyo time, as every text a person reads (``access.clock.show``)."""
    if t == float("-inf"):
        return "the beginning"
    return clock.show(t)


def show(periods: Periods) -> str:
    """In words, e.g. ``2026-05-01 09:00 JST to 2026-06-01 09:00 JST``; ``nothing`` when empty."""
    if not periods:
        return "nothing"
    parts = []
    for a, b in periods:
        if a == float("-inf") and b == float("inf"):
            parts.append("all time")
        elif a == float("-inf"):
            parts.append(f"until {show_instant(b)}")
        elif b == float("inf"):
            parts.append(f"since {show_instant(a)}")
        else:
            parts.append(f"{show_instant(a)} to {show_instant(b)}")
    return "; ".join(parts)
