"""Request bodies the attack run of issue 19 did not try: a charset Python has no codec for, JSON with a
key given twice or with NaN, and text PostgreSQL cannot store.  Each is a clear 4xx, never a 500, on a
real server and (where the database matters) on both access databases."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from access.compiler import Policy
from access.db import AccessDb
from tests.access.api_world import Env, api_policy, start_env, store_path

__all__ = ["api_policy", "store_path"]
PASSWORD = "correct horse battery"
JSON_ROUTES = (
    ("PUT", "/api/v1/households/h1/consent", "alice", b'{"suspended": true}'),
    ("POST", "/api/v1/households/h1/erasure", "alice", b'{"categories": ["pv"]}'),
    ("PUT", "/api/v1/alerts/webhook", "inst1", b'{"url": "https://hooks.example/x"}'),
)


@pytest.fixture
async def env(
    tmp_path: Path, store_path: Path, api_policy: Policy, access_db: AccessDb
) -> AsyncIterator[Env]:
    async for e in start_env(tmp_path, store_path, api_policy, db=access_db, rate_per_s=None):
        e.state.signin.tarpit_s = 0
        e.state.web.set_password("alice", PASSWORD)
        yield e


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


@pytest.mark.parametrize(("method", "path", "who", "body"), JSON_ROUTES)
@pytest.mark.parametrize("charset", ["bogus", "rot13", "utf-16"])
async def test_a_json_body_in_a_charset_other_than_utf8_is_a_4xx(
    env: Env, caplog: pytest.LogCaptureFixture, method: str, path: str, who: str, body: bytes, charset: str
) -> None:
    headers = {**env.auth(who), "Content-Type": f"application/json; charset={charset}"}
    r = await env.client.request(method, path, data=body, headers=headers)
    assert r.status == 415, await r.text()
    assert (await r.json())["code"] == "unsupported_media_type"
    _no_traceback(caplog)


async def test_a_form_in_an_unknown_charset_is_a_400(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    r = await env.client.post(
        "/login",
        data=b"principal=alice&password=x",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=bogus"},
        allow_redirects=False,
    )
    assert r.status == 400
    _no_traceback(caplog)


@pytest.mark.parametrize("path", ["/logout", "/household/h1/provision"])
async def test_a_signed_in_form_in_an_unknown_charset_is_a_400(
    env: Env, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    r = await env.client.post(
        "/login", data={"principal": "alice", "password": PASSWORD}, allow_redirects=False
    )
    assert r.status == 303
    r = await env.client.post(
        path,
        data=b"csrf=x",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=bogus"},
        allow_redirects=False,
    )
    assert r.status == 400, await r.text()
    _no_traceback(caplog)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        # Read last-key-wins, this asked to erase everything; a proxy or a log reading the first key
        # saw only "pv".
        ("/api/v1/households/h1/erasure", b'{"categories": ["pv"], "categories": null}'),
        ("/api/v1/households/h1/erasure", b'{"categories": ["pv", {"a": 1, "a": 2}]}'),
        ("/api/v1/households/h1/consent", b'{"suspended": false, "suspended": true}'),
        ("/api/v1/households/h1/consent", b'{"suspended": true, "category": NaN}'),
        ("/api/v1/households/h1/consent", b'{"suspended": true, "recipient": Infinity}'),
    ],
)
async def test_json_with_a_repeated_key_or_a_non_number_is_refused_whole(
    env: Env, path: str, body: bytes
) -> None:
    method = "POST" if path.endswith("erasure") else "PUT"
    headers = {**env.auth("alice"), "Content-Type": "application/json"}
    r = await env.client.request(method, path, data=body, headers=headers)
    assert r.status == 400, await r.text()
    assert (await r.json())["field"] == "body"
    r = await env.client.get(path, headers=env.auth("alice"))
    listed = await r.json()
    assert listed.get("requests", []) == [] and listed.get("suspensions", []) == []


@pytest.mark.parametrize("name", ["al\x00ice", "alice\x00", "\x00", "alice\n", "ａｌｉｃｅ"])
async def test_a_name_no_principal_can_have_is_a_wrong_pair(
    env: Env, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    """PostgreSQL cannot hold NUL in text: the name reached its query and failed there (a 500)."""
    r = await env.client.post("/login", data={"principal": name, "password": PASSWORD}, allow_redirects=False)
    assert r.status == 401
    _no_traceback(caplog)


@pytest.mark.parametrize(
    "url", ["https://hooks.example/a\x00b", "https://hooks.example/a\rb", "https://hooks.example/\x7f"]
)
async def test_a_webhook_address_with_control_characters_is_a_400(
    env: Env, caplog: pytest.LogCaptureFixture, url: str
) -> None:
    r = await env.client.put("/api/v1/alerts/webhook", json={"url": url}, headers=env.auth("inst1"))
    assert r.status == 400, await r.text()
    assert (await r.json())["field"] == "url"
    _no_traceback(caplog)


async def test_the_openapi_document_names_the_415_of_every_json_body(env: Env) -> None:
    doc = await (await env.client.get("/api/v1/openapi.json")).json()
    for method, path, _who, _body in JSON_ROUTES:
        responses = doc["paths"][path.replace("h1", "{household}")][method.lower()]["responses"]
        assert "415" in responses, (method, path)


@pytest.mark.parametrize(
    ("method", "path", "who", "ctype"),
    [
        ("PUT", "/api/v1/households/h1/consent", "alice", "application/json"),
        ("POST", "/api/v1/households/h1/erasure", "alice", "application/json"),
        ("PUT", "/api/v1/alerts/webhook", "inst1", "application/json"),
        ("POST", "/login", None, "application/x-www-form-urlencoded"),
    ],
)
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_not_in_its_content_encoding_is_a_400_without_a_traceback(
    env: Env,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    who: str | None,
    ctype: str,
    encoding: str,
) -> None:
    """aiohttp unzips any request body that names an encoding; one that is not what it claims broke the
    read with a RequestPayloadError: a 500 and two tracebacks (ours, then aiohttp's draining the rest)."""
    headers = {"Content-Type": ctype, "Content-Encoding": encoding, **(env.auth(who) if who else {})}
    r = await env.client.request(
        method, path, data=b"this is not " + encoding.encode(), headers=headers, allow_redirects=False
    )
    assert r.status == 400, await r.text()
    await r.read()
    _no_traceback(caplog)
