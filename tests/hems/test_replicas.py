"""Two ``hems serve`` replicas (real processes) on one PostgreSQL access database and one influxd, as a
fleet runs them behind a load balancer:

* a homeowner's suspension made through one replica is refused by the other within a second;
* provisions served concurrently by both leave one ledger chain that ``hems ledger verify`` accepts;
* a token revoked by ``hems principals token revoke`` cannot read through either replica a second later;
* two ingest replicas (``hems serve --role ingest``): a gateway credential revoked through one replica's
  access database connection cannot upload through the other a second later.

The times measured are printed (``-s``): NOTIFY carries a change to the other replica in milliseconds.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from access.gateways import GatewayCredentials
from access.ledger import Ledger
from access.relationships import RelationshipStore
from access.tokens import TokenStore
from pipeline.config import PipelineConfig
from pipeline.points import Point
from pipeline.stores import open_store
from tests.ingest_client import post_batch
from tests.loopback import free_port

pytestmark = [pytest.mark.postgresql, pytest.mark.influxdb, pytest.mark.slow]

PV = "sps.pv_after_maintenance"
OWN = "sps.disclosure_to_person"
HOUSEHOLD = "h1"
PROPAGATION_LIMIT_S = 1.0


@dataclass
class Fleet:
    db: str
    env: dict[str, str]
    replicas: list[str]  # base URLs
    tokens: dict[str, str]
    token_ids: dict[str, str]
    window: dict[str, str]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _populate(db: str, now: float) -> tuple[dict[str, str], dict[str, str]]:
    rel = RelationshipStore(db)
    since = now - 30 * 86400
    rel.add_households([HOUSEHOLD])
    rel.add_contracts([(HOUSEHOLD, "sps", "service")], since=since)
    rel.add_principal("alice", "homeowner", "Alice", [OWN])
    rel.add_principal("inst1", "installer", "Roof Installers", [PV])
    rel.link_many([("alice", HOUSEHOLD, "homeowner"), ("inst1", HOUSEHOLD, "installer")], since=since)
    tokens = TokenStore(db)
    texts, ids = {}, {}
    info, texts["inst1"] = tokens.create("inst1", [PV], rel.principal("inst1").purposes, at=now)
    ids["inst1"] = info.id
    info, texts["alice"] = tokens.create(
        "alice",
        [OWN],
        rel.principal("alice").purposes,
        at=now,
        identity_verified_at=now,
        identity_method="documents",
    )
    ids["alice"] = info.id
    tokens.close()
    rel.close()
    return texts, ids


async def _readings(settings: dict[str, str], now: float) -> None:
    store = open_store(PipelineConfig(store="influx", **settings))
    await store.open()
    start = int(now) - 6 * 3600
    await store.write(
        [
            Point("pv", HOUSEHOLD, "inv1", "modbus", (start + i * 60) * 10**9, {"power_w": float(i % 500)})
            for i in range(0, 6 * 3600 // 60)
        ]
    )
    await store.close()


@asynccontextmanager
async def _replica(env: dict[str, str], db: str, *role: str) -> AsyncIterator[str]:
    port = free_port()
    options = list(role) or ["--rate", "0", "--insecure-cookies"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hems", "serve", "--port", str(port), "--db", db, "--store", "influx",
        *options, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=90)
        assert f"127.0.0.1:{port}" in line.decode(), line
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), timeout=30)
        if proc.returncode not in (0, -15):
            assert proc.stderr is not None
            print((await proc.stderr.read()).decode()[-3000:], file=sys.stderr)


@pytest.fixture
async def fleet(pg_url: str, influxdb_settings: dict[str, str], tmp_path: Path) -> AsyncIterator[Fleet]:
    now = time.time()
    tokens, ids = _populate(pg_url, now)
    await _readings(influxdb_settings, now)
    env = {
        **os.environ,
        "HEMS_DATA_DIR": str(tmp_path / "data"),
        "HEMS_KEY_FILE": str(tmp_path / "shared" / "hems.key"),  # one key, as every replica must read
        **{f"HEMS_{k.upper()}": v for k, v in influxdb_settings.items()},
    }
    window = {"start": _iso(now - 5 * 3600), "stop": _iso(now - 3600)}
    async with AsyncExitStack() as stack:
        replicas = [await stack.enter_async_context(_replica(env, pg_url)) for _ in range(2)]
        yield Fleet(pg_url, env, replicas, tokens, ids, window)


def _auth(fleet: Fleet, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {fleet.tokens[who]}", "X-Purpose": PV if who == "inst1" else OWN}


async def _read(
    http: aiohttp.ClientSession, fleet: Fleet, base: str, who: str = "inst1", **window: str
) -> tuple[int, dict[str, object]]:
    params = {**fleet.window, **window}
    async with http.get(
        f"{base}/api/v1/households/{HOUSEHOLD}/series/pv", params=params, headers=_auth(fleet, who)
    ) as r:
        return r.status, await r.json(content_type=None)


async def _until_refused(
    http: aiohttp.ClientSession, fleet: Fleet, base: str, limit_s: float
) -> tuple[float, dict[str, object]]:
    """Seconds until ``base`` refuses inst1's read (asking every 10 ms), and the refusal.

    The time is when the first refused request was *sent*: the change had reached the replica by
    then.  Its answer's own latency (long on a loaded machine) is not propagation."""
    t0 = time.monotonic()
    while True:
        sent = time.monotonic() - t0
        status, body = await _read(http, fleet, base)
        if status != 200 or time.monotonic() - t0 > limit_s * 3:
            return sent, body | {"status": status}
        await asyncio.sleep(0.01)


