"""API tokens for partners and scripts: shown once, stored as a hash, bound to a principal and purposes.

A token is ``hems_<id>_<secret>``.  Only ``sha256(secret)`` is kept, so a copy of the access database
does not hand out working credentials; the id part lets us find the row without scanning, and the
secret is compared in constant time so response timing says nothing about how close a guess was.
A token can only ever narrow its principal: the purposes it carries must be ones the principal is
registered for, and the policy still decides every request.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from access.clock import now
from access.db import AccessDb, ChangeWatch, open_db
from access.hashed_secrets import ID_AND_SECRET, CredentialError, new_id_and_secret, secret_hash, verified_id

PREFIX = "hems_"
DEFAULT_TTL_S = 90 * 86400.0
_MAX_VERIFIED = 10_000  # remembered tokens; only verified ones, so a flood of bad guesses adds nothing
_TOKEN_RE = re.compile(rf"^{PREFIX}{ID_AND_SECRET}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT PRIMARY KEY, principal TEXT NOT NULL, purposes TEXT NOT NULL, secret_sha256 TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL, expires_at REAL NOT NULL, revoked_at REAL);
CREATE INDEX IF NOT EXISTS api_tokens_by_principal ON api_tokens(principal);
"""
# Added in schema 2 (older databases get the column when opened): when and how the person's identity was
# checked before the token was issued to them.
_IDENTITY_COLUMNS = {"identity_verified_at": "REAL", "identity_method": "TEXT NOT NULL DEFAULT ''"}


class TokenError(CredentialError):
    """A token that cannot be issued, or does not authenticate; ``reason`` is a stable code."""


@dataclass(frozen=True)
class TokenInfo:
    id: str
    principal: str
    purposes: frozenset[str]
    label: str
    created_at: float
    expires_at: float
    revoked_at: float | None
    identity_verified_at: float | None = None  # the person's identity was checked then, before issue


class TokenStore:
    def __init__(self, where: AccessDb, poll_seconds: float = 1.0) -> None:
        self.where = where
        self._db = open_db(where, _SCHEMA, name="tokens", counters={"tokens": ("api_tokens",)})
        self._db.add_columns("api_tokens", _IDENTITY_COLUMNS)
        self.poll_seconds = poll_seconds
        self._verified: dict[str, TokenInfo] = {}  # full token text -> its record, once verified
        self._changes = ChangeWatch(self.data_version, pushed=self._db.changes_pushed)

    def close(self) -> None:
        self._db.close()

    def create(
        self,
        principal: str,
        purposes: frozenset[str] | set[str] | tuple[str, ...] | list[str],
        registered: frozenset[str],
        ttl_s: float = DEFAULT_TTL_S,
        label: str = "",
        at: float | None = None,
        identity_verified_at: float | None = None,
        identity_method: str = "",
    ) -> tuple[TokenInfo, str]:
        """Return the token's record and its full text; the text is never retrievable again.

        ``identity_verified_at``: the person was verified (``identity_method``: documents, a call-back)
        just before the token was issued to them; such a token may exercise the person's rights for a
        while after that (``access.api.state.identity_verified``)."""
        wanted = frozenset(purposes)
        if not wanted:
            raise TokenError("no_purpose", "a token must name at least one purpose")
        extra = sorted(wanted - registered)
        if extra:
            raise TokenError(
                "purpose_not_registered", f"{principal} is not registered for {', '.join(extra)}"
            )
        if not (ttl_s > 0 and math.isfinite(ttl_s)):
            raise TokenError("bad_ttl", "a token's lifetime must be a positive, finite time")
        if identity_verified_at is not None and not identity_method:
            raise TokenError("no_identity_method", "say how the person's identity was checked")
        t = now() if at is None else at
        tid, secret = new_id_and_secret()
        self._db.execute(
            "INSERT INTO api_tokens (id, principal, purposes, secret_sha256, label, created_at, expires_at, "
            "identity_verified_at, identity_method) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                tid,
                principal,
                json.dumps(sorted(wanted)),
                secret_hash(secret),
                label,
                t,
                t + ttl_s,
                identity_verified_at,
                identity_method,
            ),
        )
        return self.get(tid), f"{PREFIX}{tid}_{secret}"

    def get(self, tid: str) -> TokenInfo:
        row = self._db.execute(
            "SELECT id, principal, purposes, label, created_at, expires_at, revoked_at, identity_verified_at "
            "FROM api_tokens WHERE id = ?",
            (tid,),
        ).fetchone()
        if row is None:
            raise TokenError("unknown_token", f"no token {tid}")
        return TokenInfo(
            row[0], row[1], frozenset(json.loads(row[2])), row[3], row[4], row[5], row[6], row[7]
        )

    def list(self, principal: str | None = None) -> list[TokenInfo]:
        sql = "SELECT id FROM api_tokens"
        args: tuple[str, ...] = ()
        if principal is not None:
            sql += " WHERE principal = ?"
            args = (principal,)
        return [self.get(r[0]) for r in self._db.execute(sql + " ORDER BY created_at, id", args)]

    def revoke(self, tid: str, at: float | None = None) -> None:
        cur = self._db.execute(
            "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (now() if at is None else at, tid),
        )
        self._verified.clear()
        if cur.rowcount == 0:
            raise TokenError("unknown_token", f"no active token {tid}")

    def authenticate(self, text: str, at: float | None = None) -> TokenInfo:
        """The token's record if ``text`` is a live token; else ``TokenError`` with a stable reason.

        Malformed, unknown and wrong-secret tokens share one reason (``invalid_token``) so a caller
        cannot probe which token ids exist.  Tokens that verified are remembered (``_verified``) so
        a busy API does not query and hash on every request; see ``_forget_if_changed`` for how a
        revocation still takes effect."""
        self._forget_if_changed()
        info = self._verified.get(text)
        if info is None:
            info = self._verify(text)
            if len(self._verified) >= _MAX_VERIFIED:
                self._verified.clear()
            self._verified[text] = info
        t = now() if at is None else at
        if info.revoked_at is not None and info.revoked_at <= t:
            raise TokenError("token_revoked", "the token was revoked")
        if t >= info.expires_at:
            raise TokenError("token_expired", "the token has expired")
        return info

    def remembers(self, text: str) -> bool:
        """Whether ``text`` verified before in this process (it may have expired or been revoked since:
        ``authenticate`` still decides)."""
        return text in self._verified

    def data_version(self) -> int:
        """Changes when any connection (another process too) changes the tokens (``Db.change_version``)."""
        return self._db.change_version("tokens")

    def _forget_if_changed(self) -> None:
        """A revocation made through this object clears the memory at once (``revoke``); one made by
        another process (``hems principals token revoke`` while ``hems serve`` runs) is noticed through
        the tokens' change counter, polled at most every ``poll_seconds`` (on PostgreSQL, where changes
        are pushed, on every request), as the policy snapshots are (``access.decision.Authorizer``).
        New tokens need no clearing: only verified tokens are remembered."""
        if self._changes.changed(self.poll_seconds):
            self._verified.clear()

    def _verify(self, text: str) -> TokenInfo:
        tid = verified_id(self._db, _TOKEN_RE, text, "SELECT secret_sha256 FROM api_tokens WHERE id = ?")
        if tid is None:
            raise TokenError("invalid_token", "the token is not valid")
        return self.get(tid)
