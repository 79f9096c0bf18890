"""What a principal asks of the access layer: one value instead of five positional strings.

``(principal, household, category[, items], action, purpose, window)`` as ``../shared/DESIGN.md`` has
it, plus whether the caller's identity was verified recently (the person's rights need it, SPS
2(6)[3]).  ``items`` names fields or derived series of the category (``seeds.vocabulary``); a request
naming items is served where each is granted (by a clause naming it, or granting the whole
category), one naming none asks for the whole category (``access.compiler`` says how).
"""

from __future__ import annotations

from typing import NamedTuple

from access.periods import Period

ALL_TIME: Period = (float("-inf"), float("inf"))


class AccessRequest(NamedTuple):
    """A tuple, for the API makes one per request: pass ``items`` and ``identity_verified`` by name."""

    principal: str
    household: str
    category: str
    action: str
    purpose: str
    window: Period = ALL_TIME  # the data period asked for, [start, stop) in epoch seconds
    # The caller proved who they are recently enough for the person's rights (a fresh sign-in, or a
    # token issued after an identity check; see access.api.state.identity_verified).
    identity_verified: bool = False
    items: tuple[str, ...] | None = None  # items of the category (fields); None: the whole category

    def key(self) -> tuple[str, str, str, str, str]:
        return (self.principal, self.household, self.category, self.action, self.purpose)

    def over(self, start: float, stop: float) -> AccessRequest:
        """The same request for another window."""
        return self._replace(window=(start, stop))
