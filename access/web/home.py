"""The homeowner's pages: their home's energy, who received their data, erasure of their data.

Each page is in Japanese or English (``access.web.i18n.language``: Japanese for a Japanese browser),
every time is Tokyo time with the date written year-month-day, and water and gas are in m³.  The
energy page is filled by ``static/app.js`` from the energy report and series API with the session
cookie; the ledger and erasure pages are rendered here and change state only through the consent and
erasure API (``static/home.js``), or, without a script, through the plain form below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Final

from aiohttp import web

from access.api.problems import ApiProblem
from access.api.service import homeowner_periods, own_suspensions, person_view
from access.api.state import AppState
from access.auth import Caller, check_csrf
from access.clock import TOKYO
from access.consent import DEFAULT_COMPANY, DONE, ERASING, RECORDED, ErasureRequest
from access.erasure import requests_of
from access.ledger import ProvisionRecord
from access.web.i18n import category_word, day, language, t, when
from access.web.ledger_head import ledger_head_section
from access.web.page import e, figure, my_households, page, read_form, require, words_block
from access.web.terms_words import clause_citation, clause_kind, clause_summary, kind_words, purpose_words
from access.world import Suspension
from seeds.vocabulary import CATEGORIES

GROUPS_PER_PAGE: Final = 20
ERASABLE: Final = CATEGORIES
SCRIPT_WORDS: Final = (
    "loading", "updated", "refused_some", "load_failed", "kpi_pv", "kpi_fc", "kpi_home", "kpi_import",
    "kpi_export", "kpi_self_sufficiency", "kpi_self_consumption", "kpi_cost", "kpi_battery", "kpi_ev",
    "ev_plugged", "ev_unplugged", "as_of", "vs_day", "vs_week", "vs_month", "no_data", "balance",
    "node_pv", "node_fuel_cell", "node_battery_discharge", "node_ev_discharge", "node_grid_import",
    "node_home", "node_battery_charge", "node_ev_charge", "node_grid_export", "s_pv", "s_grid",
    "s_battery", "s_fc", "s_ev", "s_soc_battery", "s_soc_ev", "s_home", "s_water", "s_gas",
    "chart_energy_hour", "chart_energy_day", "cost_bought", "cost_sold", "cost_net", "days_all",
    "days_weekday", "days_weekend", "weekdays", "flow_from", "flow_to", "flow_kwh", "sending",
    "state_allowed", "state_suspended", "erasure_sent", "erasure_pick", "e_pv", "e_import", "e_export",
    "e_charge", "e_discharge", "recipient_suspended", "recipient_allowed", "suspend_recipient",
    "resume_recipient", "suspend_all", "resume_all",
)  # fmt: skip
CATEGORY_NAMES: Final = ("pv", "external_generation", "electricity", "battery", "ev", "water", "gas")


def _household(request: web.Request, state: AppState, caller: Caller) -> str | None:
    """The household asked for, if it is (or was) the caller's home; else their first."""
    own = my_households(state, caller, "homeowner", former=True)
    if not own:
        return None
    asked = request.query.get("household", own[0])
    return asked if asked in own else own[0]


def _no_household(lang: str, caller: Caller, path: str) -> web.Response:
    return page(
        t(lang, "my_home"), f'<p class="card">{e(t(lang, "no_household"))}</p>', caller, lang, path=path
    )


def _disclosure_purposes(state: AppState, caller: Caller) -> list[str]:
    """The purposes under which the person reads their own home: their registered rights of
    disclosure (one per company whose terms cover a part of the home), the SPS one first."""
    registered = state.relationships.principal(caller.principal).purposes
    mine = sorted(p for p in registered if p.endswith(".disclosure_to_person"))
    return sorted(mine, key=lambda p: not p.startswith("sps."))


