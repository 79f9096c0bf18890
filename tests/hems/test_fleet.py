"""The deployed fleet with real parts only: ``hems serve --role ingest`` replicas (separate processes)
on one real influxd, a ``hems collect`` home gateway polling emulated homes (``hems devices``) and
uploading from its spool, ``hems principals`` issuing and revoking gateway credentials.

* the fleet is cut (both replicas stopped), the gateway is restarted while it is away, the fleet comes
  back: every reading the gateway acknowledged is in InfluxDB exactly once, equal, point for point,
  to the copy the gateway kept in its embedded store;
* a gateway over its request rate is answered 429 and still delivers everything;
* a forged household is refused with problem+json, logged by the replica and counted;
* a credential revoked with ``hems principals`` is refused by another replica within 1 s;
* a replica with ``--workers 2``: any worker's ``/metrics`` counts the uploads both took.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.influx_store import InfluxStore
from pipeline.query import QUERYABLE_FIELDS, SeriesQuery
from pipeline.sqlite_store import SQLiteStore
from seeds.vocabulary import STORED_CATEGORIES
from tests.influx_server import InfluxServer
from tests.ingest_client import post_batch
from tests.loopback import free_port, free_prefix

pytestmark = [pytest.mark.influxdb, pytest.mark.slow]


def hems(*args: str) -> list[str]:
    return [sys.executable, "-m", "hems", *args]


@dataclass
class Proc:
    """A process with its output in a file (read at any time, also after it ended)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.output()[-3000:]}")
            assert time.monotonic() < deadline, (
                f"{self.name}: no {text!r} in {timeout} s:\n{self.output()[-3000:]}"
            )
            time.sleep(0.1)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self.proc = None
        return code

    def finish(self, timeout: float) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self.proc = None
        return code


@dataclass
class World:
    tmp: Path
    influx: InfluxServer
    bucket: str
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.tmp / "access.sqlite"

    def principals(self, *args: str) -> str:
        done = subprocess.run(
            hems("principals", "--db", str(self.db), *args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def issue(self, *households: str) -> tuple[str, str]:
        args = [a for h in households for a in ("--household", h)]
        text = self.principals("gateway", "issue", *args).strip().splitlines()[-1]
        return text, text.split("_")[1]

    def replica(
        self,
        name: str,
        port: int,
        config: Path | None = None,
        reuse_port: bool = False,
        workers: int = 1,
    ) -> Proc:
        argv = hems(
            "serve", "--role", "ingest", "--store", "influx", "--host", "127.0.0.1", "--port", str(port),
            "--db", str(self.db), "--spool-dir", str(self.tmp / "ingest-spool"),
        )  # fmt: skip
        if config is not None:
            argv += ["--config", str(config)]
        if reuse_port:
            argv.append("--reuse-port")
        if workers > 1:
            argv += ["--workers", str(workers)]
        proc = Proc(name, argv, self.env, self.tmp / f"{name}.log").start()
        self.procs.append(proc)
        deadline = time.monotonic() + 60
        proc.wait_for("serving on")
        while proc.output().count("serving on") < workers:  # every worker says when it listens
            assert time.monotonic() < deadline, proc.output()[-3000:]
            time.sleep(0.1)
        return proc

    def gateway_env(self, credential: str) -> dict[str, str]:
        """A home gateway's environment: its credential, and nothing of the fleet's store."""
        env = {k: v for k, v in self.env.items() if not k.startswith("HEMS_INFLUX_")}
        return {**env, "HEMS_GATEWAY_CREDENTIAL": credential}

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, argv, env or self.env, self.tmp / f"{name}.log").start()
        self.procs.append(proc)
        return proc


@pytest.fixture
def world(tmp_path: Path, influxdb: InfluxServer, influx_bucket: str) -> Iterator[World]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEMS_")}
    env.update(
        HEMS_INFLUX_URL=influxdb.url,
        HEMS_INFLUX_ORG=influxdb.org,
        HEMS_INFLUX_BUCKET=influx_bucket,
        HEMS_INFLUX_TOKEN=influxdb.token,
        HEMS_DATA_DIR=str(tmp_path),
    )
    w = World(tmp_path, influxdb, influx_bucket, env)
    try:
        yield w
    finally:
        for proc in reversed(w.procs):
            proc.stop()


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, flags=re.M)
    return float(found.group(1)) if found else 0.0


def gateway_config(manifest: dict[str, Any], prefix: str, path: Path, **fleet: float) -> Path:
    """The TOML a real gateway is installed with (deploy/gateway.toml), for the emulated homes."""
    lines = [
        "[collector]",
        "power_interval_s = 0.5",
        "counter_interval_s = 1.0",
        f'echonet_bind = "{prefix}.255.1"',
        # The meters' 30-minute values come again after a restart (same series and time: one point),
        # which would make "readings acknowledged" larger than "points": off, to count exactly.
        "fixed_time_readings = false",
        "",
        "[fleet]",
        *(f"{k} = {v}" for k, v in fleet.items()),
    ]
    for home in manifest["homes"]:
        lines += ["", "[[households]]", f'id = "{home["household"]}"', f'address = "{home["address"]}"']
        lines.append(f"modbus_port = {home['modbus']['port']}")
        devices = [
            f'{{ device = "{d["device"]}", protocol = "modbus", unit_id = {d["unit_id"]}, '
            f'category = "{d["category"]}" }}'
            for d in home["modbus"]["devices"]
        ] + [
            f'{{ device = "{o["device"]}", protocol = "echonet", eoj = "{o["eoj"]}", '
            f'category = "{o["category"]}" }}'
            for o in home["echonet"]["objects"]
        ]
        lines.append("devices = [\n  " + ",\n  ".join(devices) + ",\n]")
    path.write_text("\n".join(lines) + "\n")
    return path


