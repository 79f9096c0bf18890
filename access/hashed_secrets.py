"""Credentials shown once as ``<prefix><id>_<secret>`` and kept only as ``sha256(secret)``: API tokens
and gateway credentials.

The id finds the row without scanning; the secret's hash is compared in constant time, and an
unknown id or a malformed text costs the same work as a wrong secret, so neither the answer nor its
timing tells a caller how close a guess was or which ids exist.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Final

from access.db import Db

ID_AND_SECRET: Final = r"([0-9a-f]{16})_([A-Za-z0-9_\-]{43})"  # what follows a credential's prefix


class CredentialError(ValueError):
    """A credential that cannot be issued, or does not authenticate; ``reason`` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def new_id_and_secret() -> tuple[str, str]:
    """A fresh id (16 hex digits) and secret (43 URL-safe characters), as ``ID_AND_SECRET`` reads them."""
    return secrets.token_hex(8), secrets.token_urlsafe(32)


def verified_id(db: Db, pattern: re.Pattern[str], text: str, select_hash: str) -> str | None:
    """The id in ``text`` when its secret matches the hash ``select_hash`` (one parameter: the id)
    returns, else None."""
    m = pattern.match(text)
    row = db.execute(select_hash, (m.group(1),)).fetchone() if m is not None else None
    # Compare even when the row is missing, so every path does the same work.
    stored = row[0] if row is not None else "0" * 64
    given = secret_hash(m.group(2)) if m is not None else "1" * 64
    if not hmac.compare_digest(stored, given) or row is None or m is None:
        return None
    return m.group(1)