# -- energy ----------------------------------------------------------------------------------------------
def _kpi(key: str, lang: str) -> str:
    return (
        f'<div class="kpi" id="kpi-{key}"><span class="label">{e(t(lang, key))}</span>'
        '<span class="value">-</span><span class="compare muted"></span></div>'
    )


async def home(request: web.Request) -> web.StreamResponse:
    state, caller = require(request)
    if caller.kind == "installer":
        raise web.HTTPSeeOther("/installer")
    if caller.kind != "homeowner":
        raise ApiProblem(
            403, "refused", "the web views are for homeowners and installers", reason="wrong_kind"
        )
    lang = language(request)
    household = _household(request, state, caller)
    if household is None:
        return _no_household(lang, caller, "/")
    today = state.now_dt().astimezone(TOKYO).date().isoformat()
    spans = "".join(
        f'<option value="{s}">{e(t(lang, f"span_{s}"))}</option>' for s in ("day", "week", "month")
    )
    kpis = "".join(
        _kpi(k, lang)
        for k in (
            "kpi_pv", "kpi_home", "kpi_import", "kpi_export", "kpi_self_sufficiency",
            "kpi_self_consumption", "kpi_cost", "kpi_fc", "kpi_battery", "kpi_ev",
        )
    )  # fmt: skip
    flows = (
        f'<details class="flows-table"><summary>{e(t(lang, "flow_table"))}</summary><div class="table-wrap">'
        f'<table id="flow-table"><thead><tr><th scope="col">{e(t(lang, "flow_from"))}</th>'
        f'<th scope="col">{e(t(lang, "flow_to"))}</th><th scope="col" class="num">kWh</th></tr></thead>'
        "<tbody></tbody></table></div></details>"
        f'<p id="balance" class="balance"></p><p class="muted small">{e(t(lang, "flow_note"))}</p>'
    )
    cost = (
        f'<section class="card" id="cost"><h2>{e(t(lang, "cost_title"))}</h2><div class="table-wrap">'
        f'<table id="cost-table"><thead><tr><th scope="col">{e(t(lang, "cost_band"))}</th>'
        f'<th scope="col">{e(t(lang, "cost_hours"))}</th>'
        f'<th scope="col" class="num">{e(t(lang, "cost_kwh"))}</th>'
        f'<th scope="col" class="num">{e(t(lang, "cost_price"))}</th>'
        f'<th scope="col" class="num">{e(t(lang, "cost_yen"))}</th></tr></thead><tbody></tbody></table></div>'
        f'<p class="muted small">{e(t(lang, "cost_note"))}</p></section>'
    )
    controls = (
        '<form class="controls" id="period" role="search">'
        f'<button type="button" class="secondary" id="earlier">&#9664; {e(t(lang, "earlier"))}</button>'
        f'<label>{e(t(lang, "date"))} <input type="date" id="date" name="date" value="{today}" '
        f'max="{today}" required></label>'
        f'<label>{e(t(lang, "span"))} <select id="span" name="span">{spans}</select></label>'
        f'<button type="button" class="secondary" id="later">{e(t(lang, "later"))} &#9654;</button>'
        f'<button type="button" id="refresh">{e(t(lang, "refresh"))}</button>'
        f'<label class="check"><input type="checkbox" id="auto" checked> {e(t(lang, "auto_refresh"))}</label>'
        f'<a id="csv" href="#" download>{e(t(lang, "csv"))}</a></form>'
    )
    body = (
        f'<section class="card" id="dashboard" data-household="{e(household)}" '
        f'data-purpose="{e(",".join(_disclosure_purposes(state, caller)))}" data-mode="homeowner" '
        f'data-today="{today}">'
        f'<h2>{e(t(lang, "household", household=household))} <span id="period-label"></span></h2>'
        f'{controls}<p class="status muted" id="chart-status" role="status" aria-live="polite">'
        f'{e(t(lang, "loading"))}</p><div class="kpis">{kpis}</div>'
        f'<div class="charts">{figure("flow-chart", t(lang, "flow_title"), flows)}'
        f"{figure('energy-chart', t(lang, 'chart_energy_hour'))}"
        f"{figure('power-chart', t(lang, 'chart_power'))}{figure('soc-chart', t(lang, 'chart_soc'))}"
        f"{figure('water-gas-chart', t(lang, 'chart_water_gas'))}"
        f"</div></section>{cost}{words_block(lang, SCRIPT_WORDS)}"
    )
    scripts = ("chart.umd.min.js", "chartjs-chart-sankey.min.js", "app.js")
    return page(t(lang, "my_home"), body, caller, lang, path="/", scripts=scripts)


