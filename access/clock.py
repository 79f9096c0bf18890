"""Time as the access layer stores it: UTC epoch seconds.

Validity windows (approvals, links, suspensions) are compared on every rebuild, so they are kept as
plain floats; people see them through :func:`show`, in Tokyo time (the homes and their people are in
Japan: a refusal that says "suspended on 2026-06-01 00:30 UTC" reads as the wrong day to them).
"""

from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo

FOREVER = float("inf")
TOKYO = ZoneInfo("Asia/Tokyo")


def now() -> float:
    return time.time()


def to_epoch(value: datetime | float | int | str) -> float:
    """Accept what callers naturally have (a datetime, an ISO string, epoch seconds)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: give a timezone (UTC) so the window is unambiguous")
        return value.timestamp()
    if isinstance(value, str):
        return to_epoch(datetime.fromisoformat(value.replace("Z", "+00:00")))
    return float(value)


def show(epoch: float | None) -> str:
    """``2026-06-01 09:30 JST``: ISO order (never 06/01 or 01/06), Tokyo time, the zone named."""
    if epoch is None or epoch == FOREVER:
        return "open-ended"
    return datetime.fromtimestamp(epoch, TOKYO).strftime("%Y-%m-%d %H:%M JST")
