"""Headers on every response, whatever made it (a handler, a redirect, aiohttp's own error pages);
no HTTP caching of personal data; HSTS only over TLS; invalid tokens limited per client address."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict

from access.auth import INVALID_TOKEN_BURST
from access.compiler import Policy
from tests.access.api_world import OWN, RANGE, SERIES, Env, api_policy, start_env, store_path

__all__ = ["api_policy", "store_path"]
SECURITY = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin"}


@pytest.fixture
async def env(tmp_path: Path, store_path: Path, api_policy: Policy) -> AsyncIterator[Env]:
    async for e in start_env(tmp_path, store_path, api_policy):
        yield e


def _has_security_headers(headers: Mapping[str, str], case: str) -> None:
    for name, value in SECURITY.items():
        assert headers.get(name) == value, (case, name, dict(headers))


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 303),  # the redirect to /login
        ("GET", "/installer", 303),
        ("POST", "/logout", 303),
        ("GET", "/no-such-page", 404),  # aiohttp's own 404 page
        ("DELETE", "/login", 405),  # and its 405 page
        ("GET", "/static/no-such-file.js", 404),
        ("GET", "/api/v1/no-such-endpoint", 404),
        ("DELETE", "/api/v1/me", 405),
        ("GET", "/login", 200),
    ],
)
async def test_every_response_carries_the_security_headers(
    env: Env, method: str, path: str, status: int
) -> None:
    r = await env.client.request(method, path, allow_redirects=False)
    assert r.status == status
    _has_security_headers(r.headers, f"{method} {path}")
    if not path.startswith("/static/"):
        assert r.headers["Cache-Control"] == "no-store", path


@pytest.mark.parametrize("fmt", ["json", "csv", "arrow"])
async def test_personal_data_is_not_stored_by_http_caches(env: Env, fmt: str) -> None:
    params = {**RANGE, "every": "1h", "purpose": OWN, "format": fmt}
    r = await env.client.get(SERIES.format(hh="h1", cat="pv"), params=params, headers=env.auth("alice"))
    assert r.status == 200
    assert r.headers["Cache-Control"] == "no-store"
    for path in ("/api/v1/me", "/api/v1/households/h1/ledger", "/api/v1/households/h1/consent"):
        r = await env.client.get(path, headers=env.auth("alice"))
        assert r.status == 200 and r.headers["Cache-Control"] == "no-store", path


async def test_public_documents_may_be_cached(env: Env) -> None:
    for path in ("/static/app.js", "/api/v1/openapi.json"):
        r = await env.client.get(path)
        assert r.status == 200 and "Cache-Control" not in r.headers, path


async def test_no_hsts_over_plain_http_even_when_a_client_claims_https(env: Env) -> None:
    r = await env.client.get("/healthz", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in r.headers


async def test_hsts_behind_a_trusted_proxy_that_says_https(
    tmp_path: Path, store_path: Path, api_policy: Policy
) -> None:
    async for env in start_env(tmp_path, store_path, api_policy, trust_forwarded=True):
        r = await env.client.get("/", headers={"X-Forwarded-Proto": "https"}, allow_redirects=False)
        assert r.headers["Strict-Transport-Security"] == "max-age=31536000"
        r = await env.client.get("/healthz", headers={"X-Forwarded-Proto": "http"})
        assert "Strict-Transport-Security" not in r.headers


# -- invalid tokens -------------------------------------------------------------------------------------
async def test_invalid_tokens_are_limited_per_address(env: Env) -> None:
    """Ten tries with tokens that do not authenticate, then 429; a token this server already verified
    still works from that address, and another address still gets its tries."""
    base = str(env.client.make_url("/api/v1/me"))
    forged = {"Authorization": "Bearer hems_0123456789abcdef_" + "A" * 43}
    assert (await env.client.get("/api/v1/me", headers=env.auth("inst1"))).status == 200  # verified once
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.9.1", 0))) as a:
        statuses = []
        for _ in range(int(INVALID_TOKEN_BURST) + 2):
            async with a.get(base, headers=forged) as r:
                statuses.append(r.status)
                retry = r.headers.get("Retry-After")
        assert statuses == [401] * int(INVALID_TOKEN_BURST) + [429, 429] and retry == "5"
        async with a.get(base, headers=env.auth("inst1")) as r:
            assert r.status == 200  # verified before: no new check is needed
        async with a.get(base, headers=env.auth("sales1")) as r:
            assert r.status == 429  # not verified yet: not checked from a throttled address
        async with a.get(base, headers={"Authorization": "Basic eDp5"}) as r:
            assert r.status == 429
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.9.2", 0))) as b:
        async with b.get(base, headers=forged) as r:
            assert r.status == 401
        async with b.get(base, headers=env.auth("sales1")) as r:
            assert r.status == 200


@pytest.mark.parametrize(
    "forwarded",
    [
        {"X-Forwarded-For": "203.0.113.9"},
        {"Forwarded": "for=203.0.113.9;proto=https"},
        {"X-Real-IP": "203.0.113.9"},
    ],
)
@pytest.mark.parametrize("trust_forwarded", [False, True])
async def test_metrics_are_not_open_to_clients_of_a_proxy_on_this_machine(
    tmp_path: Path, store_path: Path, api_policy: Policy, forwarded: dict[str, str], trust_forwarded: bool
) -> None:
    """A TLS proxy on the same host (deploy/README.md) makes every client's peer address loopback:
    a request it forwarded is not from this machine, whatever the flag says."""
    async for env in start_env(tmp_path, store_path, api_policy, trust_forwarded=trust_forwarded):
        assert (await env.client.get("/metrics")).status == 200  # the scraper on this machine
        r = await env.client.get("/metrics", headers=forwarded)
        assert r.status == 401
        r = await env.client.get("/metrics", headers={**forwarded, **env.auth("alice")})
        assert r.status == 403


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/api/v1/me", {"GET"}),
        ("DELETE", "/api/v1/households/h1/consent", {"GET", "PUT"}),
        ("PATCH", "/api/v1/alerts/webhook", {"GET", "PUT", "DELETE"}),
        ("DELETE", "/login", {"GET", "HEAD", "POST"}),
        ("TRACE", "/", {"GET", "HEAD"}),
    ],
)
async def test_a_405_names_the_methods_allowed(env: Env, method: str, path: str, allowed: set[str]) -> None:
    """RFC 9110 15.5.6: a 405 carries ``Allow`` (schemathesis' unsupported-method check asks for it); the
    problem+json and HTML error pages made from aiohttp's 405 lost it."""
    r = await env.client.request(method, path, headers=env.auth("alice"), allow_redirects=False)
    assert r.status == 405
    assert set(r.headers.get("Allow", "").split(",")) == allowed, dict(r.headers)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",  # a huge header
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # a huge request line
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
        b"0\r\n\r\n",
    ],
)
async def test_malformed_http_is_a_400_logged_in_one_line_without_a_traceback(
    env: Env, caplog: pytest.LogCaptureFixture, raw: bytes
) -> None:
    """aiohttp refuses these before any handler and logged each with the parser's traceback at ERROR:
    anyone could fill the log with tracebacks that look like server faults."""
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection("127.0.0.1", env.client.port)
    try:
        writer.write(raw)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 10)
    finally:
        writer.close()
    assert answer.split(b" ", 2)[1] == b"400", answer[:100]
    server = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert server and all(r.exc_info is None and r.levelno <= logging.INFO for r in server), [
        (r.levelname, r.getMessage()) for r in server
    ]
    assert "malformed HTTP request from 127.0.0.1" in server[-1].getMessage()


async def test_behind_a_proxy_the_last_proto_line_is_the_proxys(
    tmp_path: Path, store_path: Path, api_policy: Policy
) -> None:
    """A proxy that adds its own ``X-Forwarded-Proto`` line after a client's: the proxy's says http."""
    async for env in start_env(tmp_path, store_path, api_policy, trust_forwarded=True):
        lines = CIMultiDict([("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "http")])
        r = await env.client.get("/healthz", headers=lines)
        assert "Strict-Transport-Security" not in r.headers
        lines = CIMultiDict([("X-Forwarded-Proto", "http"), ("X-Forwarded-Proto", "https")])
        r = await env.client.get("/healthz", headers=lines)
        assert r.headers["Strict-Transport-Security"] == "max-age=31536000"
