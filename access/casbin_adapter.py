"""Casbin fed from the compiled policy and a relationship snapshot.

The adapter hands Casbin the same lines the fast index is built from.  It appends to the model's
lists directly, as Casbin's own file adapter does: ``Model.add_policies`` checks each new line against
every existing one, which is quadratic and takes minutes at 10k households x 5 partners.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import casbin
from casbin.persist.adapter import Adapter

from access.compiler import Rule
from access.relationships import RoleLinks

MODEL_PATH = Path(__file__).with_name("model.conf")


class SnapshotAdapter(Adapter):
    """Read-only adapter: the truth lives in seeds/ and the SQLite stores, not in Casbin."""

    def __init__(self, rules: Sequence[Rule], links: RoleLinks) -> None:
        self.rules = rules
        self.links = links

    def load_policy(self, model: Any) -> None:
        model["p"]["p"].policy.extend(r.fields() for r in self.rules)
        model["g"]["g"].policy.extend(list(line) for line in self.links.household_lines())
        model["g"]["g2"].policy.extend(list(line) for line in self.links.purpose_lines())
        model["g"]["g3"].policy.extend(list(line) for line in self.links.global_lines())

    def save_policy(self, model: Any) -> bool:
        raise ReadOnlyPolicyError("policy is compiled from seeds/; edit the seeds, not Casbin")


class ReadOnlyPolicyError(RuntimeError):
    """Raised when something tries to write the compiled policy back through Casbin."""


def build_enforcer(rules: Sequence[Rule], links: RoleLinks) -> casbin.Enforcer:
    return casbin.Enforcer(str(MODEL_PATH), SnapshotAdapter(rules, links))