# -- ledger ----------------------------------------------------------------------------------------------
@dataclass
class Group:
    """The provisions to one recipient on one Tokyo day."""

    recipient: str
    day: date
    records: list[ProvisionRecord] = field(default_factory=list)

    @property
    def last_at(self) -> float:
        return max(r.at for r in self.records)


def group_records(records: list[ProvisionRecord]) -> list[Group]:
    """By recipient and Tokyo day, the most recent group first."""
    groups: dict[tuple[str, date], Group] = {}
    for r in records:
        d = datetime.fromtimestamp(r.at, TOKYO).date()
        groups.setdefault((r.recipient, d), Group(r.recipient, d)).records.append(r)
    return sorted(groups.values(), key=lambda g: (-g.last_at, g.recipient))


def _name(state: AppState, lang: str, principal: str) -> str:
    p = state.relationships.find_principal(principal)
    return principal if p is None else f"{p.display_name} ({kind_words(lang, p.kind)})"


def _recipient_suspension(
    suspensions: list[Suspension], recipient: str | None, at: float
) -> Suspension | None:
    """The active suspension under the SPS terms (SPS 2(6), what these switches set) of all provision
    (no category) to ``recipient`` (None: to everyone)."""
    return next(
        (
            s
            for s in suspensions
            if s.active(at)
            and s.scope == "provision"
            and s.recipient == recipient
            and s.category is None
            and s.company == DEFAULT_COMPANY
        ),
        None,
    )


def _switch(
    household: str, caller: Caller, lang: str, recipient: str | None, suspended: bool, label: str
) -> str:
    """A suspend/resume button: the consent API from the script, this form without one."""
    rec = "" if recipient is None else f'<input type="hidden" name="recipient" value="{e(recipient)}">'
    button_id = ' id="provision-toggle"' if recipient is None else ""
    return (
        f'<form method="post" action="/household/{e(household)}/provision?lang={lang}" class="switch" '
        f'data-household="{e(household)}" data-recipient="{e(recipient or "")}" '
        f'data-suspended="{"true" if suspended else "false"}">'
        f'<input type="hidden" name="csrf" value="{e(caller.csrf)}">{rec}'
        f'<input type="hidden" name="suspended" value="{"false" if suspended else "true"}">'
        f'<button type="submit"{button_id} class="{"" if suspended else "secondary"}">{e(label)}</button>'
        "</form>"
    )


