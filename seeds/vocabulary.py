"""The shared words of the policy, the store and the API, and the one table of series fields.

Series categories follow Smart Power System 2(2)[4] item (5) (plus ``ev`` from the EV-charging terms);
record categories follow items (1)-(4) and (6) of the same clause.  Every package spells a category the
same way, so a category that is not listed here is a typo, not a new kind of data.

``FIELDS`` is the single table of what a series may carry: the collector's units, the pipeline's
validation, the store columns (and the SQLite schema migrated from them) and the policy's items are all
derived from it.  It lives here because every package may import ``seeds`` without breaking the
layering (devices -> collector -> pipeline -> access).  Adding a field is one row; the embedded store
adds the column the next time it opens (``pipeline.sqlite_schema``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

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

# The health the collector reports for each device (answering, timing out, refusing with an
# exception...) is the status of the home's equipment: SPS 2(2)[4] item (3) lists the generation
# equipment among what after-sales maintenance receives, and 2(2)[1] names fault-handling status among
# what the service holds.  It is kept as a series beside the readings, under the policy's ``equipment``
# category, so the same decision and ledger govern it as any other item.
STATUS_CATEGORY: Final = "equipment"
# Every measurement a series store holds: the readings' categories and the equipment status.
STORED_CATEGORIES: Final = (*SERIES_CATEGORIES, STATUS_CATEGORY)

ACTIONS: Final = ("read", "read_stats", "export")

PRINCIPAL_KINDS: Final = (
    "homeowner",
    "agent",  # acts for a homeowner under a verified mandate (SPS 2(6)[3], Kaluza handling 4, Sobu Gas 8)
    "sales_company",
    "installer",
    "wholesaler",
    "approved_company",
    "designated_body",
    "operator",  # a company's own staff: in seeds, the company whose document names it
    "analyst",
    "retailer",  # ENEX 5 joint use (1), XOOM / Sobu Gas joint use
    "grid_operator",  # transmission/distribution operators and OCCTO (ENEX 5 joint use (1))
    "dr_aggregator",  # demand-response (negawatt) contractors (XOOM, Sobu Gas)
    "named_party",  # a company a document names as joint user or recipient (ENEX group and partners, ...)
)
# Kinds that act for one company (the data controller whose staff they are); every other kind is a
# company of its own and a third party to each document's company.
COMPANY_STAFF_KINDS: Final = ("operator", "analyst")

FieldType = Literal["float", "bool", "text"]

# A household connection is at most a few tens of kW; 500 kW leaves room for EV fast chargers.
_MAX_POWER_W: Final = 500_000.0
_ANY: Final = (-1e12, 1e12)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One row of the field table.

    ``unit`` is also in the name (``power_w``): a bare number without a unit is the commonest way
    telemetry goes wrong.  ``counter``: cumulative at the source, stored as a monotonic total with the
    meter's own value beside it as ``raw_<name>``.  ``wraps``: the device may say at which value the
    counter rolls over (``Reading.counter_wrap``), which tells a wrap from a meter replacement.
    ``low``/``high``: beyond these a value is a decoding error, not a measurement.  ``categories``:
    the series that carry the field, which are also the policy's items of those categories.
    ``derived``: computed by the pipeline from other fields (``pipeline.negawatt``), never read from a
    device, so a reading that carries it is refused.  ``reach``: (seconds before, seconds after) a
    point's time that its value is made of (a negawatt slot's mean covers the 30 minutes from its stamp;
    a baseline, earlier days too): a decision serves the point only where all of that is served
    (``access.api.service.decide_fields``).  ``stats_range``: the public range a statistic
    clamps one household's value of the field to (``access.privacy``); ``None``: the field is not
    released as a statistic (a cumulative total says nothing about a group, and text has no mean).
    """

    name: str
    unit: str
    type: FieldType
    categories: tuple[str, ...]
    counter: bool = False
    wraps: bool = False
    low: float = _ANY[0]
    high: float = _ANY[1]
    derived: bool = False
    stats_range: tuple[float, float] | None = None
    reach: tuple[float, float] = (0.0, 0.0)


_GENERATION: Final = ("pv", "external_generation")
_STORAGE: Final = ("battery", "ev")
_EQUIPMENT: Final = ("pv", "battery", "external_generation", "ev")


def _counter(name: str, unit: str, categories: tuple[str, ...], high: float = 1e13) -> FieldSpec:
    """A cumulative register: never negative, may wrap at a modulus the device reports."""
    return FieldSpec(name, unit, "float", categories, counter=True, wraps=True, low=0.0, high=high)


# One household's power (import or export) for statistics: a Japanese home's contract rarely exceeds
# 60 A at 100/200 V (about 12 kVA), and clamping is what bounds one home's weight in a release.
_HOME_POWER: Final = (-12_000.0, 12_000.0)
_FLAG: Final = (0.0, 1.0)  # a flag's mean is the share of time it was set