async def test_a_suspension_through_one_replica_is_refused_by_the_other_within_a_second(fleet: Fleet) -> None:
    a, b = fleet.replicas
    async with aiohttp.ClientSession() as http:
        for base in (a, b):  # both serve the installer before (and each remembers its snapshot)
            status, body = await _read(http, fleet, base)
            assert status == 200 and body["served"], body
        async with http.put(
            f"{a}/api/v1/households/{HOUSEHOLD}/consent",
            json={"suspended": True, "scope": "provision"},
            headers=_auth(fleet, "alice"),
        ) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["provision_suspended"] is True
        took, refusal = await _until_refused(http, fleet, b, PROPAGATION_LIMIT_S)
        print(f"\nsuspension via replica A refused by replica B after {took * 1000:.0f} ms")
        assert refusal["status"] == 403 and refusal["reason"] == "suspended", refusal
        assert took < PROPAGATION_LIMIT_S
        # Lifted through B: A serves again.
        async with http.put(
            f"{b}/api/v1/households/{HOUSEHOLD}/consent",
            json={"suspended": False, "scope": "provision"},
            headers=_auth(fleet, "alice"),
        ) as r:
            assert r.status == 200
        t0 = time.monotonic()
        while (await _read(http, fleet, a))[0] != 200:
            assert time.monotonic() - t0 < PROPAGATION_LIMIT_S
            await asyncio.sleep(0.01)


