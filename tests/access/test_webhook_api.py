"""The alert webhook through the API: an installer sets, reads and removes it; nobody else can."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from access.alerts import sign, verify
from access.api.maintenance import WEBHOOKS
from access.compiler import Policy
from access.db import AccessDb
from access.tokens import TokenStore
from tests.access.api_world import NOW, Env, api_policy, start_env, store_path

__all__ = ["api_policy", "store_path"]
URL = "/api/v1/alerts/webhook"


@pytest.fixture
async def env(
    tmp_path: Path, store_path: Path, api_policy: Policy, access_db: AccessDb
) -> AsyncIterator[Env]:
    """On a SQLite file and on PostgreSQL (``access_db``): the same answers from both."""
    async for e in start_env(tmp_path, store_path, api_policy, db=access_db):
        yield e


async def test_installer_sets_reads_and_removes_its_webhook(env: Env) -> None:
    r = await env.client.get(URL, headers=env.auth("inst1"))
    assert r.status == 200 and (await r.json())["url"] is None
    r = await env.client.put(URL, json={"url": "https://alerts.example/hook"}, headers=env.auth("inst1"))
    assert r.status == 200, await r.text()
    body = await r.json()
    secret = body["secret"]
    assert body["url"] == "https://alerts.example/hook" and len(secret) >= 24
    # The store the sender reads now holds it, with the secret the answer gave.
    hook = env.client.app[WEBHOOKS].get("inst1")  # type: ignore[index]
    assert hook is not None and hook.url == body["url"] and hook.secret == secret
    assert verify(secret, str(int(NOW)), b"{}", sign(secret, str(int(NOW)), b"{}"), max_age_s=1e12)
    # Reading it back never shows the secret again.
    r = await env.client.get(URL, headers=env.auth("inst1"))
    assert await r.json() == {"principal": "inst1", "url": "https://alerts.example/hook"}
    r = await env.client.delete(URL, headers=env.auth("inst1"))
    assert r.status == 204 and env.client.app[WEBHOOKS].get("inst1") is None  # type: ignore[index]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://alerts.example/hook", "plain http"),
        ("https://user:pw@alerts.example/", "user name"),
        ("ftp://alerts.example/", "https://"),
        (42, "url is"),
    ],
)
async def test_bad_addresses_are_refused_naming_the_field(env: Env, url: object, words: str) -> None:
    r = await env.client.put(URL, json={"url": url}, headers=env.auth("inst1"))
    body = await r.json()
    assert r.status == 400 and body["field"] == "url" and words in body["detail"]
    assert env.client.app[WEBHOOKS].get("inst1") is None  # type: ignore[index]


async def test_only_installers_with_the_maintenance_purpose(env: Env, tmp_path: Path) -> None:
    for who in ("alice", "sales1", "ana"):
        r = await env.client.put(URL, json={"url": "https://a.example/"}, headers=env.auth(who))
        assert r.status == 403 and (await r.json())["reason"] == "wrong_kind", who
        r = await env.client.get(URL, headers=env.auth(who))
        assert r.status == 403
    # An installer's token for another purpose may not set it either.
    tokens = TokenStore(env.db)
    _, other = tokens.create(
        "inst1", ["sps.service_provision"], env.state.relationships.principal("inst1").purposes, at=NOW - 60
    )
    tokens.close()
    r = await env.client.put(
        URL, json={"url": "https://a.example/"}, headers={"Authorization": f"Bearer {other}"}
    )
    assert r.status == 403 and (await r.json())["reason"] == "purpose_not_in_token"
    r = await env.client.put(URL, json={"url": "https://a.example/"})
    assert r.status == 401
    assert env.client.app[WEBHOOKS].get("inst1") is None  # type: ignore[index]


async def test_a_session_needs_its_csrf_token(env: Env) -> None:
    env.state.web.set_password("inst1", "correct horse battery")
    r = await env.client.post(
        "/login", data={"principal": "inst1", "password": "correct horse battery"}, allow_redirects=False
    )
    assert r.status == 303
    r = await env.client.put(URL, json={"url": "https://a.example/"})
    assert r.status == 403 and (await r.json())["code"] == "csrf_refused"
    page = await (await env.client.get("/installer")).text()
    csrf = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    r = await env.client.put(URL, json={"url": "https://a.example/"}, headers={"X-CSRF-Token": csrf})
    assert r.status == 200
