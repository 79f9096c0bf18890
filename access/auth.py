"""Authentication, in one place: who is calling (an API token or a web session), whether a session's
state-changing request comes from our own pages (CSRF), and the sign-in that opens a session.

Partners and scripts send ``Authorization: Bearer <token>`` (``access.tokens`` keeps the tokens);
homeowners and installers sign in with a password and then carry a session cookie.  Sessions live
in the access database and the cookie carries only a random id, so signing out or changing a
password ends a session at once (a signed cookie could not be taken back).  The session id is
stored hashed for the same reason tokens are.  Each session has its own CSRF token, which pages
embed and the server compares with what a state-changing request sends (synchronizer pattern); the
``Origin`` check stops a cross-site form post even before the token is looked at.

Guessing is made slow and blind (README, "Sign-in"):

* every attempt hashes with scrypt, whether or not the name exists, so timing does not tell
  which names are accounts;
* attempts are counted per account name and per client address before the hash runs, and wait
  ever longer once their allowance is spent (``access.signin_throttle``);
* the hash runs on a thread of its own, never on the event loop, and at most ``MAX_WAITING``
  sign-ins wait for it, so a flood of sign-ins cannot stall the API; attempts refused without a
  check are answered only after a second (``TARPIT_S``), which slows a flood to its connection count;
* every refused sign-in is logged with the client address, never with the password;
* requests with a token that does not authenticate are limited per address too
  (``INVALID_TOKEN_BURST``), and a throttled address gets no new token checked at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from aiohttp import web

from access.api.problems import ApiProblem
from access.api.ratelimit import RateLimiter
from access.clock import now
from access.db import AccessDb, open_db
from access.relationships import is_principal_id
from access.signin_throttle import SignInThrottle
from access.tokens import TokenError

if TYPE_CHECKING:
    from access.api.state import AppState

log = logging.getLogger(__name__)

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


WRONG_PAIR = "unknown user or wrong password"
WEB_KINDS = ("homeowner", "installer")  # the principals who may sign in to the web views


class AuthError(ValueError):
    """Sign-in or password change refused; the message is safe to show to the person."""


@dataclass(frozen=True)
class Session:
    principal: str
    csrf: str
    expires_at: float
    signed_in_at: float  # when the password was last checked: the person's rights need it recent


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024)


def _sid_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode("ascii", "replace")).hexdigest()


class WebAuth:
    def __init__(self, where: AccessDb, session_ttl_s: float = SESSION_TTL_S) -> None:
        self.where = where
        self._db = open_db(where, _SCHEMA, name="web")
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
        """Whether the pair is right; the same scrypt work whether or not the name has a password.  A
        name no principal can have is not looked up at all (with a NUL, PostgreSQL's query would fail)."""
        row = (
            self._db.execute(
                "SELECT salt, hash, n, r, p FROM web_passwords WHERE principal = ?", (principal,)
            ).fetchone()
            if is_principal_id(principal)
            else None
        )
        if row is None:
            _scrypt(password, self._dummy[0], _N, _R, _P)
            return False
        salt, digest, n, r, p = row
        return hmac.compare_digest(_scrypt(password, salt, n, r, p), digest)

    def sign_in(self, principal: str, password: str, at: float | None = None) -> tuple[str, Session]:
        """Return the session id for the cookie and the session; ``AuthError`` on a wrong pair.  (The
        web sign-in goes through :class:`SignIn`, which adds the throttle and keeps the loop free.)"""
        if not self.check_password(principal, password):
            raise AuthError(WRONG_PAIR)
        return self.open_session(principal, at)

    def open_session(self, principal: str, at: float | None = None) -> tuple[str, Session]:
        """A new session for a principal whose password was just checked."""
        t = now() if at is None else at
        sid = secrets.token_urlsafe(32)
        session = Session(principal, secrets.token_urlsafe(32), t + self.session_ttl_s, t)
        self._db.execute(
            "INSERT INTO web_sessions VALUES (?, ?, ?, ?, ?)",
            (_sid_hash(sid), principal, session.csrf, t, session.expires_at),
        )
        return sid, session

    def session(self, sid: str, at: float | None = None) -> Session | None:
        if not sid or len(sid) > 100:
            return None
        row = self._db.execute(
            "SELECT principal, csrf, expires_at, created_at FROM web_sessions WHERE id_sha256 = ?",
            (_sid_hash(sid),),
        ).fetchone()
        t = now() if at is None else at
        if row is None or t >= row[2]:
            return None
        return Session(row[0], row[1], row[2], row[3])

    def sign_out(self, sid: str) -> None:
        self._db.execute("DELETE FROM web_sessions WHERE id_sha256 = ?", (_sid_hash(sid),))


# -- who is calling ------------------------------------------------------------------------------------
SESSION_COOKIE = "hems_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Requests whose token does not authenticate: 10 per client address, then one every 5 s (429).
INVALID_TOKEN_BURST = 10.0
INVALID_TOKEN_RATE_PER_S = 0.2


Via = Literal["token", "session", "webhook"]  # webhook: the alert sender acting for its installer


@dataclass(frozen=True)
class Caller:
    principal: str
    kind: str
    via: Via
    purposes: frozenset[str] | None  # a token's purposes; None: whatever the principal registered
    rate_key: str
    csrf: str | None = None
    verified_at: float | None = None  # when the person behind the credential was last verified


def last_forwarded(request: web.Request, name: str) -> str:
    """The last entry of a forwarding header (``X-Forwarded-For``, ``X-Forwarded-Proto``): the one our
    proxy wrote.  Every line counts, since a header's lines are one comma-separated list (RFC 9110
    5.3): a proxy that adds a line of its own after the client's (HAProxy) would otherwise leave the
    client's line to be read first."""
    lines = request.headers.getall(name, [])
    return lines[-1].rsplit(",", 1)[-1].strip() if lines else ""


def _without_port(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in ``text``, also when a proxy wrote it with the client's source port
    (``198.51.100.7:51234``, ``[2001:db8::1]:51234``) or an IPv6 zone: a port changes with every
    connection, so an address counted with it would get a fresh allowance each time."""
    host = text.strip()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    try:
        return ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None


def client_address(request: web.Request, trust_forwarded: bool) -> str:
    """The address throttles count and logs name: the peer, or with ``trust_forwarded`` (``hems serve
    --trust-forwarded``, behind a proxy that appends it) the last ``X-Forwarded-For`` entry.  An IPv6
    client is counted by its /64, which one home or host holds whole."""
    text = request.remote or ""
    if trust_forwarded:
        text = last_forwarded(request, "X-Forwarded-For") or text
    ip = _without_port(text)
    if ip is None:
        return text[:64] or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # non-browser clients and same-origin GET navigations send none
    if origin == "null":
        return False
    parts = urlsplit(origin)
    return parts.netloc == request.host and parts.scheme in ("http", "https")


def check_csrf(request: web.Request, expected: str, form_value: str | None) -> None:
    if not same_origin(request):
        raise ApiProblem(403, "csrf_refused", "cross-site request refused (Origin does not match)")
    given = form_value if form_value is not None else request.headers.get(CSRF_HEADER, "")
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiProblem(403, "csrf_refused", "missing or wrong CSRF token")


def authenticate(
    request: web.Request, state: AppState, *, required: bool = True, form_csrf: bool = False
) -> Caller | None:
    """The caller, or a 401 problem; for session callers also the CSRF check on unsafe methods
    (from the ``X-CSRF-Token`` header, unless ``form_csrf``: then the form handler checks its field)."""
    t = state.clock()
    header = request.headers.get("Authorization", "")
    if header:
        return _token_caller(request, state, header, t)
    sid = request.cookies.get(SESSION_COOKIE)
    session = state.web.session(sid, at=t) if sid else None
    if session is None:
        if not required:
            return None
        raise ApiProblem(
            401, "not_authenticated", "sign in, or send an API token", headers={"WWW-Authenticate": "Bearer"}
        )
    kind = state.kind_of(session.principal, at=t)
    if kind is None:
        raise ApiProblem(401, "not_authenticated", "sign in again")
    if request.method not in SAFE_METHODS and not form_csrf:
        check_csrf(request, session.csrf, None)
    return Caller(
        session.principal,
        kind,
        "session",
        None,
        f"session:{session.principal}",
        session.csrf,
        session.signed_in_at,
    )


def _token_caller(request: web.Request, state: AppState, header: str, t: float) -> Caller:
    """A bearer token's caller.  A token this process has not verified yet is checked only while the
    client's address has invalid-token allowance left; each failure spends one."""
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    limiter = state.invalid_tokens
    # The address is worked out only for a token this process has not verified, or one that fails:
    # parsing it costs a good share of a cached page's request.
    address = "" if state.tokens.remembers(credential) else client_address(request, state.trust_forwarded)
    if address and (wait := limiter.wait(address)) > 0:
        raise ApiProblem(
            429,
            "rate_limited",
            "too many requests with invalid tokens from this address; slow down",
            headers={"Retry-After": RateLimiter.retry_after_header(wait)},
        )
    if scheme.lower() != "bearer" or not credential:
        limiter.take(address or client_address(request, state.trust_forwarded))
        raise ApiProblem(401, "invalid_token", "use 'Authorization: Bearer <token>'")
    try:
        info = state.tokens.authenticate(credential, at=t)
    except TokenError as exc:
        limiter.take(address or client_address(request, state.trust_forwarded))
        raise ApiProblem(
            401, exc.reason, str(exc), headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        ) from None
    kind = state.kind_of(info.principal, at=t)
    if kind is None:
        limiter.take(address or client_address(request, state.trust_forwarded))
        raise ApiProblem(401, "invalid_token", "the token is not valid")
    return Caller(
        info.principal, kind, "token", info.purposes, f"token:{info.id}", None, info.identity_verified_at
    )


# -- sign-in -------------------------------------------------------------------------------------------
MAX_WAITING = 32  # sign-ins queued for the hashing thread; more get 503 (after the tarpit)
DEVICE_COOKIE = "hems_device"
DEVICE_TTL_S = 180 * 86400.0
TARPIT_S = 1.0
MAX_TARPIT = 1000


class SignInRefused(Exception):
    """A sign-in that opened no session: ``status`` 401 (wrong pair), 429 (throttled) or 503 (busy),
    with ``retry_after_s`` for the last two.  The message is safe to show."""

    def __init__(self, status: int, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


HASH_NICENESS = 10


def _behind_the_loop() -> None:
    """Lower the hashing thread's scheduling priority (Linux sets niceness per thread): when cores are
    short, a burst of sign-ins then waits for the event loop rather than the loop for the hashes."""
    if hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICENESS)


@dataclass
class _Refusals:
    """Sign-ins refused without a check (throttled, or the queue full): counted, and logged as one
    summary line at most every ``every_s`` seconds, so a flood cannot flood the log too."""

    every_s: float = 10.0
    counts: Counter[str] = field(default_factory=Counter)
    addresses: set[str] = field(default_factory=set)
    since: float = field(default_factory=time.monotonic)

    def add(self, why: str, address: str) -> None:
        self.counts[why] += 1
        if len(self.addresses) < 20:
            self.addresses.add(address)
        if time.monotonic() - self.since >= self.every_s:
            log.warning(
                "sign-in refused without checking in the last %.0fs: %s; addresses %s",
                time.monotonic() - self.since,
                ", ".join(f"{n} {why}" for why, n in sorted(self.counts.items())),
                " ".join(sorted(self.addresses)),
            )
            self.counts.clear()
            self.addresses.clear()
            self.since = time.monotonic()


@dataclass
class SignIn:
    """The web sign-in: throttle, hash and session, run on one thread of their own (``pool``).

    One thread, so the throttle sees attempts strictly one after another and the hashing takes at
    most one core whatever the flood; the event loop only queues and answers.  Once the throttle has
    refused an account or an address, this process remembers until when (``_blocked``) and refuses
    their further attempts on the loop, before the form is even read: a flood of throttled attempts
    then costs no thread hop and no database transaction each."""

    web: WebAuth
    throttle: SignInThrottle
    name_key: bytes  # keys the hashes of account names in the throttle and the log
    device_key: bytes = b""  # signs the device cookies (``device_cookie``); empty: none are made
    max_waiting: int = MAX_WAITING
    pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="signin", initializer=_behind_the_loop
        )
    )
    waiting: int = 0
    refusals: _Refusals = field(default_factory=_Refusals)
    # Refusals without a check (throttled, busy) are answered after ``tarpit_s``, while fewer than
    # ``max_tarpit`` wait: an attacker's connections are held instead of coming straight back, which
    # caps a flood's rate at (its connections / tarpit_s) at the cost of idle sockets only.
    tarpit_s: float = TARPIT_S
    max_tarpit: int = MAX_TARPIT
    tarpitted: int = 0
    _blocked: dict[str, float] = field(default_factory=dict)  # "account:<hash>"/"address:<a>" -> until

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.throttle.close()

    def name_hash(self, name: str) -> str:
        """A keyed hash of what was typed as a name: counted and logged instead of the text itself."""
        return hmac.new(self.name_key, name.encode("utf-8", "replace"), hashlib.sha256).hexdigest()[:16]

    def device_cookie(self, name: str, at: float) -> str | None:
        """What a browser that has just signed in as ``name`` keeps (``DEVICE_COOKIE``): a random id,
        when it was made, and a MAC binding both to the account.  The throttle counts that browser's
        attempts at that account on their own, so someone who only knows the name can lock the account
        for every other browser but not for the one its owner uses (OWASP "device cookies")."""
        if not self.device_key:
            return None
        made = f"{secrets.token_urlsafe(12)}.{int(at)}"
        return f"{made}.{self._device_mac(made, self.name_hash(name))}"

    def _device_mac(self, made: str, account: str) -> str:
        return hmac.new(self.device_key, f"{made}.{account}".encode(), hashlib.sha256).hexdigest()[:32]

    def counted_as(self, account: str, device: str | None, at: float) -> str:
        """The throttle's name for an attempt at ``account``: the browser's own key when it sends a
        device cookie made for that account and not older than ``DEVICE_TTL_S``, else the account."""
        if not device or not self.device_key or len(device) > 100:
            return account
        made, _, mac = device.rpartition(".")
        device_id, _, issued = made.partition(".")
        if not (device_id and issued.isascii() and issued.isdigit() and len(issued) <= 12):
            return account
        if not 0 <= at - int(issued) <= DEVICE_TTL_S:
            return account
        if not hmac.compare_digest(mac.encode(), self._device_mac(made, account).encode()):
            return account
        return "device-" + hmac.new(self.name_key, device_id.encode(), hashlib.sha256).hexdigest()[:16]

    async def tarpit(self) -> None:
        """Hold a refused attempt's answer for ``tarpit_s`` (see the field), unless too many are held."""
        if self.tarpit_s <= 0 or self.tarpitted >= self.max_tarpit:
            return
        self.tarpitted += 1
        try:
            await asyncio.sleep(self.tarpit_s)
        finally:
            self.tarpitted -= 1

    def precheck(self, address: str) -> None:
        """Refuse at once, before the form is read, when the queue is full or the address is known to
        be throttled; else nothing."""
        if self.waiting >= self.max_waiting:
            self.refusals.add("busy", address)
            raise SignInRefused(503, "sign-in is busy; try again in a moment", 2.0)
        self._known_block(f"address:{address}", address)

    def _known_block(self, key: str, address: str) -> None:
        until = self._blocked.get(key)
        if until is None:
            return
        wait = until - self.throttle.clock()
        if wait <= 0:
            del self._blocked[key]
            return
        self.refusals.add("throttled", address)
        raise SignInRefused(429, "too many sign-in attempts; wait and try again", wait)

    async def attempt(
        self, name: str, password: str, kind: str | None, address: str, at: float, device: str | None = None
    ) -> tuple[str, Session]:
        """The session id and session, or :class:`SignInRefused`.  ``kind`` is the name's principal kind
        (None: no such principal); only ``WEB_KINDS`` may sign in, but every name costs the same work.
        ``device``: the browser's ``DEVICE_COOKIE``, if it sent one (see ``device_cookie``)."""
        self.precheck(address)
        account = self.counted_as(self.name_hash(name), device, at)
        self._known_block(f"account:{account}", address)
        self.waiting += 1
        try:
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(
                self.pool, self._attempt, name, password, kind in WEB_KINDS, account, address, at
            )
        finally:
            self.waiting -= 1
        if isinstance(outcome, tuple):
            return outcome
        if outcome.waits:
            t = self.throttle.clock()
            if len(self._blocked) >= 100_000:
                self._blocked.clear()  # memory bound: forgetting only sends attempts to the database again
            for which, wait in outcome.waits.items():
                self._blocked[f"{which}:{account if which == 'account' else address}"] = t + wait
            self.refusals.add("throttled", address)
            raise SignInRefused(
                429, "too many sign-in attempts; wait and try again", max(outcome.waits.values())
            )
        # A known principal's id is logged as is (the operator has it already); any other text only
        # as its keyed hash, since a name field sometimes receives a password.
        log.warning(
            "sign-in refused: %s account=%s address=%s failures=%d",
            "wrong password" if kind is not None else "unknown account",
            name if kind is not None else f"#{account[:12]}",
            address,
            outcome.failures,
        )
        raise SignInRefused(401, WRONG_PAIR)

    def _attempt(
        self, name: str, password: str, may_sign_in: bool, account: str, address: str, at: float
    ) -> tuple[str, Session] | _Failed:
        """On the sign-in thread: the session when the pair is right, else why not.  Every attempt the
        throttle lets through runs one scrypt hash."""
        wait, waits = self.throttle.reserve(account, address)
        if wait > 0:
            return _Failed(waits, 0)
        if not (self.web.check_password(name, password) and may_sign_in):
            return _Failed({}, self.throttle.failures(account))
        self.throttle.succeeded(account, address)
        return self.web.open_session(name, at)


@dataclass(frozen=True)
class _Failed:
    waits: dict[str, float]  # throttled: the wait of each refusing key ("account", "address")
    failures: int  # a wrong pair: the account's failures counted now


def set_session_cookie(response: web.StreamResponse, sid: str, secure: bool, ttl_s: float) -> None:
    response.set_cookie(
        SESSION_COOKIE, sid, httponly=True, samesite="Strict", secure=secure, path="/", max_age=int(ttl_s)
    )


def set_device_cookie(response: web.StreamResponse, value: str | None, secure: bool) -> None:
    """The sign-in throttle's browser cookie (``SignIn.device_cookie``): sent only to ``/login``."""
    if value is not None:
        response.set_cookie(
            DEVICE_COOKIE,
            value,
            httponly=True,
            samesite="Strict",
            secure=secure,
            path="/login",
            max_age=int(DEVICE_TTL_S),
        )
