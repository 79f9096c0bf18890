"""Query parameters, parsed strictly: every bad value is a 400 naming the parameter, never a store error.

Nothing a caller sends reaches a store as text: categories and fields come from whitelists, times
become datetimes, durations become timedeltas, and ``SeriesQuery`` validates the rest again.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from aiohttp import web

from access.api.problems import ApiProblem, bad_param
from pipeline.query import AGGS, QUERYABLE_FIELDS, valid_id
from seeds.vocabulary import STORED_CATEGORIES

FORMATS: Final = ("json", "csv", "arrow")
MAX_RANGE: Final = timedelta(days=400)
MAX_RAW_RANGE: Final = timedelta(days=2)  # raw points: one device at 1 s would be ~170k rows
MAX_WINDOWS: Final = 100_000  # (stop - start) / every
MIN_EVERY: Final = timedelta(seconds=1)
MAX_EVERY: Final = timedelta(days=31)
DEFAULT_LIMIT: Final = 5_000
MAX_LIMIT: Final = 50_000
DEFAULT_SPAN: Final = timedelta(hours=24)
MAX_PARAM_LEN: Final = 200
MAX_FIELDS: Final = 16
MAX_PURPOSES: Final = 5
JSON_CHARSETS: Final = ("utf-8", "utf8")

# What a chart of each category wants by default; callers may ask for any known field.
DEFAULT_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "electricity": ("power_w", "import_wh_total", "export_wh_total"),
    "pv": ("power_w", "energy_wh_total"),
    "battery": ("power_w", "soc_pct"),
    "water": ("volume_l_total",),
    "gas": ("volume_l_total",),
    "external_generation": ("power_w", "energy_wh_total"),
    "ev": ("power_w", "soc_pct"),
    "equipment": ("health", "health_since_s"),
}
_EVERY_RE: Final = re.compile(r"([1-9][0-9]{0,5})(s|m|h|d)")
UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The patterns are the OpenAPI document's too (``access.api.openapi``); fullmatch, since '$' also
# matches before a final newline.
PURPOSE_PATTERN: Final = r"[a-z0-9_]{1,40}\.[a-z0-9_]{1,60}"
LIMIT_PATTERN: Final = r"[0-9]{1,7}"
EPSILON_PATTERN: Final = r"[0-9]{1,3}(\.[0-9]{1,12})?"
_PURPOSE_RE: Final = re.compile(PURPOSE_PATTERN)
_LIMIT_RE: Final = re.compile(LIMIT_PATTERN)
_EPSILON_RE: Final = re.compile(EPSILON_PATTERN)


def _get(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if len(value) > MAX_PARAM_LEN:
        raise bad_param(name, f"{name} is longer than {MAX_PARAM_LEN} characters")
    return value


def household_id(value: str) -> str:
    if not valid_id(value):
        raise bad_param("household", "a household id is 1-64 letters, digits, '.', '_' or '-'")
    return value


def category(value: str) -> str:
    if value not in STORED_CATEGORIES:
        raise bad_param("category", f"unknown series category; use one of {', '.join(STORED_CATEGORIES)}")
    return value


def purpose(value: str | None) -> str:
    if not value:
        raise bad_param("purpose", "declare the purpose (query parameter 'purpose' or header X-Purpose)")
    if _PURPOSE_RE.fullmatch(value) is None:
        raise bad_param("purpose", "a purpose id looks like 'sps.pv_after_maintenance'")
    return value


def declared_purpose(query: Mapping[str, str], headers: Mapping[str, str]) -> str:
    """Every data request declares its purpose: the ``purpose`` parameter, else the ``X-Purpose`` header."""
    return purpose(query.get("purpose") or headers.get("X-Purpose"))


def declared_purposes(query: Mapping[str, str], headers: Mapping[str, str]) -> tuple[str, ...]:
    """``declared_purpose``, where a page may declare up to ``MAX_PURPOSES`` at once, comma-separated
    (each category then served under the first that allows it: ``access.api.reads``)."""
    given = query.get("purpose") or headers.get("X-Purpose")
    if given is not None and len(given) > MAX_PARAM_LEN:
        raise bad_param("purpose", f"purpose is longer than {MAX_PARAM_LEN} characters")
    parts = tuple(dict.fromkeys(p.strip() for p in (given or "").split(",")))
    if len(parts) > MAX_PURPOSES:
        raise bad_param("purpose", f"at most {MAX_PURPOSES} purposes, comma-separated")
    return tuple(purpose(p) for p in parts)


def instant(name: str, value: str) -> datetime:
    if len(value) > 40:
        raise bad_param(name, f"{name} is not an ISO 8601 instant")
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise bad_param(name, f"{name} is not an ISO 8601 instant (e.g. 2026-06-01T00:00:00Z)") from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise bad_param(name, f"{name} needs a time zone (Z or +09:00), or the instant is ambiguous")
    if not 2000 <= ts.year <= 2200:
        raise bad_param(name, f"{name} is outside the years 2000-2200")
    return ts.astimezone(UTC)


def every(value: str | None) -> timedelta | None:
    if value is None or value == "raw":
        return None
    m = _EVERY_RE.fullmatch(value)
    if m is None:
        raise bad_param("every", "resolution is a number and a unit s/m/h/d (e.g. 1m, 15m, 1h, 1d) or 'raw'")
    step = timedelta(seconds=int(m.group(1)) * UNITS[m.group(2)])
    if not MIN_EVERY <= step <= MAX_EVERY:
        raise bad_param("every", "resolution must be between 1s and 31d")
    return step


def agg(value: str | None) -> str:
    if value is None:
        return "mean"
    if value not in AGGS:
        raise bad_param("agg", f"unknown aggregation; use one of {', '.join(AGGS)}")
    return value


def fields(cat: str, value: str | None) -> tuple[str, ...]:
    """The fields asked, or the category's default ones."""
    return fields_asked(value) or DEFAULT_FIELDS[cat]


