"""How many sign-in attempts an account name and a client address get before each must wait.

Every attempt is counted *before* its password is hashed (a success takes it back), so a hundred
guesses sent at once are counted as a hundred, not as one.  The counts live in the access database,
so every ``hems serve`` worker and a restart see the same ones: a throttle kept per process would
give an attacker one allowance per worker and a fresh one after each restart.

An account name is counted whether or not such an account exists (the answer must not tell), and
only as a keyed hash (``access.auth`` makes it): what someone typed as a name may be a password.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from access.db import AccessDb, open_db, write_transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS signin_failures (
    key TEXT PRIMARY KEY, failures INTEGER NOT NULL, last_at REAL NOT NULL);
"""


@dataclass(frozen=True)
class SignInLimits:
    """The documented numbers (README, "Sign-in"): an account name gets ``free_per_account`` failed
    attempts back to back, a client address ``free_per_address`` (addresses are shared by a household
    or an office behind one router); after that each further attempt waits ``first_delay_s``, then
    twice as long after every failure, up to ``max_delay_s`` (the lockout).  A successful sign-in
    clears its account's count; counts are forgotten ``forget_after_s`` after their last failure."""

    free_per_account: int = 5
    free_per_address: int = 20
    first_delay_s: float = 1.0
    max_delay_s: float = 900.0
    forget_after_s: float = 3600.0

    def delay(self, failures: int, free: int) -> float:
        """Seconds the next attempt waits after ``failures`` failures since the last success."""
        if failures < free:
            return 0.0
        return min(self.first_delay_s * 2.0 ** min(failures - free, 60), self.max_delay_s)


class SignInThrottle:
    _PRUNE_EVERY = 1000  # attempts between removals of forgotten counts

    def __init__(
        self, where: AccessDb, limits: SignInLimits | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        # NORMAL: a power cut may forget the last counts, which only hands back a few attempts.
        self._db = open_db(where, _SCHEMA, name="signin", synchronous="NORMAL")
        self.limits = limits or SignInLimits()
        self.clock = clock
        self._attempts = 0

    def close(self) -> None:
        self._db.close()

    def reserve(self, account: str, address: str) -> tuple[float, dict[str, float]]:
        """``(0.0, {})`` when the attempt may go ahead (it is counted as a failure now); else the seconds
        to wait before the account and the address both allow one, and the wait of each that refuses
        (``"account"``, ``"address"``), with nothing counted."""
        lim = self.limits
        keys = (
            ("account", f"account:{account}", lim.free_per_account),
            ("address", f"address:{address}", lim.free_per_address),
        )
        with write_transaction(self._db) as db:
            t = self.clock()
            counts: list[int] = []
            waits: dict[str, float] = {}
            for which, key, free in keys:
                row = db.execute(
                    "SELECT failures, last_at FROM signin_failures WHERE key = ?", (key,)
                ).fetchone()
                failures = 0 if row is None or t - row[1] >= lim.forget_after_s else int(row[0])
                counts.append(failures)
                if failures and (wait := row[1] + lim.delay(failures, free) - t) > 0:
                    waits[which] = wait
            if waits:
                return max(waits.values()), waits
            for (_which, key, _free), failures in zip(keys, counts, strict=True):
                db.execute(
                    "INSERT INTO signin_failures VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                    "failures = excluded.failures, last_at = excluded.last_at",
                    (key, failures + 1, t),
                )
            self._attempts += 1
            if self._attempts % self._PRUNE_EVERY == 0:
                db.execute("DELETE FROM signin_failures WHERE last_at < ?", (t - lim.forget_after_s,))
        return 0.0, {}

    def succeeded(self, account: str, address: str) -> None:
        """Take back the counted attempt: the account starts afresh, the address loses one failure
        (not all: an attacker with one real account must not clear the address by signing in)."""
        with write_transaction(self._db) as db:
            db.execute("DELETE FROM signin_failures WHERE key = ?", (f"account:{account}",))
            db.execute(
                "UPDATE signin_failures SET failures = CASE WHEN failures > 0 THEN failures - 1 ELSE 0 END "
                "WHERE key = ?",
                (f"address:{address}",),
            )

    def failures(self, account: str) -> int:
        """The failures counted for an account now (for the log line)."""
        row = self._db.execute(
            "SELECT failures, last_at FROM signin_failures WHERE key = ?", (f"account:{account}",)
        ).fetchone()
        if row is None or self.clock() - row[1] >= self.limits.forget_after_s:
            return 0
        return int(row[0])
