"""Web sign-in for homeowners and installers: scrypt passwords, server-side sessions, CSRF tokens.

Sessions live in the access database and the cookie carries only a random id, so signing out or
changing a password ends a session at once (a signed cookie could not be taken back).  The session id
is stored hashed for the same reason tokens are.  Each session has its own CSRF token, which pages
embed and the server compares with what a state-changing request sends (synchronizer pattern); the
app also checks ``Origin`` so a cross-site form post fails even before the token is looked at.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from access.clock import now
from access.db import open_db

SESSION_TTL_S = 12 * 3600.0
# scrypt cost: n=2**14, r=8 (~16 MiB, tens of ms): slow enough against guessing, fast enough to sign in.
_N, _R, _P = 2**14, 8, 1
MIN_PASSWORD = 10

_SCHEMA = """
CREATE TABLE IF NOT EXISTS web_passwords (
    principal TEXT PRIMARY KEY, salt BLOB NOT NULL, hash BLOB NOT NULL, n INTEGER NOT NULL,
    r INTEGER NOT NULL, p INTEGER NOT NULL, set_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS web_sessions (
    id_sha256 TEXT PRIMARY KEY, principal TEXT NOT NULL, csrf TEXT NOT NULL, created_at REAL NOT NULL,
    expires_at REAL NOT NULL);
"""


class AuthError(ValueError):
    """Sign-in or password change refused; the message is safe to show to the person."""


@dataclass(frozen=True)
class Session:
    principal: str
    csrf: str
    expires_at: float


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024)


def _sid_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode("ascii", "replace")).hexdigest()


class WebAuth:
    def __init__(self, path: Path | str, session_ttl_s: float = SESSION_TTL_S) -> None:
        self.path = Path(path)
        self._db = open_db(self.path, _SCHEMA)
        self.session_ttl_s = session_ttl_s
        # A hash to compare against when the principal has no password, so the timing is the same.
        self._dummy = (secrets.token_bytes(16), _scrypt("x" * MIN_PASSWORD, b"0" * 16, _N, _R, _P))

    def close(self) -> None:
        self._db.close()

    def set_password(self, principal: str, password: str) -> None:
        if len(password) < MIN_PASSWORD:
            raise AuthError(f"a password has at least {MIN_PASSWORD} characters")
        salt = secrets.token_bytes(16)
        digest = _scrypt(password, salt, _N, _R, _P)
        self._db.execute(
            "INSERT INTO web_passwords VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(principal) DO UPDATE SET "
            "salt = excluded.salt, hash = excluded.hash, n = excluded.n, r = excluded.r, p = excluded.p, "
            "set_at = excluded.set_at",
            (principal, salt, digest, _N, _R, _P, now()),
        )
        # A new password ends every session opened with the old one.
        self._db.execute("DELETE FROM web_sessions WHERE principal = ?", (principal,))

    def check_password(self, principal: str, password: str) -> bool:
        row = self._db.execute(
            "SELECT salt, hash, n, r, p FROM web_passwords WHERE principal = ?", (principal,)
        ).fetchone()
        if row is None:
            _scrypt(password, self._dummy[0], _N, _R, _P)
            return False
        salt, digest, n, r, p = row
        return hmac.compare_digest(_scrypt(password, salt, n, r, p), digest)

    def sign_in(self, principal: str, password: str, at: float | None = None) -> tuple[str, Session]:
        """Return the session id for the cookie and the session; ``AuthError`` on a wrong pair."""
        if not self.check_password(principal, password):
            raise AuthError("unknown user or wrong password")
        t = now() if at is None else at
        sid = secrets.token_urlsafe(32)
        session = Session(principal, secrets.token_urlsafe(32), t + self.session_ttl_s)
        self._db.execute(
            "INSERT INTO web_sessions VALUES (?, ?, ?, ?, ?)",
            (_sid_hash(sid), principal, session.csrf, t, session.expires_at),
        )
        return sid, session

    def session(self, sid: str, at: float | None = None) -> Session | None:
        if not sid or len(sid) > 100:
            return None
        row = self._db.execute(
            "SELECT principal, csrf, expires_at FROM web_sessions WHERE id_sha256 = ?", (_sid_hash(sid),)
        ).fetchone()
        t = now() if at is None else at
        if row is None or t >= row[2]:
            return None
        return Session(row[0], row[1], row[2])

    def sign_out(self, sid: str) -> None:
        self._db.execute("DELETE FROM web_sessions WHERE id_sha256 = ?", (_sid_hash(sid),))
