"""The JSON bodies the API sends and takes, as TypedDicts: handlers build their answers as these (mypy
checks them) and the OpenAPI document's schemas are made from them (``access.api.schema``).

Value constraints ride along as ``Annotated[..., keywords(...)]``, taken from the same
constants the parsers use, so the document is exactly as strict as the server.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, TypedDict

from access.api.params import PURPOSE_PATTERN
from access.api.schema import keywords
from access.auth import Via
from access.consent import SCOPES
from pipeline.query import AGGS, QUERYABLE_FIELDS
from seeds.vocabulary import CATEGORIES, STORED_CATEGORIES

Instant = Annotated[str, keywords(format="date-time")]
Purpose = Annotated[str, keywords(pattern=f"^{PURPOSE_PATTERN}$")]
SeriesCategory = Annotated[str, keywords(enum=list(STORED_CATEGORIES))]
AnyCategory = Annotated[str, keywords(enum=list(CATEGORIES))]
FieldName = Annotated[str, keywords(enum=sorted(QUERYABLE_FIELDS))]
Agg = Annotated[str, keywords(enum=list(AGGS))]
Hash = Annotated[str, keywords(pattern="^[0-9a-f]{64}$")]
Scope = Annotated[str, keywords(enum=list(SCOPES))]
# Periods: [start, stop) pairs, null for an open end (the part of a window served, or refused).
Periods = list[Annotated[list[Instant | None], keywords(minItems=2, maxItems=2)]]
Company = Annotated[str, keywords(pattern="^[a-z][a-z0-9_]{0,39}$")]
# Column-oriented data: one array per column (times as ISO strings), as charts want them.
Cell = str | float | bool | None
Columns = dict[str, list[Cell]]


class Health(TypedDict):
    status: Literal["ok"]


class Ready(TypedDict):
    status: Literal["ready"]


class Problem(TypedDict):
    """RFC 9457 problem details; clients branch on ``code``, people read ``detail``."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    field: NotRequired[str]
    reason: NotRequired[str]
    clause_ids: NotRequired[list[str]]
    refused: NotRequired[Periods]  # a refusal: the part of the window refused


class Me(TypedDict):
    principal: str
    kind: str
    display_name: str
    via: Via
    purposes: list[str]


class HouseholdItem(TypedDict):
    """A household the caller holds a relationship with; ``categories`` when a purpose was given, and
    ``items`` for the categories of which only some items are granted (category -> those items)."""

    household: str
    roles: list[str]
    categories: NotRequired[list[SeriesCategory]]
    items: NotRequired[dict[str, list[FieldName]]]


class Households(TypedDict):
    principal: str
    purpose: Purpose | None
    households: list[HouseholdItem]


class SeriesEnvelope(TypedDict):
    household: str
    category: SeriesCategory
    purpose: Purpose
    clause_ids: list[str]
    start: Instant
    stop: Instant
    served: Periods  # the part of the window served: the rows carry nothing outside it
    refused: Periods
    every: int | None
    agg: Agg | None
    fields: list[FieldName]
    count: int
    next_cursor: str | None


class SeriesPage(SeriesEnvelope):
    """One page of a series: rows sorted by time and device; ``next_cursor`` when more follow."""

    columns: Columns


class Daily(TypedDict):
    """Per local-day increase of a cumulative field (days of ``time_zone``)."""

    household: str
    category: SeriesCategory
    field: FieldName
    purpose: Purpose
    clause_ids: list[str]
    served: Periods
    refused: Periods
    time_zone: str
    columns: Columns


class StatsNoise(TypedDict):
    """The noise a release carries (public: it depends on no one's data): Laplace scales and the
    half-width of their 95 % intervals, for each window's household count and each field's sum."""

    households_scale: float
    households_error95: float
    sum_scale: dict[str, float]
    sum_error95: dict[str, float]


class StatsBudget(TypedDict):
    """The privacy budget (epsilon) this release was charged to, after it: the caller's company's,
    shared by all its staff, or the caller's own when it belongs to no company."""

    holder: str  # a principal id, or company:<id>
    total: float
    spent: float
    left: float


class Stats(TypedDict):
    """A differentially private release (``access.privacy``): per window of the snapped range, a noisy
    household count and each field's mean; no household ids and no single household's extreme;
    windows whose noisy count is below ``min_group_size`` suppressed."""

    category: SeriesCategory
    purpose: Purpose
    clause_ids: list[str]
    start: Instant  # snapped down to the resolution
    stop: Instant  # snapped up to the resolution
    every: int
    agg: Agg
    fields: list[FieldName]
    min_group_size: int
    suppressed_windows: int
    epsilon: float  # charged to the caller's budget for this release
    budget: StatsBudget
    noise: StatsNoise
    columns: Columns


class LedgerRecord(TypedDict):
    seq: int
    recipient: str
    categories: list[AnyCategory]
    period_start: Instant
    period_end: Instant
    purpose: Purpose
    clause_ids: list[str]
    at: Instant
    chain: Hash  # the household's head after this record


class LedgerHead(TypedDict):
    """The head of the household's own chain: keep ``text`` to check later that nothing changed."""

    records: int
    hash: Hash
    text: str


class KeptCheck(TypedDict):
    text: str
    verdict: Literal["intact", "changed"]


class LedgerPage(TypedDict):
    household: str
    head: LedgerHead
    records: list[LedgerRecord]
    kept: NotRequired[KeptCheck]


class Suspension(TypedDict):
    id: int
    company: Company  # whose terms the person invoked
    scope: Scope
    recipient: str | None
    category: AnyCategory | None
    requested_at: Instant
    lifted_at: Instant | None
    active: bool