def fields_asked(value: str | None) -> tuple[str, ...] | None:
    """The fields named (a 400 for an unknown one), or None when none were."""
    if value is None or value == "":
        return None
    names = tuple(value.split(","))
    if len(names) > MAX_FIELDS:
        raise bad_param("fields", f"at most {MAX_FIELDS} fields")
    for n in names:
        if n not in QUERYABLE_FIELDS:
            raise bad_param("fields", "unknown field; see the OpenAPI document for the field vocabulary")
    if len(set(names)) != len(names):
        raise bad_param("fields", "a field is named twice")
    return names


def fmt(value: str | None, accept: str | None) -> str:
    if value is None:
        if accept and "text/csv" in accept:
            return "csv"
        if accept and "application/vnd.apache.arrow" in accept:
            return "arrow"
        return "json"
    if value not in FORMATS:
        raise bad_param("format", f"unknown format; use one of {', '.join(FORMATS)}")
    return value


@functools.lru_cache(maxsize=256)  # clients send a handful of distinct headers, each on every request
def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (RFC 9110 12.5.3): listed, or covered by ``*``, with
    a q-value above zero.  A malformed header only means no compression."""
    if not accept_encoding or len(accept_encoding) > 1000:
        return False
    ratings: dict[str, float] = {}
    for item in accept_encoding.lower().split(","):
        coding, _, rest = item.strip().partition(";")
        q = 1.0
        if rest:
            name, _, value = rest.strip().partition("=")
            if name.strip() != "q":
                continue
            try:
                q = float(value)
            except ValueError:
                continue
        ratings[coding.strip()] = q
    q_gzip = ratings.get("gzip", ratings.get("x-gzip", ratings.get("*", 0.0)))
    return q_gzip > 0


def epsilon(value: str | None, default: float) -> float:
    """A release's privacy cost: a plain decimal (its bounds are ``access.privacy``'s to check)."""
    if value is None:
        return default
    if _EPSILON_RE.fullmatch(value) is None:
        raise bad_param("epsilon", "epsilon is a decimal number such as 0.5")
    return float(value)


def limit(value: str | None) -> int:
    # ASCII digits only: str.isdigit() also accepts '²' and other digits int() refuses.
    if value is None:
        return DEFAULT_LIMIT
    if _LIMIT_RE.fullmatch(value) is None:
        raise bad_param("limit", f"limit is a whole number from 1 to {MAX_LIMIT}")
    n = int(value)
    if not 1 <= n <= MAX_LIMIT:
        raise bad_param("limit", f"limit is a whole number from 1 to {MAX_LIMIT}")
    return n


@dataclass(frozen=True)
class Window:
    start: datetime
    stop: datetime
    every: timedelta | None


RELATIVE_PATTERN: Final = r"-[1-9][0-9]{0,5}[smhd]"
_RELATIVE_RE: Final = re.compile(r"-([1-9][0-9]{0,5})(s|m|h|d)")
_EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)


def moment(name: str, value: str, now: datetime) -> datetime:
    """An ISO 8601 instant, or a time before now: ``-20m``, ``-2h``, ``-7d`` (not before 2000: a
    larger count would not even be a date)."""
    m = _RELATIVE_RE.fullmatch(value)
    if m is not None:
        back = timedelta(seconds=int(m.group(1)) * UNITS[m.group(2)])
        if back > now - _EARLIEST:
            raise bad_param(name, f"{name} reaches back before the year 2000")
        return now - back
    return instant(name, value)


def window(params: Mapping[str, str], now: datetime, default_every: timedelta | None) -> Window:
    raw_stop, raw_start = _get(params, "stop"), _get(params, "start")
    stop = moment("stop", raw_stop, now) if raw_stop is not None else now
    start = moment("start", raw_start, now) if raw_start is not None else stop - DEFAULT_SPAN
    step = every(_get(params, "every")) if "every" in params else default_every
    if not start < stop:
        raise bad_param("stop", "stop must be after start")
    span = stop - start
    if span > MAX_RANGE:
        raise bad_param("start", f"the range is longer than {MAX_RANGE.days} days")
    if step is None and span > MAX_RAW_RANGE:
        raise bad_param("every", f"raw points are served for ranges up to {MAX_RAW_RANGE}; give a resolution")
    if step is not None and span / step > MAX_WINDOWS:
        raise bad_param("every", f"the range holds more than {MAX_WINDOWS} windows at this resolution")
    return Window(start, stop, step)


class _NotStrictJson(ValueError):
    """JSON that parsers read differently: a key given twice (Python keeps the last, others the first),
    or NaN/Infinity, which RFC 8259 does not have."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _NotStrictJson("a key is given twice in one JSON object")
    return obj


