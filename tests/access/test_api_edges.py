"""Every parameter parser is total: whatever a caller sends, the answer is a 4xx naming the parameter,
never a 500 with a traceback.  The inputs the attack run found first, then hypothesis over the parsers
and over whole requests."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import shutil
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from access.api import params
from access.api.cursor import CursorCodec
from access.api.problems import ApiProblem
from access.compiler import Policy
from access.ledger_anchor import KeptHead
from pipeline.query import QUERYABLE_FIELDS
from tests.access.api_world import OWN, PV, RANGE, SERIES, Env, api_policy, start_env, store_path

__all__ = ["api_policy", "store_path"]
Q = {**RANGE, "every": "1h", "purpose": PV}
NOW = datetime(2026, 6, 2, tzinfo=UTC)


@pytest.fixture
async def env(tmp_path: Path, store_path: Path, api_policy: Policy) -> AsyncIterator[Env]:
    async for e in start_env(tmp_path, store_path, api_policy, rate_per_s=None):
        yield e


async def _series(env: Env, **extra: str) -> tuple[int, dict[str, object]]:
    r = await env.client.get(
        SERIES.format(hh="h1", cat="pv"), params={**Q, **extra}, headers=env.auth("inst1")
    )
    return r.status, await r.json(content_type=None)


# -- what the attack found ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"limit": "²"}, "limit"),  # str.isdigit() accepts it, int() does not
        ({"limit": "١٢"}, "limit"),  # Arabic-Indic digits: int() would take them, the API does not
        ({"limit": "99999999999999999999999"}, "limit"),
        ({"limit": "NaN"}, "limit"),
        ({"limit": "1e3"}, "limit"),
        ({"limit": "5\n"}, "limit"),
        ({"every": "999999999999999d"}, "every"),
        ({"every": "1m\n"}, "every"),
        ({"every": "nan"}, "every"),
        ({"start": "+999999-01-01T00:00:00+00:00"}, "start"),
        ({"start": "9999-12-31T23:59:59-23:59"}, "start"),
        ({"stop": "NaN"}, "stop"),
        ({"start": "-999999d"}, "start"),  # 27 centuries back: not a date any more
        ({"start": "-1d\n"}, "start"),
        ({"purpose": PV + "\n"}, "purpose"),
        ({"fields": "power_w," * 30}, "fields"),
    ],
)
async def test_odd_values_are_400_naming_the_parameter(env: Env, extra: dict[str, str], field: str) -> None:
    status, body = await _series(env, **extra)
    assert status == 400 and body["field"] == field, (extra, status, body)


def _old_style_cursor(t: object, device: str, asked: tuple[object, ...]) -> str:
    """A cursor as anyone could make one before cursors were signed: its fingerprint was an unkeyed
    hash of the query."""
    fp = hashlib.sha256(json.dumps([str(p) for p in asked]).encode()).hexdigest()[:16]
    raw = json.dumps({"t": t, "d": device, "f": fp}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_forged_cursors_are_refused(env: Env) -> None:
    start, stop = datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 6, 2, tzinfo=UTC)
    asked = ("h1", "pv", ("power_w", "energy_wh_total"), start, stop, timedelta(hours=1), "mean")
    # A far-future time (it overflowed a datetime: a 500), a plausible one, and a signed-looking one.
    codec = CursorCodec(b"k" * 32)  # a key that is not the server's
    for cursor in (
        _old_style_cursor(10**20, "inv1", asked),
        _old_style_cursor(int(start.timestamp() * 1e6), "inv1", asked),
        codec.encode(int(start.timestamp() * 1e6), "inv1", asked),
        "x" * 5000,
        "é.é",
    ):
        status, body = await _series(env, cursor=cursor)
        assert status == 400 and body["field"] == "cursor", (cursor[:40], status, body)


async def test_a_genuine_cursor_works_and_is_bound_to_its_query(env: Env) -> None:
    status, body = await _series(env, limit="3")
    assert status == 200 and isinstance(body["next_cursor"], str)
    cursor = body["next_cursor"]
    assert (await _series(env, limit="3", cursor=cursor))[0] == 200
    status, body = await _series(env, limit="3", cursor=cursor, agg="max")
    assert status == 400 and body["field"] == "cursor"
    payload, _, signature = cursor.partition(".")
    tampered = payload[:-1] + ("A" if payload[-1] != "A" else "B") + "." + signature
    assert (await _series(env, limit="3", cursor=tampered))[0] == 400


@pytest.mark.parametrize("depth", [100, 5_000, 30_000])
async def test_deeply_nested_json_is_a_400(env: Env, depth: int) -> None:
    body = "[" * depth + "]" * depth
    r = await env.client.put(
        "/api/v1/households/h1/consent",
        data=body,
        headers={**env.auth("alice"), "Content-Type": "application/json"},
    )
    assert r.status == 400 and (await r.json())["field"] == "body"
    nested = '{"suspended": ' + "[" * depth + "]" * depth + "}"
    r = await env.client.put(
        "/api/v1/households/h1/consent",
        data=nested,
        headers={**env.auth("alice"), "Content-Type": "application/json"},
    )
    assert r.status == 400


# -- hypothesis over the parsers -------------------------------------------------------------------------
_texts = st.one_of(
    st.text(max_size=60),
    st.text(alphabet="0123456789²³¹١٢٣+-.:eEnNaTZz ,smhd_", max_size=30),
    st.sampled_from(["", "raw", "nan", "inf", "-0", "1e308", "2026-06-01T00:00:00Z", "power_w"]),
)


def _total(call: object) -> None:
    """``call()`` returns or raises a 400 ``ApiProblem`` naming a field; anything else fails."""
    try:
        call()  # type: ignore[operator]
    except ApiProblem as p:
        assert p.status == 400 and p.field, p


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_texts, other=_texts)
def test_every_parser_is_total(value: str, other: str) -> None:
    codec = CursorCodec(b"s" * 32)
    asked = ("h1", "pv", ("power_w",), NOW - timedelta(days=1), NOW, None, "mean")
    _total(lambda: params.household_id(value))
    _total(lambda: params.category(value))
    _total(lambda: params.purpose(value))
    _total(lambda: params.instant("start", value))
    _total(lambda: params.every(value))
    _total(lambda: params.agg(value))
    _total(lambda: params.fields("pv", value))
    _total(lambda: params.fmt(value, other))
    _total(lambda: params.limit(value))
    _total(lambda: codec.decode(value, asked))
    _total(lambda: params.declared_purpose({"purpose": value}, CIMultiDict({"X-Purpose": other})))
    query: Mapping[str, str] = {"start": value, "stop": other, "every": value}
    _total(lambda: params.window(query, NOW, timedelta(minutes=1)))
    assert isinstance(params.accepts_gzip(value), bool)
    assert KeptHead.parse(value) is None or KeptHead.parse(value) == KeptHead.parse(value.strip())


@settings(max_examples=400, deadline=None)
@given(limit=st.integers(-(10**30), 10**30))
def test_limit_accepts_exactly_the_documented_range(limit: int) -> None:
    try:
        assert params.limit(str(limit)) == limit and 1 <= limit <= params.MAX_LIMIT
    except ApiProblem:
        assert not 1 <= limit <= params.MAX_LIMIT


@settings(max_examples=200, deadline=None)
@given(fields=st.lists(st.sampled_from(sorted(QUERYABLE_FIELDS)), min_size=1, max_size=16, unique=True))
def test_any_set_of_known_fields_parses(fields: list[str]) -> None:
    assert params.fields("pv", ",".join(fields)) == tuple(fields)


# -- hypothesis over whole requests ------------------------------------------------------------------------
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
_consent = st.one_of(
    _json,
    st.fixed_dictionaries(
        {},
        optional={
            "scope": st.one_of(st.sampled_from(["provision", "use"]), _json),
            "suspended": st.one_of(st.booleans(), _json),
            "recipient": st.one_of(st.none(), st.text(max_size=110), _json),
            "category": st.one_of(st.none(), st.sampled_from(["pv", "gas", "identity"]), _json),
        },
    ),
)


QUERY_NAMES = ("start", "stop", "every", "agg", "fields", "format", "limit", "cursor", "purpose")


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(query=st.dictionaries(st.sampled_from(QUERY_NAMES), _texts, max_size=6), body=_consent)
async def test_no_request_gets_a_500(env: Env, query: dict[str, str], body: object) -> None:
    r = await env.client.get(SERIES.format(hh="h1", cat="pv"), params=query, headers=env.auth("inst1"))
    assert r.status in (200, 400, 403), (query, r.status, await r.text())
    r = await env.client.put("/api/v1/households/h1/consent", json=body, headers=env.auth("alice"))
    assert r.status in (200, 400), (body, r.status, await r.text())
    daily = {**query, "purpose": OWN}
    r = await env.client.get("/api/v1/households/h1/daily/pv", params=daily, headers=env.auth("alice"))
    assert r.status in (200, 400), (daily, r.status, await r.text())


async def test_a_store_outage_is_503_and_logged_once_with_its_reason_not_per_request(
    tmp_path: Path, store_path: Path, api_policy: Policy, caplog: pytest.LogCaptureFixture
) -> None:
    """The store's volume goes away: every query is a 503 ``store_unavailable``; the operator's log
    gets the store's reason at the first failure and no line per failed request after it (an outage
    at dashboard rates would otherwise write thousands a second); the volume back, queries answer."""
    volume = tmp_path / "vol"
    volume.mkdir()
    shutil.copy(store_path, volume / "series.sqlite")
    async for env in start_env(tmp_path, volume / "series.sqlite", api_policy):
        assert (await _series(env))[0] == 200
        # The volume goes away.  Open connections would go on reading the moved file, so SQLite is also
        # made to interrupt their next statement (a progress handler: the fault injected); every read
        # after that needs a new connection, and the file is missing.
        volume.rename(tmp_path / "vol-unmounted")
        for conn in env.store._all_conns:
            conn.set_progress_handler(lambda: 1, 1)
        with caplog.at_level(logging.WARNING):
            for hours in range(1, 9):  # distinct windows: no page is reused
                status, body = await _series(env, stop=f"2026-06-01T{hours:02d}:00:00Z")
                assert (status, body["code"]) == (503, "store_unavailable"), body
        answered = [r.getMessage() for r in caplog.records if "queries answered 503" in r.getMessage()]
        retried = [r.getMessage() for r in caplog.records if "trying once more" in r.getMessage()]
        assert len(answered) == 1 and "series.sqlite" in answered[0], answered
        assert len(retried) == 1, retried
        (tmp_path / "vol-unmounted").rename(volume)
        assert (await _series(env, stop="2026-06-01T10:00:00Z"))[0] == 200