class Consent(TypedDict):
    household: str
    suspensions: list[Suspension]
    provision_suspended: bool


class Erasure(TypedDict):
    """An erasure request; ``outcome`` per category (the answer when asked): ``erase``, or
    ``keep: <clause ids>`` by law.  ``recorded``: waiting for the operator; ``erasing``: begun (nothing
    of it is served any more); ``done``: the stores removed it.  Once begun: the categories ``erased``,
    the data ``periods`` erased, what was ``kept`` and why, what each store ``removed``."""

    id: int
    requested_at: Instant
    outcome: dict[str, str]
    status: Annotated[str, keywords(enum=["recorded", "erasing", "done"])]
    completed_at: NotRequired[Instant | None]
    erased: NotRequired[list[AnyCategory]]
    periods: NotRequired[Periods]
    kept: NotRequired[dict[str, str]]
    removed: NotRequired[dict[str, str]]


class Erasures(TypedDict):
    household: str
    requests: list[Erasure]


class Explanation(TypedDict):
    allowed: bool
    reason: str
    explanation: str
    clause_ids: list[str]
    served: Periods
    refused: Periods


class AlertProblem(TypedDict):
    """An open problem of an installation (``access.maintenance``)."""

    key: str
    household: str
    device: str | None
    category: str
    kind: str
    severity: int
    since: Instant
    detail: dict[str, Any]


class AlertRefusal(TypedDict):
    household: str
    reason: str
    detail: str


class Alerts(TypedDict):
    principal: str
    purpose: Purpose
    at: Instant
    problems: list[AlertProblem]
    refused: list[AlertRefusal]


Day = Annotated[str, keywords(format="date")]
Node = Annotated[
    str,
    keywords(
        enum=[
            "pv", "fuel_cell", "battery_discharge", "ev_discharge", "grid_import",
            "home", "battery_charge", "ev_charge", "grid_export",
        ]
    ),
]  # fmt: skip


class EnergyTotals(TypedDict):
    """Energy per source and sink over the period (Wh); ``home_wh`` is what the meters leave over,
    ``unmetered_wh`` what the sinks took beyond the sources; water and gas in m³."""

    pv_wh: float
    fuel_cell_wh: float
    grid_import_wh: float
    grid_export_wh: float
    battery_charge_wh: float
    battery_discharge_wh: float
    ev_charge_wh: float
    ev_discharge_wh: float
    home_wh: float
    unmetered_wh: float
    water_m3: float
    gas_m3: float


# "from" is a Python keyword: the functional form.
EnergyFlow = TypedDict("EnergyFlow", {"from": Node, "to": Node, "wh": float})


class EnergyBalance(TypedDict):
    sources_wh: float
    sinks_wh: float
    unmetered_wh: float


class CostBand(TypedDict):
    band: str
    import_kwh: float
    yen: float


class EnergyCost(TypedDict):
    """Energy charge under the configured tariff, yen: bought, sold (feed-in), net."""

    import_yen: float
    export_yen: float
    net_yen: float
    bands: list[CostBand]


TariffBand = TypedDict(
    "TariffBand",
    {
        "name": str,
        "from": str,
        "until": str,
        "days": Annotated[str, keywords(enum=["all", "weekday", "weekend"])],
        "yen_per_kwh": float,
    },
)


class TariffInfo(TypedDict):
    currency: Literal["JPY"]
    feed_in_yen_per_kwh: float
    bands: list[TariffBand]


class EnergyPeriod(TypedDict):
    totals: EnergyTotals
    flows: list[EnergyFlow]
    balance: EnergyBalance
    self_consumption: float | None
    self_sufficiency: float | None
    cost: EnergyCost
    hours: int


class PreviousPeriod(EnergyPeriod):
    first_day: Day
    last_day: Day


class LastState(TypedDict):
    soc_pct: float
    time: Instant
    connected: NotRequired[bool | None]


class LastStates(TypedDict):
    battery: LastState | None
    ev: LastState | None


class EnergyReport(EnergyPeriod):
    """A home's energy over a Tokyo day, week or month (``access.api.energy``)."""

    household: str
    purposes: dict[str, Purpose]
    clause_ids: list[str]
    refused: dict[str, str]
    time_zone: Literal["Asia/Tokyo"]
    span: Literal["day", "week", "month"]
    first_day: Day
    last_day: Day
    start: Instant
    stop: Instant
    tariff: TariffInfo
    previous: PreviousPeriod
    last_state: LastStates
    hourly: Columns


class Webhook(TypedDict):
    principal: str
    url: str | None


class WebhookSet(TypedDict):
    """The webhook as set, with its signing secret (shown this once)."""

    principal: str
    url: str
    secret: str
    signature: str


# -- request bodies ------------------------------------------------------------------------------------
PrincipalId = Annotated[str, keywords(pattern="^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")]


class ConsentChange(TypedDict):
    """Suspend or resume use, or provision to third parties (per recipient, category or all)."""

    scope: NotRequired[Scope]
    suspended: bool
    recipient: NotRequired[PrincipalId | None]
    category: NotRequired[AnyCategory | None]
    company: NotRequired[Company]  # whose terms the person invokes (default sps)


class WebhookAsk(TypedDict):
    url: Annotated[str, keywords(maxLength=500)]


class ErasureAsk(TypedDict):
    """The categories to erase; null or absent: all."""

    categories: NotRequired[Annotated[list[AnyCategory], keywords(minItems=1)] | None]
