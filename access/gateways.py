"""Gateway credentials: what a home gateway shows the fleet's ingest to upload its households' readings.

A gateway credential is not an API token and grants nothing an API token grants: it reads nothing,
declares no purpose, belongs to no principal, and writes only the series of the households it was
issued for (``access.api.ingest`` refuses any other household tag).  Its text is
``hemsgw_<id>_<secret>``, kept as API tokens are (``access.hashed_secrets``).  It is shown once, at
issue (``hems principals gateway issue``), and does not expire (a gateway in a cupboard must keep
uploading for years); it is replaced by issuing a new one and revoking the old.

Revocation reaches every ingest replica within ``poll_seconds`` (0.5 s): a replica remembers the
credentials it verified, reads the ``gateways`` change counter of the access database
(``Db.change_version``) when a request arrives -- at most every ``poll_seconds`` on a SQLite file, on
every request on PostgreSQL, where the change is pushed to each replica -- and when it moved asks
which credentials were revoked since it last asked (each revocation takes the next ``revoked_seq``)
and forgets those only.  Issuing a credential, or revoking one it never saw, costs a
replica one indexed read, not a fresh verification of every gateway it serves: at a fleet's size
(gateways onboarded every minute, a gateway's uploads spread over every replica) forgetting them all
would send every replica's whole traffic to the access database after each change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from access.clock import now
from access.db import AccessDb, ChangeWatch, open_db, write_transaction
from access.hashed_secrets import ID_AND_SECRET, CredentialError, new_id_and_secret, secret_hash, verified_id
from pipeline.query import valid_id

PREFIX: Final = "hemsgw_"
POLL_SECONDS: Final = 0.5  # half the 1 s promised for a revocation to reach every replica
_MAX_VERIFIED: Final = 100_000  # one per gateway a replica serves; a flood of bad guesses adds nothing
_MAX_HOUSEHOLDS: Final = 64  # a gateway serves one home, or a building's few
_TEXT_RE: Final = re.compile(rf"^{PREFIX}{ID_AND_SECRET}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS gateway_credentials (
    id TEXT PRIMARY KEY, secret_sha256 TEXT NOT NULL, label TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL, revoked_at REAL, revoked_seq INTEGER);
CREATE INDEX IF NOT EXISTS gateway_credentials_revoked_seq ON gateway_credentials(revoked_seq);
CREATE TABLE IF NOT EXISTS gateway_households (
    credential TEXT NOT NULL REFERENCES gateway_credentials(id), household TEXT NOT NULL,
    PRIMARY KEY (credential, household));
"""
TABLES: Final = ("gateway_credentials", "gateway_households")


class GatewayError(CredentialError):
    """A gateway credential that cannot be issued, or does not authenticate; ``reason`` is a stable code."""


@dataclass(frozen=True)
class GatewayCredential:
    id: str
    households: frozenset[str]
    label: str
    created_at: float
    revoked_at: float | None


