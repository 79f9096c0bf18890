"""Web sign-in, sessions and CSRF over real HTTP; the OpenAPI document against the router; the CLI."""

from __future__ import annotations

import contextlib
import io
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from access.api.routes import ROUTES
from access.cli import main as cli_main
from access.clock import to_epoch
from access.compiler import Policy
from tests.access.api_world import NOW, PV, RANGE, SERIES, Env, api_policy, start_env, store_path

__all__ = ["api_policy", "store_path"]
PASSWORD = "correct horse battery"


@pytest.fixture
async def env(tmp_path: Path, store_path: Path, api_policy: Policy) -> AsyncIterator[Env]:
    async for e in start_env(tmp_path, store_path, api_policy):
        e.state.web.set_password("alice", PASSWORD)
        e.state.web.set_password("inst1", PASSWORD)
        yield e


async def _sign_in(env: Env, who: str) -> str:
    r = await env.client.post("/login", data={"principal": who, "password": PASSWORD}, allow_redirects=False)
    assert r.status == 303, await r.text()
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    page = await (await env.client.get(r.headers["Location"])).text()
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m is not None
    return m.group(1)


async def test_wrong_password_and_non_web_principals_refused(env: Env) -> None:
    r = await env.client.post("/login", data={"principal": "alice", "password": "wrong password!"})
    assert r.status == 401 and "wrong password" in await r.text()
    env.state.web.set_password("sales1", PASSWORD)
    r = await env.client.post("/login", data={"principal": "sales1", "password": PASSWORD})
    assert r.status == 401
    r = await env.client.get("/", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/login"


async def test_secure_cookie_flag_is_configurable(
    tmp_path: Path, store_path: Path, api_policy: Policy
) -> None:
    async for env in start_env(tmp_path, store_path, api_policy, secure_cookies=True):
        env.state.web.set_password("alice", PASSWORD)
        r = await env.client.post(
            "/login", data={"principal": "alice", "password": PASSWORD}, allow_redirects=False
        )
        assert "Secure" in r.headers["Set-Cookie"]


async def test_dashboard_shows_ledger_and_session_reads_api(env: Env) -> None:
    await env.client.get(
        SERIES.format(hh="h1", cat="pv"), params={**RANGE, "purpose": PV}, headers=env.auth("inst1")
    )
    await _sign_in(env, "alice")
    page = await (await env.client.get("/ledger")).text()
    assert "Roof Installers" in page and "JST" in page and 'id="provision-toggle"' in page
    r = await env.client.get(
        SERIES.format(hh="h1", cat="pv"), params={**RANGE, "purpose": "sps.disclosure_to_person"}
    )
    assert r.status == 200
    # A session may not declare a purpose its principal is not registered for.
    r = await env.client.get(SERIES.format(hh="h1", cat="pv"), params={**RANGE, "purpose": "enex.billing"})
    assert r.status == 403 and (await r.json())["reason"] == "purpose_not_registered"


async def test_cross_site_posts_are_refused(env: Env) -> None:
    csrf = await _sign_in(env, "alice")
    consent = env.state.authz.consent
    # The provision form without the token (what a cross-site form can send).
    r = await env.client.post(
        "/household/h1/provision", data={"suspended": "true"}, headers={"Origin": "http://evil.example"}
    )
    # A page's refusal is a page (HTML, in words), not problem+json.
    assert r.status == 403 and r.content_type == "text/html"
    assert 'data-code="csrf_refused"' in await r.text()
    r = await env.client.post("/household/h1/provision", data={"suspended": "true", "csrf": "guess"})
    assert r.status == 403
    # Right token but a foreign Origin.
    r = await env.client.post(
        "/household/h1/provision",
        data={"suspended": "true", "csrf": csrf},
        headers={"Origin": "http://evil.example"},
    )
    assert r.status == 403
    # The JSON API with the cookie: PUT without the header, then with it.
    r = await env.client.put("/api/v1/households/h1/consent", json={"suspended": True})
    assert r.status == 403 and (await r.json())["code"] == "csrf_refused"
    assert consent.suspensions("h1") == []
    r = await env.client.put(
        "/api/v1/households/h1/consent", json={"suspended": True}, headers={"X-CSRF-Token": csrf}
    )
    assert r.status == 200 and (await r.json())["provision_suspended"] is True
    # And the real form, same origin, with the token: resumes provision.
    r = await env.client.post(
        "/household/h1/provision", data={"suspended": "false", "csrf": csrf}, allow_redirects=False
    )
    assert r.status == 303
    assert all(not s.active(NOW) for s in consent.suspensions("h1"))


async def test_installer_view_shows_refusal_after_suspension(env: Env) -> None:
    await _sign_in(env, "inst1")
    before = env.ledger_rows()
    page = await (await env.client.get("/installer")).text()
    assert "h1" in page and "Not visible now" not in page
    # One record for the home, listing every category the view read (it read them all).
    assert env.ledger_rows() == before + 1
    record = env.state.ledger.all()[-1]
    assert record.recipient == "inst1" and {"pv", "battery", "equipment"} <= set(record.categories)
    env.state.authz.consent.suspend("h1", "provision", at=NOW - 1)
    page = await (await env.client.get("/installer")).text()
    assert "Not visible now (suspended)" in page
    assert env.ledger_rows() == before + 1
    r = await env.client.get("/installer/h2", headers={"Accept-Language": "ja,en;q=0.5"})
    assert r.status == 403 and r.content_type == "text/html"
    page = await r.text()
    assert '<html lang="ja">' in page and "エラー 403" in page
    r = await env.client.get("/no-such-page")
    assert r.status == 404 and r.content_type == "text/html"
    r = await env.client.get("/api/v1/no-such-thing")
    assert r.status == 404 and r.content_type == "application/problem+json"


async def test_sign_out_ends_the_session(env: Env) -> None:
    csrf = await _sign_in(env, "alice")
    r = await env.client.post("/logout", data={"csrf": csrf}, allow_redirects=False)
    assert r.status == 303
    r = await env.client.get("/api/v1/me")
    assert r.status == 401


async def test_static_assets_and_security_headers(env: Env) -> None:
    js = await env.client.get("/static/chart.umd.min.js")
    assert js.status == 200 and "MIT License" in (await js.text())[:2000]
    r = await env.client.get("/login")
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert (await env.client.get("/static/../access.sqlite")).status in (403, 404)


async def test_openapi_documents_exactly_the_routes(env: Env) -> None:
    doc = await (await env.client.get("/api/v1/openapi.json")).json()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    app = env.client.app
    assert app is not None
    served = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD" or not (
            path.startswith("/api/") or path in ("/healthz", "/readyz", "/metrics")
        ):
            continue
        served.add((route.method, path))
    assert served == documented
    assert {(m, p) for m, p, _h, _n in ROUTES} == documented
    # Every documented path parameter is a placeholder of the path, and vice versa.
    for path, ops in doc["paths"].items():
        for op in ops.values():
            names = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert names == set(re.findall(r"{(\w+)}", path)), path
            assert {"200", "202", "204"} & set(op["responses"]), path


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def _hems(db: Path, *args: str, stdin: str | None = None) -> Ran:
    """``hems principals ...`` in-process (the same ``main`` the entry point calls), output captured."""
    out, err = io.StringIO(), io.StringIO()
    old_in = sys.stdin
    sys.stdin = io.StringIO(stdin or "")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(["principals", "--db", str(db), *args])
    finally:
        sys.stdin = old_in
    return Ran(code, out.getvalue(), err.getvalue())