def start_homes(world: World, homes: int) -> tuple[dict[str, Any], str]:
    prefix = free_prefix()
    manifest = world.tmp / "manifest.json"
    argv = ["devices", "--homes", str(homes), "--seed", "21", "--speed", "60", "--address-prefix", prefix]
    world.spawn("devices", hems(*argv, "--modbus-port", str(free_port()), "--manifest", str(manifest)))
    deadline = time.monotonic() + 60
    while not (manifest.exists() and manifest.stat().st_size > 0):
        assert time.monotonic() < deadline, world.procs[-1].output()
        time.sleep(0.1)
    return json.loads(manifest.read_text()), prefix


def gateway_argv(config: Path, url: str, data: Path, seconds: float) -> list[str]:
    """``hems collect`` as a home gateway: its configuration, the fleet's URL, its own copy kept."""
    argv = ["collect", "--config", str(config), "--upload-url", url, "--keep-local", "--data-dir", str(data)]
    return hems(*argv, "--duration", str(seconds))


def uploaded(output: str) -> tuple[int, int]:
    """(readings acknowledged, points left waiting in the spool) from a gateway's exit summary."""
    stored = int(output.split("readings: ")[1].split(" stored")[0])
    waiting = int(output.split("refused by the fleet")[1].split(" waiting")[0].strip(", "))
    return stored, waiting


def all_fields(households: tuple[str, ...], category: str) -> SeriesQuery:
    now = datetime.now(UTC)
    return SeriesQuery(
        households,
        category,
        tuple(sorted(QUERYABLE_FIELDS)),
        now - timedelta(days=2),
        now + timedelta(days=1),
    )


async def compare(world: World, local_path: Path, households: tuple[str, ...]) -> int:
    """Points in InfluxDB equal the gateway's own copy, category by category; returns how many."""
    influx = InfluxStore(world.influx.url, world.influx.org, world.bucket, world.influx.token)
    local = SQLiteStore(local_path)
    total = 0
    try:
        for category in STORED_CATEGORIES:  # the device health series too
            mine = await local.query(all_fields(households, category))
            theirs = await influx.query(all_fields(households, category))
            assert theirs.height == mine.height, category
            assert theirs.equals(mine), category
            total += mine.height
    finally:
        await influx.close()
        await local.close()
    return total


def test_a_fleet_outage_and_a_gateway_restart_lose_and_duplicate_nothing(world: World) -> None:
    manifest, prefix = start_homes(world, 2)
    households = tuple(h["household"] for h in manifest["homes"])
    credential, _ = world.issue(*households)
    port = free_port()
    replicas = [world.replica(f"ingest-{i}", port, reuse_port=True) for i in range(2)]
    config = gateway_config(
        manifest, prefix, world.tmp / "gateway.toml", upload_interval_s=0.5, upload_backoff_max_s=1.0
    )
    data = world.tmp / "gateway"
    gw_env = world.gateway_env(credential)
    url = f"http://127.0.0.1:{port}"

    def gateway(name: str, seconds: float) -> Proc:
        return world.spawn(name, gateway_argv(config, url, data, seconds), gw_env)

    first = gateway("gateway-1", 14)
    time.sleep(6)
    assert sum(asyncio.run(counts(world, households)).values()) > 0  # uploads are arriving
    for r in replicas:  # the fleet is cut
        assert r.stop() == 0
    assert first.finish(60) == 0  # the gateway stops while the fleet is away...
    stored_1, waiting_1 = uploaded(first.output())
    assert stored_1 > 0 and waiting_1 > 0, first.output()[-2000:]  # ...with readings in its spool
    second = gateway("gateway-2", 16)  # ...and starts again from that spool
    time.sleep(4)
    replicas = [
        world.replica(f"ingest-{i}-again", port, reuse_port=True) for i in range(2)
    ]  # the fleet is back
    assert second.finish(90) == 0
    stored_2, waiting_2 = uploaded(second.output())
    assert waiting_2 == 0, second.output()[-2000:]
    total = asyncio.run(compare(world, data / "hems.sqlite", households))
    assert total == stored_1 + stored_2  # every acknowledged reading, once


