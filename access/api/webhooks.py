"""``/api/v1/alerts/webhook``: an installer sets, reads or removes its alert webhook through the API,
as the maintenance page lets it do in a browser (both go through ``access.alerts.WebhookStore``).

Deliveries tell of the installer's homes for after-sales maintenance, so only an installer may set
one, and a token must carry that purpose.  The signing secret is shown once, in the answer to the PUT
that made it; reading the webhook later shows its address only.
"""

from __future__ import annotations

from aiohttp import web

from access.alerts import WebhookError
from access.api import models, params
from access.api.maintenance import MAINTENANCE_PURPOSE, WEBHOOKS
from access.api.problems import ApiProblem, bad_param
from access.api.render import json_response
from access.api.service import check_token_purpose
from access.api.state import AppState, caller_of
from access.auth import Caller


def _installer(request: web.Request) -> tuple[AppState, Caller]:
    state, caller = caller_of(request)
    if caller.kind != "installer":
        state.metrics.refusals["wrong_kind"] += 1
        raise ApiProblem(403, "refused", "alert webhooks are for installers", reason="wrong_kind")
    check_token_purpose(caller, MAINTENANCE_PURPOSE)
    return state, caller


async def webhook_get(request: web.Request) -> web.Response:
    _state, caller = _installer(request)
    hook = request.app[WEBHOOKS].get(caller.principal)
    body: models.Webhook = {"principal": caller.principal, "url": None if hook is None else hook.url}
    return json_response(body)


async def webhook_put(request: web.Request) -> web.Response:
    state, caller = _installer(request)
    body = await params.json_body(request, models.WebhookAsk)
    url = body.get("url")
    if not isinstance(url, str):
        raise bad_param("url", "url is the https:// address to send alerts to")
    try:
        hook = request.app[WEBHOOKS].put(caller.principal, url.strip(), at=state.clock())
    except WebhookError as exc:
        raise bad_param("url", str(exc)) from None
    answer: models.WebhookSet = {
        "principal": caller.principal,
        "url": hook.url,
        "secret": hook.secret,
        "signature": "X-Hems-Signature: sha256=HMAC(secret, X-Hems-Timestamp + '.' + body)",
    }
    return json_response(answer)


async def webhook_delete(request: web.Request) -> web.Response:
    _state, caller = _installer(request)
    request.app[WEBHOOKS].remove(caller.principal)
    return web.Response(status=204)