# The negawatt items' settlement slot, and how many days before a slot's local day its baseline looks
# (``pipeline.negawatt`` computes them with these).
NEGAWATT_SLOT_S: Final = 30 * 60
BASELINE_LOOKBACK_DAYS: Final = 21
# A baseline reaches back to the first candidate day: the lookback, plus up to a day from the slot to
# the start of its local day.
_BASELINE_REACH_S: Final = (BASELINE_LOOKBACK_DAYS + 1) * 86_400.0


def _negawatt(name: str, looks_back: bool = False) -> FieldSpec:
    """A negawatt item (XOOM joint use (1), Sobu Gas 4 joint use (2)): mean power over a 30-minute
    settlement slot, derived from the meter's net power by ``pipeline.negawatt``; ``looks_back``: made
    of earlier days' slots too (the baseline, and the reduction computed from it)."""
    return FieldSpec(
        name,
        "W",
        "float",
        ("electricity",),
        low=0.0,
        high=_MAX_POWER_W,
        derived=True,
        stats_range=(0.0, _HOME_POWER[1]),
        reach=(_BASELINE_REACH_S if looks_back else 0.0, float(NEGAWATT_SLOT_S)),
    )


# Order is part of the embedded store's layout (a fresh database gets its columns in this order); add
# new rows at the end.  Power signs: electricity + import from the grid / - export; battery and ev
# + charging.
FIELDS: Final[tuple[FieldSpec, ...]] = (
    FieldSpec(
        "power_w",
        "W",
        "float",
        ("electricity", *_EQUIPMENT),
        low=-_MAX_POWER_W,
        high=_MAX_POWER_W,
        stats_range=_HOME_POWER,
    ),
    _counter("energy_wh_total", "Wh", _GENERATION),  # generated
    _counter("import_wh_total", "Wh", ("electricity",)),  # bought from the grid
    _counter("export_wh_total", "Wh", ("electricity",)),  # sold to the grid
    _counter("charge_wh_total", "Wh", _STORAGE),
    _counter("discharge_wh_total", "Wh", _STORAGE),
    FieldSpec("soc_pct", "%", "float", _STORAGE, low=0.0, high=100.0, stats_range=(0.0, 100.0)),
    _counter("volume_l_total", "L", ("water", "gas"), high=1e12),
    FieldSpec(
        "current_a", "A", "float", ("electricity",), low=-2_000.0, high=2_000.0, stats_range=(-120.0, 120.0)
    ),
    FieldSpec("voltage_v", "V", "float", ("electricity",), low=0.0, high=1_000.0, stats_range=(80.0, 240.0)),
    FieldSpec(
        "frequency_hz", "Hz", "float", ("electricity", "pv"), low=0.0, high=100.0, stats_range=(45.0, 65.0)
    ),
    FieldSpec(
        "temperature_c", "degC", "float", ("battery",), low=-60.0, high=150.0, stats_range=(-20.0, 70.0)
    ),
    FieldSpec("fault", "bool", "bool", _EQUIPMENT, stats_range=_FLAG),
    FieldSpec("running", "bool", "bool", _EQUIPMENT, stats_range=_FLAG),
    FieldSpec("connected", "bool", "bool", ("ev",), stats_range=_FLAG),
    FieldSpec("state", "enum", "text", ("pv", "battery")),
    # Equipment status (STATUS_CATEGORY): the collector's verdict on a device (ok / partial / implausible
    # / pending / timeout / exception:<code> / malformed / unsupported / no_data / unreachable /
    # error:<type>) and the Unix time it began.
    FieldSpec("health", "enum", "text", (STATUS_CATEGORY,)),
    FieldSpec("health_since_s", "s", "float", (STATUS_CATEGORY,), low=0.0, high=1e11),
    # The negawatt items, per 30-minute settlement slot of the meter's net power: generation sold (mean
    # export), demand procured (mean import), the baseline of demand procured (pipeline.negawatt says
    # how it is computed) and demand reduction (baseline less demand procured, never below zero).
    _negawatt("generation_sold_w"),
    _negawatt("demand_procured_w"),
    _negawatt("baseline_w", looks_back=True),
    _negawatt("demand_reduction_w", looks_back=True),
)

FIELD_SPECS: Final = {spec.name: spec for spec in FIELDS}
FIELD_UNITS: Final[dict[str, str]] = {spec.name: spec.unit for spec in FIELDS}
COUNTER_FIELDS: Final = frozenset(spec.name for spec in FIELDS if spec.counter)
WRAPPING_FIELDS: Final = frozenset(spec.name for spec in FIELDS if spec.wraps)
BOOL_FIELDS: Final = frozenset(spec.name for spec in FIELDS if spec.type == "bool")
TEXT_FIELDS: Final = frozenset(spec.name for spec in FIELDS if spec.type == "text")
DERIVED_FIELDS: Final = frozenset(spec.name for spec in FIELDS if spec.derived)
# What XOOM's and Sobu Gas's negawatt joint use names, in the terms' order: generation sold, demand
# procured, demand reduction, baseline.
NEGAWATT_ITEMS: Final = ("generation_sold_w", "demand_procured_w", "demand_reduction_w", "baseline_w")
STATS_RANGES: Final[dict[str, tuple[float, float]]] = {
    spec.name: spec.stats_range for spec in FIELDS if spec.stats_range is not None
}