async def test_concurrent_provisions_through_both_replicas_leave_one_valid_chain(fleet: Fleet) -> None:
    per_replica, base_start = 40, int(time.time()) - 5 * 3600

    async def one(http: aiohttp.ClientSession, replica: int, i: int) -> int:
        # Each response's window says which replica served it: minute i of replica's own hour.
        start = base_start + replica * 3600 + i * 60
        status, _ = await _read(
            http, fleet, fleet.replicas[replica], start=_iso(start), stop=_iso(start + 60)
        )
        return status

    statuses: list[int] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as http:
        for wave in range(0, per_replica, 10):  # waves of 10 per replica, both replicas at once
            statuses += await asyncio.gather(
                *(one(http, r, i) for i in range(wave, wave + 10) for r in (0, 1))
            )
    assert statuses == [200] * (2 * per_replica)
    verify = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hems", "ledger", "verify", "--db", fleet.db, env=fleet.env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out = (await verify.communicate())[0].decode()
    assert verify.returncode == 0 and out.startswith(f"ok: {2 * per_replica} records"), out
    records = Ledger(fleet.db, key_file=Path(fleet.env["HEMS_KEY_FILE"])).for_household(HOUSEHOLD)
    served_by = [int((r.period_start - base_start) // 3600) for r in records]
    assert sorted(served_by) == [0] * per_replica + [1] * per_replica
    switches = sum(1 for x, y in itertools.pairwise(served_by) if x != y)
    print(f"\n{len(records)} records from both replicas in one chain; the writer changed {switches} times")
    assert switches >= 1


async def test_a_revoked_token_cannot_read_through_either_replica_a_second_later(fleet: Fleet) -> None:
    async with aiohttp.ClientSession() as http:
        for base in fleet.replicas:
            assert (await _read(http, fleet, base))[0] == 200  # remembered by both
        revoke = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hems", "principals", "--db", fleet.db, "token", "revoke",
            fleet.token_ids["inst1"], env=fleet.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out = (await revoke.communicate())[0].decode()
        assert revoke.returncode == 0 and re.search(r"revoked", out), out
        for name, base in zip("AB", fleet.replicas, strict=True):
            took, refusal = await _until_refused(http, fleet, base, PROPAGATION_LIMIT_S)
            print(f"\ntoken revoked by the CLI refused by replica {name} after {took * 1000:.0f} ms")
            assert refusal["status"] == 401 and refusal["code"] == "token_revoked", refusal
            assert took < PROPAGATION_LIMIT_S


async def test_a_gateway_credential_revoked_through_one_ingest_replica_cannot_upload_through_the_other(
    pg_url: str, influxdb_settings: dict[str, str], tmp_path: Path
) -> None:
    """Both ingest replicas take the gateway's uploads (and remember its credential); the credential
    is revoked with the first replica's access database (as ``hems principals gateway revoke`` on
    that host would); the second refuses the next upload within a second (NOTIFY, not a poll)."""
    env = {
        **os.environ,
        "HEMS_DATA_DIR": str(tmp_path / "data"),
        **{f"HEMS_{k.upper()}": v for k, v in influxdb_settings.items()},
    }
    issued = GatewayCredentials(pg_url)
    info, credential = issued.issue(["hh-gw"])
    _, kept_credential = issued.issue(["hh-kept"])
    issued.close()
    ts = itertools.count(int(time.time()) * 10**9, 10**9)

    def upload(base: str, text: str = credential, household: str = "hh-gw") -> tuple[int, dict[str, object]]:
        line = f"electricity,device=m,household={household},source=echonet power_w=1.5 {next(ts)}"
        return post_batch(base, text, line.encode())

    async with AsyncExitStack() as stack:
        a, b = [await stack.enter_async_context(_replica(env, pg_url, "--role", "ingest")) for _ in range(2)]
        for base in (a, b):  # remembered by both
            status, answer = await asyncio.to_thread(upload, base)
            assert status == 200 and answer["accepted"] == 1, answer
        revoker = GatewayCredentials(pg_url)  # replica A's side of the access database
        revoker.revoke(info.id)
        revoker.close()
        t0 = time.monotonic()
        while True:
            took = time.monotonic() - t0  # when this upload was sent (see _until_refused)
            status, answer = await asyncio.to_thread(upload, b)
            if status != 200 or time.monotonic() - t0 > 3 * PROPAGATION_LIMIT_S:
                break
            await asyncio.sleep(0.01)
        print(f"\ngateway credential revoked via A refused by ingest replica B after {took * 1000:.0f} ms")
        assert status == 401 and answer["code"] == "credential_revoked", answer
        assert took < PROPAGATION_LIMIT_S
        for base in (a, b):  # the revocation touched that credential only
            status, answer = await asyncio.to_thread(upload, base, kept_credential, "hh-kept")
            assert status == 200 and answer["accepted"] == 1, answer
            assert (await asyncio.to_thread(upload, base))[0] == 401
