"""The API page for people: Swagger UI, vendored and served by us, renders the OpenAPI document in a
real browser (Debian's chromium) without fetching anything from elsewhere and within the pages' CSP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from access.api.openapi import document
from access.compiler import Policy
from tests.access.api_world import Env, api_policy, start_env, store_path
from tests.access.test_browser import ARGS, CHROMIUM, SHOTS, async_playwright, skip_reason

__all__ = ["api_policy", "store_path"]


@pytest.fixture
async def env(tmp_path: Path, store_path: Path, api_policy: Policy) -> AsyncIterator[Env]:
    async for e in start_env(tmp_path, store_path, api_policy):
        yield e


async def test_the_docs_page_and_its_assets_are_served_here(env: Env) -> None:
    r = await env.client.get("/api/v1/docs")
    page = await r.text()
    assert r.status == 200 and r.content_type == "text/html"
    assert 'src="/static/swagger-ui/swagger-ui-bundle.js"' in page and "//" not in page  # all from here
    assert "script-src 'self';" in r.headers["Content-Security-Policy"]
    init = await (await env.client.get("/static/swagger-ui/init.js")).text()
    assert 'url: "/api/v1/openapi.json"' in init and "validatorUrl: null" in init
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"):
        assert (await env.client.get(f"/static/swagger-ui/{asset}")).status == 200, asset


@pytest.mark.browser
async def test_swagger_ui_renders_the_document_offline(env: Env) -> None:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    assert async_playwright is not None
    SHOTS.mkdir(parents=True, exist_ok=True)
    base = str(env.client.make_url("")).rstrip("/")
    requested: list[str] = []
    problems: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
            page.on("request", lambda req: requested.append(req.url))
            page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
            await page.goto(f"{base}/api/v1/docs")
            await page.wait_for_selector("text=HEMS telemetry access API", timeout=30_000)
            await page.wait_for_selector(".opblock-summary", timeout=30_000)
            body = await page.locator("body").inner_text()
            for op in document()["paths"]["/api/v1/households/{household}/series/{category}"].values():
                assert op["summary"] in body
            await page.screenshot(path=str(SHOTS / "api_docs.png"), full_page=False)
        finally:
            await browser.close()
    foreign = [u for u in requested if not u.startswith((base, "data:", "blob:"))]
    assert foreign == []
    assert problems == [], requested  # no CSP refusal, no script error