def test_principals_cli_issues_and_revokes_tokens(tmp_path: Path) -> None:
    from access.tokens import TokenError, TokenStore

    db = tmp_path / "a.sqlite"
    assert (
        _hems(db, "add", "inst9", "--kind", "installer", "--name", "Inst 9", "--purpose", PV).returncode == 0
    )
    out = _hems(db, "token", "create", "inst9", "--purpose", PV)
    assert out.returncode == 0, out.stderr
    text = out.stdout.strip().splitlines()[-1]
    tokens = TokenStore(db, poll_seconds=0)  # notice the CLI's revocation at once (default: within 1 s)
    info = tokens.authenticate(text)
    assert info.principal == "inst9" and info.purposes == {PV}
    assert text not in _hems(db, "token", "list").stdout
    assert _hems(db, "token", "create", "inst9", "--purpose", "enex.billing").returncode == 1
    # Every token expires: a lifetime that is not a positive finite number is refused, and nothing is stored.
    for ttl in ("inf", "nan", "0"):
        refused = _hems(db, "token", "create", "inst9", "--purpose", PV, "--ttl-days", ttl)
        assert refused.returncode == 1 and "lifetime" in refused.stderr, (ttl, refused)
    assert len(_hems(db, "token", "list").stdout.strip().splitlines()) == 1
    assert _hems(db, "token", "revoke", info.id).returncode == 0
    with pytest.raises(TokenError):
        tokens.authenticate(text)
    tokens.close()
    assert _hems(db, "password", "inst9", "--stdin", stdin="short\n").returncode == 1
    assert _hems(db, "password", "inst9", "--stdin", stdin=PASSWORD + "\n").returncode == 0
    assert "inst9\tinstaller" in _hems(db, "list").stdout


def _pv_today(page: str) -> float:
    """The kWh the installer's home card says the PV made today."""
    m = re.search(r"PV today ([0-9.]+) kWh", page)
    assert m is not None, page
    return float(m.group(1))


async def test_installer_view_takes_no_yield_across_a_suspended_stretch(env: Env) -> None:
    """SPS 2(6): provision to the installer was suspended 03:00-05:00 today (Tokyo) and resumed; the
    yield the home card shows is the meter's rise within the periods served, not across the gap (which
    would be the suspended hours' output)."""
    await _sign_in(env, "inst1")
    # Today in Tokyo began at 15:00 UTC; h1's PV total rises 10 Wh every 5 minutes until 23:55 UTC.
    assert _pv_today(await (await env.client.get("/installer")).text()) == 1.1  # 15:00 to 23:55: 1,080 Wh
    consent = env.state.authz.consent
    s = consent.suspend("h1", "provision", recipient="inst1", at=to_epoch("2026-06-01T18:00:00Z"))
    consent.lift(s.id, at=to_epoch("2026-06-01T20:00:00Z"))
    # 14:55 to 17:55 (360 Wh), then from 20:55 (the first served hour's last total) to 23:55 (360 Wh).
    assert _pv_today(await (await env.client.get("/installer")).text()) == 0.7


async def test_installer_view_yield_is_whole_under_another_recipients_suspension(env: Env) -> None:
    """The allow side: a suspension of provision to another company leaves the installer's yield whole."""
    await _sign_in(env, "inst1")
    consent = env.state.authz.consent
    s = consent.suspend("h1", "provision", recipient="sales1", at=to_epoch("2026-06-01T18:00:00Z"))
    consent.lift(s.id, at=to_epoch("2026-06-01T20:00:00Z"))
    assert _pv_today(await (await env.client.get("/installer")).text()) == 1.1
