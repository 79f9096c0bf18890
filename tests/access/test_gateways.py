"""Gateway credentials on a real access database, a SQLite file and a PostgreSQL database alike (the
``access_db`` fixture): issued bound to households, shown once, stored hashed, refused once revoked
(also when revoked by another process), managed by ``hems principals``, copied by ``hems access
migrate``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from access.cli import main as access_main
from access.db import AccessDb
from access.gateways import GatewayCredentials, GatewayError
from tests.access.raw_db import rows


@pytest.fixture
def creds(access_db: AccessDb) -> Iterator[GatewayCredentials]:
    store = GatewayCredentials(access_db)
    yield store
    store.close()


def test_a_credential_authenticates_bound_to_its_households(creds: GatewayCredentials) -> None:
    info, text = creds.issue(["hh-b", "hh-a", "hh-a"], label="serial 42")
    assert text.startswith("hemsgw_") and info.id in text
    assert creds.authenticate(text) == info
    assert info.households == frozenset({"hh-a", "hh-b"}) and info.label == "serial 42"


def test_only_a_hash_of_the_secret_is_stored(creds: GatewayCredentials) -> None:
    _, text = creds.issue(["hh-a"])
    secret = text[-43:]  # the secret itself may hold "_": split by its fixed length
    stored = rows(creds.where, "SELECT * FROM gateway_credentials") + rows(
        creds.where, "SELECT * FROM gateway_households"
    )
    assert len(stored) == 2 and secret not in repr(stored)


@pytest.mark.parametrize(
    "households, reason",
    [
        ([], "no_household"),
        (["hh a"], "bad_household_id"),
        ([f"h{i}" for i in range(65)], "too_many_households"),
    ],
)
def test_a_credential_needs_valid_households(
    creds: GatewayCredentials, households: list[str], reason: str
) -> None:
    with pytest.raises(GatewayError) as exc:
        creds.issue(households)
    assert exc.value.reason == reason


def test_wrong_unknown_and_malformed_texts_are_refused_alike(creds: GatewayCredentials) -> None:
    _, text = creds.issue(["hh-a"])
    prefix = text[:-44]  # prefix and id, without the "_" and the 43-character secret
    for bad in (f"{prefix}_{'x' * 43}", f"hemsgw_{'0' * 16}_{'x' * 43}", "hemsgw_", "", text + "x"):
        with pytest.raises(GatewayError) as exc:
            creds.authenticate(bad)
        assert exc.value.reason == "invalid_credential", bad


def test_revoked_here_is_refused_at_once(creds: GatewayCredentials) -> None:
    info, text = creds.issue(["hh-a"])
    creds.authenticate(text)
    creds.revoke(info.id)
    with pytest.raises(GatewayError) as exc:
        creds.authenticate(text)
    assert exc.value.reason == "credential_revoked"
    with pytest.raises(GatewayError):
        creds.revoke(info.id)  # not active any more


def test_revoked_by_another_process_is_refused_within_the_poll_interval(creds: GatewayCredentials) -> None:
    info, text = creds.issue(["hh-a"])
    kept, _ = creds.issue(["hh-b"])
    creds.authenticate(text)  # remembered
    other = GatewayCredentials(creds.where)
    other.revoke(info.id)
    other.close()
    t0 = time.monotonic()
    while True:
        try:
            creds.authenticate(text)
        except GatewayError as exc:
            assert exc.reason == "credential_revoked"
            break
        time.sleep(0.01)
    assert time.monotonic() - t0 <= creds.poll_seconds + 0.2
    assert creds.get(kept.id).revoked_at is None


def test_other_processes_issuing_and_revoking_others_leave_remembered_credentials_alone(
    creds: GatewayCredentials,
) -> None:
    """A replica re-reads only what was revoked: gateways onboarded (or others revoked) elsewhere do
    not send every remembered credential back to the access database."""
    _, text = creds.issue(["hh-a"])
    creds.authenticate(text)
    assert creds.lookups == 1
    other = GatewayCredentials(creds.where)
    for n in range(3):
        other.issue([f"hh-new-{n}"])
    gone, _ = other.issue(["hh-gone"])
    other.revoke(gone.id)
    time.sleep(creds.poll_seconds + 0.05)
    for _ in range(5):
        assert creds.authenticate(text).households == frozenset({"hh-a"})
    assert creds.lookups == 1  # answered from memory throughout
    mine = creds.authenticate(text)
    other.revoke(mine.id)  # and its own revocation is still seen within the poll interval
    other.close()
    time.sleep(creds.poll_seconds + 0.05)
    with pytest.raises(GatewayError) as exc:
        creds.authenticate(text)
    assert exc.value.reason == "credential_revoked"


def test_hems_principals_gateway_issue_list_revoke(
    access_db: AccessDb, capsys: pytest.CaptureFixture[str]
) -> None:
    db = access_db
    assert (
        access_main(
            ["principals", "--db", str(db), "gateway", "issue", "--household", "hh-a", "--label", "g1"]
        )
        == 0
    )
    out = capsys.readouterr()
    text = out.out.strip().splitlines()[-1]
    assert text.startswith("hemsgw_") and "not shown again" in out.err
    cid = text.split("_")[1]
    assert access_main(["principals", "--db", str(db), "gateway", "list"]) == 0
    listing = capsys.readouterr().out
    assert f"{cid}\thh-a\tg1" in listing and "active" in listing and text[-43:] not in listing
    assert access_main(["principals", "--db", str(db), "gateway", "revoke", cid]) == 0
    capsys.readouterr()
    assert access_main(["principals", "--db", str(db), "gateway", "list"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert access_main(["principals", "--db", str(db), "gateway", "revoke", cid]) == 1
    assert access_main(["principals", "--db", str(db), "gateway", "issue", "--household", "bad id"]) == 1


@pytest.mark.postgresql
def test_hems_access_migrate_copies_the_gateway_credentials(tmp_path: Path, pg_url: str) -> None:
    """A gateway issued on the single-machine file keeps uploading after the move to PostgreSQL (its
    store is one of ``access.db_migrate.STORES``); one revoked there stays revoked."""
    from access.db_migrate import migrate

    file = tmp_path / "access.sqlite"
    before = GatewayCredentials(file)
    live, text = before.issue(["hh-a", "hh-b"], label="g1")
    gone, gone_text = before.issue(["hh-c"])
    before.revoke(gone.id)
    before.close()
    migrate(file, pg_url)
    after = GatewayCredentials(pg_url)
    try:
        assert after.authenticate(text) == live
        with pytest.raises(GatewayError) as exc:
            after.authenticate(gone_text)
        assert exc.value.reason == "credential_revoked"
        later, _ = after.issue(["hh-d"])  # the revocation sequence goes on where the file left it
        after.revoke(later.id)
        assert rows(pg_url, "SELECT revoked_seq FROM gateway_credentials WHERE id = ?", (later.id,)) == [(2,)]
    finally:
        after.close()