RAW_PREFIX: Final = "raw_"
# The meter's own value kept beside each monotonic total for diagnosis (see pipeline.counters).
RAW_FIELDS: Final = frozenset(RAW_PREFIX + name for name in COUNTER_FIELDS)
QUERYABLE_FIELDS: Final = frozenset(FIELD_UNITS) | RAW_FIELDS
# Everything a store keeps per point, in the embedded store's column order.
STORED_FIELDS: Final[tuple[str, ...]] = tuple(FIELD_UNITS) + tuple(sorted(RAW_FIELDS))


def field_type(name: str) -> FieldType:
    """Type of any stored field (a ``raw_*`` twin is a number like its counter)."""
    spec = FIELD_SPECS.get(name)
    return "float" if spec is None else spec.type


def item_of(name: str) -> str:
    """The policy item a stored field belongs to: a ``raw_*`` twin is the same item as its counter
    (it tells the same thing), every other field is its own item."""
    if name.startswith(RAW_PREFIX) and name in RAW_FIELDS:
        return name.removeprefix(RAW_PREFIX)
    return name


def reach_of(fields: Sequence[str]) -> tuple[float, float]:
    """(seconds before, seconds after) a point's time that the values of ``fields`` are made of: the
    widest of their items' ``reach``; (0, 0) for readings, which are made of their own instant only."""
    reaches = [FIELD_SPECS[item_of(f)].reach for f in fields if item_of(f) in FIELD_SPECS]
    return max((r[0] for r in reaches), default=0.0), max((r[1] for r in reaches), default=0.0)


def category_items(category: str) -> tuple[str, ...]:
    """The items (fields) a series category carries, in table order: what a grant below the category
    level can name.  ``ValueError`` for a word that is not a series category (nor the status)."""
    if category not in STORED_CATEGORIES:
        raise ValueError(f"{category!r} is not a series category (one of {', '.join(SERIES_CATEGORIES)})")
    return _ITEMS[category]


def has_items(category: str) -> bool:
    """Whether a grant can name items of ``category`` (series categories and the equipment status do;
    record categories such as ``identity`` are granted whole)."""
    return category in _ITEMS


_ITEMS: Final = {c: tuple(s.name for s in FIELDS if c in s.categories) for c in STORED_CATEGORIES}


def check_table(fields: Sequence[FieldSpec]) -> None:
    """The table is data that people edit: refuse at import what would corrupt a store or a grant
    (field names become SQL column names, so they are plain lower-case ASCII identifiers)."""
    for spec in fields:
        unknown = set(spec.categories) - set(STORED_CATEGORIES)
        if unknown or not spec.categories:
            raise ValueError(
                f"field {spec.name}: categories {sorted(unknown) or '()'} are not series (nor status)"
            )
        name = spec.name
        if not (name.isascii() and name.isidentifier() and name.islower()) or name.startswith(RAW_PREFIX):
            raise ValueError(f"field {name!r}: lower-case ASCII identifier, not starting {RAW_PREFIX!r}")
        if spec.counter != name.endswith("_total"):
            raise ValueError(f"field {name}: counters, and only counters, end in '_total'")
        if spec.wraps and not spec.counter:
            raise ValueError(f"field {name}: only a counter wraps")
        if spec.type != "float" and (spec.counter or (spec.low, spec.high) != _ANY):
            raise ValueError(f"field {name}: a {spec.type} field has no range and is no counter")
        if not spec.low < spec.high:
            raise ValueError(f"field {name}: low must be below high")
        if spec.derived and (spec.counter or spec.type != "float"):
            raise ValueError(f"field {name}: a derived field is a plain number (no counter, no flag)")
        if spec.stats_range is not None and (spec.counter or spec.type == "text"):
            raise ValueError(f"field {name}: a counter or text field is not released as a statistic")
        if spec.stats_range is not None and not spec.stats_range[0] < spec.stats_range[1]:
            raise ValueError(f"field {name}: stats_range must be (low, high) with low < high")
    names = [spec.name for spec in fields]
    if len(set(names)) != len(names):
        raise ValueError(f"fields listed twice: {sorted({n for n in names if names.count(n) > 1})}")
    empty = [c for c in SERIES_CATEGORIES if not any(c in spec.categories for spec in fields)]
    if empty:
        raise ValueError(f"series categories without fields: {empty}")


check_table(FIELDS)