def _group_html(state: AppState, lang: str, g: Group) -> str:
    seeds = state.authz.policy.seeds
    cats = sorted({c for r in g.records for c in r.categories})
    purposes = list(dict.fromkeys(r.purpose for r in g.records))
    clauses = list(dict.fromkeys(c for r in g.records for c in r.clause_ids))
    start = min(r.period_start for r in g.records)
    end = max(r.period_end for r in g.records)
    times = sorted(r.at for r in g.records)
    first, last = when(lang, times[0]).split(" ")[-2], when(lang, times[-1]).split(" ")[-2]
    clause_items = "".join(
        f'<li><span class="cite">{e(clause_citation(seeds, c))}</span> '
        f'({e(clause_kind(seeds, lang, c))})<details><summary class="small">{e(c)}</summary>'
        f'<p lang="en" class="small">{e(clause_summary(seeds, c))}</p></details></li>'
        for c in clauses
    )
    return (
        f'<article class="provision" data-recipient="{e(g.recipient)}" data-day="{g.day.isoformat()}">'
        f"<h4>{e(day(lang, datetime(g.day.year, g.day.month, g.day.day, 12, tzinfo=TOKYO)))} "
        f'<span class="badge">{e(t(lang, "ledger_count", count=len(g.records)))}</span></h4><dl>'
        f"<dt>{e(t(lang, 'ledger_data'))}</dt><dd>{e(', '.join(category_word(lang, c) for c in cats))}</dd>"
        f"<dt>{e(t(lang, 'ledger_period'))}</dt><dd>{e(when(lang, start))} - {e(when(lang, end))}</dd>"
        f"<dt>{e(t(lang, 'ledger_purpose'))}</dt>"
        f"<dd>{e('; '.join(purpose_words(seeds, lang, p) for p in purposes))}</dd>"
        f'<dt>{e(t(lang, "ledger_clause"))}</dt><dd><ul class="clauses">{clause_items}</ul></dd>'
        f"<dt>{e(t(lang, 'ledger_times'))}</dt><dd>{e(first)}"
        f"{'' if first == last else ' - ' + e(last)} JST</dd></dl></article>"
    )