def _no_constant(name: str) -> Any:
    raise _NotStrictJson(f"{name} is not a JSON value")


async def json_body(request: web.Request, model: type) -> dict[str, Any]:
    """The body as a JSON object with only the keys ``model`` (a TypedDict) names: a misspelt key is an
    error, not a default (``{"categoris": [...]}`` must not mean "erase everything"), and so is a key
    given twice (``{"categories": ["pv"], "categories": null}`` must not either)."""
    # JSON is UTF-8 (RFC 8259 8.1): a declared charset Python has no codec for (or a codec that is no
    # text encoding, such as rot13) would otherwise escape as a LookupError, a 500.
    if (request.charset or "utf-8").lower() not in JSON_CHARSETS:
        raise ApiProblem(415, "unsupported_media_type", "send JSON as UTF-8 ('application/json')")
    try:
        text = (await request.read()).decode("utf-8")
        body = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except _NotStrictJson as exc:
        raise bad_param("body", str(exc)) from None
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        raise bad_param("body", "the body is not JSON (or is nested too deeply)") from None
    if not isinstance(body, dict):
        raise bad_param("body", "the body is a JSON object")
    unknown = sorted(set(body) - set(model.__annotations__))
    if unknown:
        raise bad_param("body", f"unknown keys {', '.join(map(repr, unknown))[:200]}")
    return body