class GatewayCredentials:
    def __init__(self, where: AccessDb, poll_seconds: float = POLL_SECONDS) -> None:
        self.where = where
        self._db = open_db(where, _SCHEMA, name="gateways", counters={"gateways": TABLES})
        self.poll_seconds = poll_seconds
        self._verified: dict[str, GatewayCredential] = {}  # full text -> record, once verified
        self._changes = ChangeWatch(self.data_version, pushed=self._db.changes_pushed)
        self._revoked_seen = self._last_revoked_seq()  # credentials verified from now on are read fresh
        self.lookups = 0  # verifications that read the access database (for /metrics)

    def close(self) -> None:
        self._db.close()

    def issue(
        self, households: list[str] | tuple[str, ...], label: str = "", at: float | None = None
    ) -> tuple[GatewayCredential, str]:
        """Return the record and the credential's text; the text is never retrievable again."""
        wanted = sorted(set(households))
        if not wanted:
            raise GatewayError("no_household", "a gateway credential is bound to at least one household")
        if len(wanted) > _MAX_HOUSEHOLDS:
            raise GatewayError("too_many_households", f"at most {_MAX_HOUSEHOLDS} households per gateway")
        bad = [h for h in wanted if not valid_id(h)]
        if bad:
            raise GatewayError("bad_household_id", f"not a household id: {bad[0]!r}")
        cid, secret = new_id_and_secret()
        with write_transaction(self._db) as db:
            db.execute(
                "INSERT INTO gateway_credentials (id, secret_sha256, label, created_at) VALUES (?, ?, ?, ?)",
                (cid, secret_hash(secret), label, now() if at is None else at),
            )
            db.executemany(
                "INSERT INTO gateway_households (credential, household) VALUES (?, ?)",
                [(cid, h) for h in wanted],
            )
        return self.get(cid), f"{PREFIX}{cid}_{secret}"

    def get(self, cid: str) -> GatewayCredential:
        row = self._db.execute(
            "SELECT id, label, created_at, revoked_at FROM gateway_credentials WHERE id = ?", (cid,)
        ).fetchone()
        if row is None:
            raise GatewayError("unknown_credential", f"no gateway credential {cid}")
        households = frozenset(
            r[0]
            for r in self._db.execute("SELECT household FROM gateway_households WHERE credential = ?", (cid,))
        )
        return GatewayCredential(row[0], households, row[1], row[2], row[3])

    def list(self) -> list[GatewayCredential]:
        return [
            self.get(r[0]) for r in self._db.execute("SELECT id FROM gateway_credentials ORDER BY created_at")
        ]

    def uploading_households(self) -> tuple[str, ...]:
        """The households some unrevoked credential writes: those whose readings reach the fleet from a
        gateway, so the fleet derives what the pipeline derives beside a local collector (the negawatt
        items, ``pipeline.negawatt``)."""
        return tuple(
            r[0]
            for r in self._db.execute(
                "SELECT DISTINCT h.household FROM gateway_households h "
                "JOIN gateway_credentials c ON c.id = h.credential WHERE c.revoked_at IS NULL "
                "ORDER BY h.household"
            )
        )

    def leads(self, job: str) -> bool:
        """Whether this process runs ``job`` for every replica on this access database (``Db.leads``)."""
        return self._db.leads(job)

    def revoke(self, cid: str, at: float | None = None) -> None:
        """Revoke ``cid``: it takes the next ``revoked_seq`` (writers queue in the transaction, so the
        numbers commit in order and a replica asking for those above the last it saw misses none)."""
        with write_transaction(self._db) as db:
            cur = db.execute(
                "UPDATE gateway_credentials SET revoked_at = ?, revoked_seq = "
                "(SELECT COALESCE(MAX(revoked_seq), 0) + 1 FROM gateway_credentials) "
                "WHERE id = ? AND revoked_at IS NULL",
                (now() if at is None else at, cid),
            )
            done = cur.rowcount
        self._forget({cid})
        if done == 0:
            raise GatewayError("unknown_credential", f"no active gateway credential {cid}")

    def _last_revoked_seq(self) -> int:
        (seq,) = self._db.execute("SELECT COALESCE(MAX(revoked_seq), 0) FROM gateway_credentials").fetchone()
        return int(seq)

    def _forget_revoked(self) -> None:
        """Forget the remembered credentials revoked since the last look (one indexed read)."""
        rows = self._db.execute(
            "SELECT id, revoked_seq FROM gateway_credentials WHERE revoked_seq > ?", (self._revoked_seen,)
        ).fetchall()
        if rows:
            self._revoked_seen = max(self._revoked_seen, *(int(r[1]) for r in rows))
            self._forget({r[0] for r in rows})

    def _forget(self, ids: set[str]) -> None:
        if any(info.id in ids for info in self._verified.values()):
            self._verified = {t: info for t, info in self._verified.items() if info.id not in ids}

    def data_version(self) -> int:
        """Moves when any connection (another replica too) changes the credentials (``Db.change_version``)."""
        return self._db.change_version("gateways")

    @property
    def remembered(self) -> int:
        """Credentials verified and held in memory (for /metrics)."""
        return len(self._verified)

    def authenticate(self, text: str) -> GatewayCredential:
        """The credential's record if ``text`` is a live gateway credential, else ``GatewayError``.

        Malformed, unknown and wrong-secret texts share one reason (``invalid_credential``) so a caller
        cannot probe which ids exist."""
        if self._changes.changed(self.poll_seconds):
            self._forget_revoked()
        info = self._verified.get(text)
        if info is None:
            self.lookups += 1
            info = self._verify(text)
            if len(self._verified) >= _MAX_VERIFIED:
                self._verified.clear()
            self._verified[text] = info
        if info.revoked_at is not None:
            raise GatewayError("credential_revoked", "the gateway credential was revoked")
        return info

    def _verify(self, text: str) -> GatewayCredential:
        cid = verified_id(
            self._db, _TEXT_RE, text, "SELECT secret_sha256 FROM gateway_credentials WHERE id = ?"
        )
        if cid is None:
            raise GatewayError("invalid_credential", "the gateway credential is not valid")
        return self.get(cid)
