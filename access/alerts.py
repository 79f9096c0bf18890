"""Alert webhooks: an installer's address that is told when a problem of its homes opens or clears.

Each delivery is a JSON POST signed with the webhook's own secret (HMAC-SHA256 over
``<timestamp>.<body>``, header ``X-Hems-Signature: sha256=<hex>`` with ``X-Hems-Timestamp``), so the
receiver can check it came from us and is not a replay.  A delivery that fails is retried with
backoff; if every try fails, nothing is marked as told and the next round sends it again.  Sending a
problem is a provision of that home's data to the installer, so each delivery is recorded in the
ledger of every home it speaks of (``access.api.maintenance``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from access.db import AccessDb, open_db, write_transaction

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_webhooks (
    principal TEXT PRIMARY KEY, url TEXT NOT NULL, secret TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS alert_open (
    principal TEXT NOT NULL, key TEXT NOT NULL, opened_at REAL NOT NULL, PRIMARY KEY (principal, key));
"""
MAX_URL = 500


class WebhookError(ValueError):
    """A webhook address that cannot be used; the message says why."""


@dataclass(frozen=True)
class Webhook:
    principal: str
    url: str
    secret: str


def check_url(url: str) -> str:
    """https anywhere; plain http only to this machine (a local relay or a test receiver)."""
    if len(url) > MAX_URL:
        raise WebhookError(f"the address is longer than {MAX_URL} characters")
    # Control characters: urlsplit drops some (CR, LF, tab) silently, the store would keep them, and
    # PostgreSQL cannot hold a NUL at all.
    if any(ord(c) < 0x20 or ord(c) == 0x7F or c.isspace() for c in url):
        raise WebhookError("the address may not contain spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise WebhookError("the address is an https:// URL")
    if parts.username or parts.password:
        raise WebhookError("the address may not carry a user name or password")
    if parts.scheme == "http":
        host = parts.hostname
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise WebhookError("plain http is only allowed to this machine; use https")
    return url


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, max_age_s: float = 300.0) -> bool:
    """What a receiver does (kept here so the tests and the README's example agree)."""
    try:
        fresh = abs(time.time() - float(timestamp)) <= max_age_s
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookStore:
    def __init__(self, where: AccessDb) -> None:
        self._db = open_db(where, _SCHEMA, name="alerts", synchronous="NORMAL")

    def close(self) -> None:
        self._db.close()

    def sends(self) -> bool:
        """Whether this process sends the alerts: one of every replica on the access database does
        (``Db.leads``), so an installer is told once, and another takes over when it stops."""
        return self._db.leads("alert webhooks")

    def put(self, principal: str, url: str, at: float) -> Webhook:
        """Set (or replace) the principal's webhook; a new secret each time."""
        secret = secrets.token_urlsafe(24)
        with write_transaction(self._db):
            self._db.execute(
                "INSERT INTO alert_webhooks VALUES (?, ?, ?, ?) ON CONFLICT (principal) DO UPDATE SET "
                "url = excluded.url, secret = excluded.secret, created_at = excluded.created_at",
                (principal, check_url(url), secret, at),
            )
        return Webhook(principal, url, secret)

    def remove(self, principal: str) -> None:
        with write_transaction(self._db):
            self._db.execute("DELETE FROM alert_webhooks WHERE principal = ?", (principal,))
            self._db.execute("DELETE FROM alert_open WHERE principal = ?", (principal,))

    def get(self, principal: str) -> Webhook | None:
        row = self._db.execute(
            "SELECT principal, url, secret FROM alert_webhooks WHERE principal = ?", (principal,)
        ).fetchone()
        return None if row is None else Webhook(*row)

    def all(self) -> list[Webhook]:
        rows = self._db.execute("SELECT principal, url, secret FROM alert_webhooks ORDER BY principal")
        return [Webhook(*r) for r in rows]

    def told_open(self, principal: str) -> frozenset[str]:
        rows = self._db.execute("SELECT key FROM alert_open WHERE principal = ?", (principal,))
        return frozenset(r[0] for r in rows)

    def mark_told(self, principal: str, opened: list[str], cleared: list[str], at: float) -> None:
        with write_transaction(self._db):
            self._db.executemany(
                "INSERT INTO alert_open VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                [(principal, k, at) for k in opened],
            )
            self._db.executemany(
                "DELETE FROM alert_open WHERE principal = ? AND key = ?", [(principal, k) for k in cleared]
            )


def payload(principal: str, at: str, opened: list[dict[str, object]], cleared: list[str]) -> bytes:
    return json.dumps(
        {"principal": principal, "at": at, "opened": opened, "cleared": cleared},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