async def ledger_page(request: web.Request) -> web.StreamResponse:
    state, caller = require(request, "homeowner")
    lang = language(request)
    household = _household(request, state, caller)
    if household is None:
        return _no_household(lang, caller, "/ledger")
    now = state.clock()
    suspensions = own_suspensions(state, caller.principal, household)
    everyone = _recipient_suspension(suspensions, None, now)
    ledger = await state.ledger_for(household)
    # A person sees the provisions of their own time in the home (a new occupant not the previous one's).
    mine = homeowner_periods(state, caller.principal, household)
    groups = group_records([v for r in ledger.records if (v := person_view(r, mine)) is not None])
    pages = max(1, -(-len(groups) // GROUPS_PER_PAGE))
    try:
        number = min(max(1, int(request.query.get("page", "1"))), pages)
    except ValueError:
        number = 1
    shown = groups[(number - 1) * GROUPS_PER_PAGE : number * GROUPS_PER_PAGE]
    # Recipients: everyone linked to the home (its sales company, installer...), then anyone on this page.
    snap = state.authz.snapshot(now)
    current = [link for link in snap.links_of(household) if link.since <= now < link.until]
    linked = sorted({link.principal for link in current if link.role != "homeowner"})
    approvers = {link.principal for link in current}
    approved = sorted(
        {
            a.approved
            for a in snap.sliced.approvals
            if a.approver in approvers and a.valid_from <= now < a.until
        }
    )
    recipients = list(dict.fromkeys([*linked, *approved, *(g.recipient for g in shown)]))
    by_recipient: dict[str, list[Group]] = {}
    for g in shown:
        by_recipient.setdefault(g.recipient, []).append(g)
    cards = []
    for r in recipients:
        own = _recipient_suspension(suspensions, r, now)
        name = _name(state, lang, r)
        if own is not None:
            status = t(lang, "recipient_suspended", when=when(lang, own.requested_at))
        elif everyone is not None:
            status = t(lang, "recipient_all_suspended", when=when(lang, everyone.requested_at))
        else:
            status = t(lang, "recipient_allowed")
        label = t(lang, "resume_recipient" if own else "suspend_recipient", name=name)
        items = "".join(_group_html(state, lang, g) for g in by_recipient.get(r, []))
        cards.append(
            f'<section class="recipient{" suspended" if own or everyone else ""}" data-recipient="{e(r)}">'
            f'<h3>{e(name)}</h3><p class="state" role="status">{e(status)}</p>'
            f"{_switch(household, caller, lang, r, own is not None, label)}{items}</section>"
        )
    all_state = t(lang, "state_suspended" if everyone else "state_allowed")
    sentence = e(t(lang, "all_provision", state="\x00")).replace(
        "\x00", f'<strong id="provision-state">{e(all_state)}</strong>'
    )
    switch_all = f"<p>{sentence}</p>" + _switch(
        household,
        caller,
        lang,
        None,
        everyone is not None,
        t(lang, "resume_all" if everyone else "suspend_all"),
    )
    nav = _pager(household, lang, number, pages)
    empty = "" if groups else f'<p class="muted" id="ledger-empty">{e(t(lang, "ledger_empty"))}</p>'
    body = (
        f'<section class="card" id="provision" data-household="{e(household)}">'
        f'<h2>{e(t(lang, "tab_ledger"))}</h2><p class="muted">{e(t(lang, "ledger_note"))}</p>'
        f"{switch_all}{empty}{nav}"
        f'<h3 class="sub">{e(t(lang, "recipients_title"))}</h3>'
        f'<p class="muted small">{e(t(lang, "recipients_note"))}</p>'
        f'<div class="recipients">{"".join(cards)}</div>{nav}</section>'
        f'<section class="card" id="ledger-anchor">'
        f"{ledger_head_section(household, ledger, request.query.get('kept'), lang)}</section>"
        f"{words_block(lang, SCRIPT_WORDS)}"
    )
    query = f"household={household}&page={number}"
    return page(t(lang, "tab_ledger"), body, caller, lang, path="/ledger", query=query, scripts=("home.js",))


def _pager(household: str, lang: str, number: int, pages: int) -> str:
    if pages <= 1:
        return ""
    where = t(lang, "page_of", page=number, pages=pages)

    def link(to: int, rel: str, key: str) -> str:
        href = f"/ledger?household={e(household)}&amp;page={to}&amp;lang={lang}"
        return f'<a href="{href}" rel="{rel}">{e(t(lang, key))}</a>'

    newer = link(number - 1, "prev", "newer") if number > 1 else ""
    older = link(number + 1, "next", "older") if number < pages else ""
    return f'<nav class="pager" aria-label="{e(where)}">{newer}<span>{e(where)}</span>{older}</nav>'


async def provision_form(request: web.Request) -> web.StreamResponse:
    """The switches without a script: suspend or resume provision to one recipient or to all."""
    state, caller = require(request, "homeowner")
    form = await read_form(request)
    assert caller.csrf is not None
    check_csrf(request, caller.csrf, str(form.get("csrf", "")))
    household = request.match_info["household"]
    if household not in my_households(state, caller, "homeowner"):
        raise ApiProblem(403, "refused", "not your household", reason="no_grant")
    if not state.identity_verified(caller):
        raise ApiProblem(
            403,
            "refused",
            "changing who receives your data needs a recent sign-in: sign out and in again",
            reason="identity_not_verified",
        )
    recipient = str(form.get("recipient", "")) or None
    if recipient is not None and state.relationships.find_principal(recipient) is None:
        raise ApiProblem(400, "bad_parameter", "unknown recipient", field="recipient")
    want = str(form.get("suspended", "")) == "true"
    state.authz.consent.set_suspended(
        household,
        want,
        recipient=recipient,
        at=state.clock(),
        requested_within=homeowner_periods(state, caller.principal, household),
    )
    raise web.HTTPSeeOther(f"/ledger?household={household}&lang={language(request)}")


# -- erasure ---------------------------------------------------------------------------------------------
def _status(lang: str, status: str) -> str:
    return t(lang, f"erasure_status_{status}") if status in (RECORDED, ERASING, DONE) else status


def _outcome(lang: str, outcome: str) -> str:
    if outcome == "erase":
        return t(lang, "erasure_erase")
    return t(lang, "erasure_keep", clauses=outcome.removeprefix("keep: "))


def _outcomes(lang: str, r: ErasureRequest) -> list[tuple[str, str]]:
    """Per category, in words: the answer given when asked, until the operator begins; from then, what
    was erased (or is being erased) and what the law kept, as the operator's plan recorded it (the
    household's contracts may have changed since the answer)."""
    if r.status == RECORDED:
        return [(c, _outcome(lang, o)) for c, o in sorted(r.outcome.items())]
    gone = t(lang, "erasure_erased" if r.status == DONE else "erasure_erasing")
    out = [(c, gone) for c in r.erased]
    for c, why in (r.kept or {}).items():
        clauses = why[why.find("(") + 1 : why.find(")")] if "(" in why else why
        out.append((c, t(lang, "erasure_keep", clauses=clauses)))
    return sorted(out)


async def erasure_page(request: web.Request) -> web.StreamResponse:
    state, caller = require(request, "homeowner")
    lang = language(request)
    household = _household(request, state, caller)
    if household is None:
        return _no_household(lang, caller, "/erasure")
    mine = requests_of(
        state.authz.consent.erasures(household),
        caller.principal,
        homeowner_periods(state, caller.principal, household),
    )
    requests = sorted(mine, key=lambda r: (-r.requested_at, -r.id))
    rows = "".join(
        f'<tr data-id="{r.id}" data-status="{e(r.status)}"><td>{e(when(lang, r.requested_at))}</td>'
        f"<td>{e(_status(lang, r.status))}</td>"
        '<td><ul class="outcome">'
        + "".join(f"<li>{e(category_word(lang, c))}: {e(words)}</li>" for c, words in _outcomes(lang, r))
        + "</ul></td></tr>"
        for r in requests
    )
    table = (
        f'<div class="table-wrap"><table id="erasures"><thead><tr>'
        f'<th scope="col">{e(t(lang, "erasure_requested"))}</th>'
        f'<th scope="col">{e(t(lang, "erasure_status"))}</th>'
        f'<th scope="col">{e(t(lang, "erasure_outcome"))}</th>'
        f"</tr></thead><tbody>{rows}</tbody></table></div>"
        if requests
        else f'<p class="muted" id="erasure-none">{e(t(lang, "erasure_none"))}</p>'
    )
    boxes = "".join(
        f'<label class="check"><input type="checkbox" name="category" value="{c}"> '
        f"{e(category_word(lang, c))}</label>"
        for c in ERASABLE
    )
    form = (
        f'<form id="erasure-form" class="stack" data-household="{e(household)}">'
        f"<fieldset><legend>{e(t(lang, 'erasure_categories'))}</legend>"
        f'<label class="check"><input type="checkbox" id="erase-all" name="all" value="1"> '
        f'<strong>{e(t(lang, "erasure_all"))}</strong></label><div class="boxes">{boxes}</div></fieldset>'
        f'<label class="check"><input type="checkbox" id="erase-confirm" required> '
        f"{e(t(lang, 'erasure_confirm'))}</label>"
        f'<button type="submit">{e(t(lang, "erasure_submit"))}</button>'
        '<p id="erasure-status" role="status" aria-live="polite"></p></form>'
    )
    body = (
        f'<section class="card"><h2>{e(t(lang, "erasure_title"))}</h2>'
        f'<p class="muted">{e(t(lang, "erasure_note"))}</p>'
        f'{form}</section><section class="card"><h2>{e(t(lang, "erasure_requests"))}</h2>{table}</section>'
        f"{words_block(lang, SCRIPT_WORDS)}"
    )
    return page(
        t(lang, "erasure_title"),
        body,
        caller,
        lang,
        path="/erasure",
        query=f"household={household}",
        scripts=("home.js",),
    )


def add_home_routes(app: web.Application) -> None:
    app.router.add_get("/", home, name="home")
    app.router.add_get("/ledger", ledger_page, name="ledger_page")
    app.router.add_get("/erasure", erasure_page, name="erasure_page")
    app.router.add_post("/household/{household}/provision", provision_form, name="provision_form")
