"""The shared words of the policy, the store and the API.

Series categories follow Smart Power System 2(2)[4] item (5) (plus ``ev`` from the EV-charging terms);
record categories follow items (1)-(4) and (6) of the same clause.  Every package spells a category the
same way, so a category that is not listed here is a typo, not a new kind of data.
"""

from __future__ import annotations

from typing import Final

SERIES_CATEGORIES: Final = (
    "electricity",
    "pv",
    "battery",
    "water",
    "gas",
    "external_generation",
    "ev",
)
RECORD_CATEGORIES: Final = ("identity", "contract", "equipment", "household")
CATEGORIES: Final = SERIES_CATEGORIES + RECORD_CATEGORIES

ACTIONS: Final = ("read", "read_stats", "export")

PRINCIPAL_KINDS: Final = (
    "homeowner",
    "sales_company",
    "installer",
    "wholesaler",
    "approved_company",
    "designated_body",
    "operator",
    "analyst",
    "retailer",  # ENEX 5 joint use (1), XOOM / Sobu Gas joint use
    "grid_operator",  # transmission/distribution operators and OCCTO (ENEX 5 joint use (1))
    "dr_aggregator",  # demand-response (negawatt) contractors (XOOM, Sobu Gas)
)