def test_a_gateway_over_its_rate_gets_429_and_still_delivers_everything(world: World) -> None:
    manifest, prefix = start_homes(world, 1)
    households = tuple(h["household"] for h in manifest["homes"])
    credential, _ = world.issue(*households)
    limits = world.tmp / "fleet.toml"
    limits.write_text("[fleet]\ningest_rate_per_s = 0.5\ningest_burst = 1.0\n")
    port = free_port()
    replica = world.replica("ingest", port, config=limits)
    url = f"http://127.0.0.1:{port}"
    config = gateway_config(
        manifest, prefix, world.tmp / "gateway.toml", upload_interval_s=0.25, upload_backoff_max_s=1.0
    )
    data = world.tmp / "gateway"
    gw_env = world.gateway_env(credential)
    gw = world.spawn("gateway", gateway_argv(config, url, data, 10), gw_env)
    assert gw.finish(60) == 0
    stored, waiting = uploaded(gw.output())
    # Told to wait while stopping, the gateway waits (a short Retry-After) and delivers its last batch.
    assert waiting == 0, gw.output()[-2000:]
    limited = metric(url, 'hems_ingest_requests_total{outcome="rate_limited"}')
    ok = metric(url, 'hems_ingest_requests_total{outcome="stored"}')
    assert limited >= 1, replica.output()[-2000:]
    # A gateway that honours Retry-After asks again only when a token is back: at most one 429 per
    # success (one that retried on its own backoff would collect several).
    assert limited <= ok + 1, (limited, ok)
    assert asyncio.run(compare(world, data / "hems.sqlite", households)) == stored


def test_a_forged_household_is_refused_logged_and_counted_by_a_replica(world: World) -> None:
    credential, cid = world.issue("hh-mine")
    port = free_port()
    replica = world.replica("ingest", port)
    url = f"http://127.0.0.1:{port}"
    ts = int(time.time()) * 10**9
    mine = f"electricity,device=m,household=hh-mine,source=echonet power_w=1.0 {ts}"
    theirs = f"electricity,device=m,household=hh-theirs,source=echonet power_w=2.0 {ts}"
    status, answer = post_batch(url, credential, f"{mine}\n{theirs}".encode())
    assert status == 403 and answer["code"] == "household_not_bound"
    assert metric(url, 'hems_ingest_requests_total{outcome="household_not_bound"}') == 1
    replica.wait_for(f"gateway credential {cid}", timeout=10)
    assert "hh-theirs" in replica.output()
    status, _ = post_batch(url, credential, mine.encode())  # the same credential, its own household: stored
    assert status == 200
    assert asyncio.run(counts(world, ("hh-mine", "hh-theirs"))) == {"hh-mine": 1, "hh-theirs": 0}


async def counts(world: World, households: tuple[str, ...]) -> dict[str, int]:
    influx = InfluxStore(world.influx.url, world.influx.org, world.bucket, world.influx.token)
    try:
        return {h: (await influx.query(all_fields((h,), "electricity"))).height for h in households}
    finally:
        await influx.close()


def test_a_credential_revoked_with_hems_principals_is_refused_by_the_other_replica_within_1s(
    world: World,
) -> None:
    credential, cid = world.issue("hh-a")
    ports = free_port(), free_port()
    for i, port in enumerate(ports):
        world.replica(f"ingest-{i}", port)
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    line = "electricity,device=m,household=hh-a,source=echonet power_w={v} {ts}"
    t = int(time.time()) * 10**9
    for n, url in enumerate(urls):  # both replicas verified (and remember) the credential
        assert post_batch(url, credential, line.format(v=n, ts=t + n).encode())[0] == 200
    world.principals("gateway", "revoke", cid)
    revoked = time.monotonic()
    refused_at = {}
    for n in range(200):
        for url in urls:
            if url not in refused_at:
                status, answer = post_batch(url, credential, line.format(v=n, ts=t + 10 + n).encode())
                if status == 401:
                    assert answer["code"] == "credential_revoked"
                    refused_at[url] = time.monotonic() - revoked
        if len(refused_at) == 2:
            break
        time.sleep(0.02)
    assert set(refused_at) == set(urls)
    assert max(refused_at.values()) < 1.0, refused_at


def test_an_ingest_replica_with_two_workers_counts_every_workers_uploads(world: World) -> None:
    """Each upload is a fresh connection, so the kernel spreads them over both workers; a scrape
    (answered by either) counts all of them, as the API's /metrics does (before, only its own)."""
    credential, _ = world.issue("hh-a")
    port = free_port()
    world.replica("ingest", port, workers=2)
    url = f"http://127.0.0.1:{port}"
    t = int(time.time()) * 10**9
    uploads = 40
    for n in range(uploads):
        line = f"electricity,device=m,household=hh-a,source=echonet power_w={n}.0 {t + n}"
        assert post_batch(url, credential, line.encode())[0] == 200
    stored = 'hems_ingest_requests_total{outcome="stored"}'
    deadline = time.monotonic() + 5  # the other worker publishes its totals every second
    while metric(url, stored) < uploads:
        assert time.monotonic() < deadline, metric(url, stored)
        time.sleep(0.2)
    for _ in range(10):  # fresh connections: scrapes answered by both workers agree
        assert metric(url, stored) == uploads
        assert metric(url, "hems_ingest_points_accepted_total") == uploads
    assert asyncio.run(counts(world, ("hh-a",))) == {"hh-a": uploads}
