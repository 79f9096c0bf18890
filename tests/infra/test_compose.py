"""docker-compose.yml, the Dockerfile and the Grafana provisioning agree with the code.

Docker cannot run here, so these tests read the files the way compose and Grafana would and check
what would otherwise only break at deploy time: a missing secret, a port or volume typo, a service
started before InfluxDB or PostgreSQL is healthy, a CLI subcommand that does not exist, an InfluxDB
image of a different minor than the tests run, a PostgreSQL too old for the access database, and
dashboards naming categories or fields the pipeline never writes.  The last tests run every dashboard
query against the real test InfluxDB, and the api service's command against it and a real PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.reading import FIELD_UNITS
from seeds.vocabulary import SERIES_CATEGORIES
from tests.influx_server import DEFAULT_INFLUX_VERSION, REPO_ROOT, InfluxServer
from tests.ingest_client import post_batch
from tests.loopback import free_port
from tests.pg_server import PgServer

COMPOSE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
ENV_EXAMPLE = REPO_ROOT / "deploy" / ".env.example"
GRAFANA = REPO_ROOT / "deploy" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
DATASOURCE = GRAFANA / "provisioning" / "datasources" / "influxdb.yaml"
SECRETS = {
    "HEMS_INFLUX_TOKEN",
    "INFLUXDB_ADMIN_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
    "HEMS_ACCESS_DB_PASSWORD",
}
INFLUX_ENV = {"HEMS_INFLUX_TOKEN", "HEMS_INFLUX_ORG", "HEMS_INFLUX_BUCKET"}  # what Grafana reads too


# ---------------------------------------------------------------------- compose-style interpolation
class MissingVariable(ValueError):
    """A ``${VAR:?message}`` whose variable is unset: compose refuses to start."""


_VAR = re.compile(
    r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>(?:[^{}]|\{[^{}]*\})*))?\})"
)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Expand ``$$``, ``${V}``, ``${V:-d}``, ``${V-d}``, ``${V:?e}``, ``${V?e}`` (defaults may nest)."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group("name"), m.group("op"), m.group("arg") or ""
        value = env.get(name)
        unset = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return interpolate(arg, env) if unset else str(value)
        if op in (":?", "?"):
            if unset:
                raise MissingVariable(f"{name}: {arg}")
            return str(value)
        return value or ""

    return _VAR.sub(one, text)


def resolve(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(x, env) for x in node]
    if isinstance(node, dict):
        return {k: resolve(v, env) for k, v in node.items()}
    return node


def variables(text: str) -> set[str]:
    """Every variable a compose string reads, including those inside defaults."""
    found: set[str] = set()
    for m in _VAR.finditer(text):
        if m.group("name"):
            found |= {m.group("name")} | variables(m.group("arg") or "")
    return found


def env_example() -> dict[str, str]:
    """``NAME=value`` lines of .env.example, commented or not (a commented line documents a default)."""
    found: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if m:
            found[m.group(1)] = m.group(2)
    return found


FULL_ENV = {name: f"secret-{name.lower()}" for name in SECRETS}


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    """The compose file as it resolves with only the secrets set (every other setting at its default)."""
    resolved: dict[str, Any] = resolve(raw, FULL_ENV)
    return resolved


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    svc: dict[str, dict[str, Any]] = compose["services"]
    return svc


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d}/${EMPTY:-d}/${EMPTY-d}/${UNSET-d}/$${SET}", env) == "x/d//d/${SET}"
    assert interpolate("${UNSET:-${SET:?no}}", env) == "x"
    with pytest.raises(MissingVariable, match="UNSET: set it"):
        interpolate("${EMPTY:-${UNSET:?set it}}", env)
    assert variables("${A:-${B}} $$C") == {"A", "B"}


# ---------------------------------------------------------------------- compose file
def test_services_are_the_five_of_the_deployment(compose: dict[str, Any]) -> None:
    assert set(services(compose)) == {"influxdb", "postgres", "collector", "api", "ingest", "grafana"}


def test_every_secret_is_required_and_has_no_default(raw: dict[str, Any]) -> None:
    for secret in SECRETS:
        with pytest.raises(MissingVariable, match=secret):
            resolve(raw, {k: v for k, v in FULL_ENV.items() if k != secret})
        # Set but empty is as bad as unset (the ':?' form), so a blank .env line cannot slip through.
        with pytest.raises(MissingVariable, match=secret):
            resolve(raw, {**FULL_ENV, secret: ""})
    resolve(raw, FULL_ENV)  # and nothing else is required


def test_influxdb_image_is_the_minor_the_tests_run(compose: dict[str, Any]) -> None:
    image = services(compose)["influxdb"]["image"]
    name, _, tag = image.partition(":")
    assert name == "influxdb"
    wanted = ".".join(DEFAULT_INFLUX_VERSION.lstrip("v").split(".")[:2])
    assert tag == wanted or tag.startswith(wanted + "."), (image, DEFAULT_INFLUX_VERSION)
    script = (REPO_ROOT / "scripts" / "influxdb.sh").read_text()
    assert f'INFLUX_VER="${{INFLUX_VER:-{DEFAULT_INFLUX_VERSION}}}"' in script


def test_influxdb_first_start_setup_matches_what_the_clients_use(compose: dict[str, Any]) -> None:
    svc = services(compose)
    env = svc["influxdb"]["environment"]
    assert env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    for key in ("USERNAME", "PASSWORD", "ORG", "BUCKET", "ADMIN_TOKEN"):
        assert env[f"DOCKER_INFLUXDB_INIT_{key}"], key
    for client in ("collector", "api", "ingest"):
        cenv = svc[client]["environment"]
        assert set(cenv) >= INFLUX_ENV, client
        assert cenv["HEMS_INFLUX_TOKEN"] == env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
        assert cenv["HEMS_INFLUX_ORG"] == env["DOCKER_INFLUXDB_INIT_ORG"]
        assert cenv["HEMS_INFLUX_BUCKET"] == env["DOCKER_INFLUXDB_INIT_BUCKET"]


def _published(svc: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """container port -> (host address, host port) from 'addr:host:container' entries."""
    out: dict[int, tuple[str, int]] = {}
    for entry in svc.get("ports", []):
        addr, host, container = str(entry).rsplit(":", 2)
        out[int(container)] = (addr, int(host))
    return out


def test_ports_are_published_on_loopback_by_default(compose: dict[str, Any]) -> None:
    svc = services(compose)
    assert _published(svc["influxdb"]) == {8086: ("127.0.0.1", 8086)}
    assert _published(svc["api"]) == {8080: ("127.0.0.1", 8080)}
    assert _published(svc["ingest"]) == {8081: ("127.0.0.1", 8081)}
    assert _published(svc["grafana"]) == {3000: ("127.0.0.1", 3000)}
    assert _published(svc["collector"]) == {9464: ("127.0.0.1", 9464)}  # its /metrics
    collect = svc["collector"]["command"]
    assert collect[collect.index("--metrics-port") + 1] == "9464"  # listens where the mapping points
    assert collect[collect.index("--metrics-host") + 1] == "0.0.0.0"  # reachable from outside the container
    assert "ports" not in svc["postgres"]  # only the services on the compose network reach it
    assert "8080" in svc["api"]["command"]  # serve listens where the port mapping points
    assert "8081" in svc["ingest"]["command"]


def test_grafana_stays_on_loopback_when_the_api_is_exposed(raw: dict[str, Any]) -> None:
    """Grafana reads InfluxDB past the policy and the ledger: exposing the API (HEMS_BIND_ADDRESS) must
    not expose it; only its own setting, documented as operator-only, moves it."""
    exposed = services(resolve(raw, {**FULL_ENV, "HEMS_BIND_ADDRESS": "0.0.0.0"}))
    assert _published(exposed["api"]) == {8080: ("0.0.0.0", 8080)}
    assert _published(exposed["grafana"]) == {3000: ("127.0.0.1", 3000)}
    moved = services(resolve(raw, {**FULL_ENV, "GRAFANA_BIND_ADDRESS": "10.0.0.5"}))
    assert _published(moved["grafana"]) == {3000: ("10.0.0.5", 3000)}
    assert _published(moved["api"]) == {8080: ("127.0.0.1", 8080)}
    text = COMPOSE.read_text()
    assert "Grafana is for the operator only" in text
    readme = (REPO_ROOT / "deploy" / "README.md").read_text()
    assert "## Grafana is for the operator only" in readme and "/installer" in readme
    assert "operator only" in ENV_EXAMPLE.read_text() and "GRAFANA_BIND_ADDRESS" in env_example()


def test_state_lives_in_declared_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    mounts: dict[str, dict[str, str]] = {}
    for name, svc in services(compose).items():
        for v in svc.get("volumes", []):
            source, target = v.split(":")[:2]
            mounts.setdefault(name, {})[target] = source
            if not source.startswith((".", "/")):
                assert source in declared, (name, source)
            else:
                assert (REPO_ROOT / source).is_dir(), (name, source)
    assert mounts["influxdb"]["/var/lib/influxdb2"] in declared
    assert mounts["postgres"]["/var/lib/postgresql/data"] in declared
    assert mounts["collector"]["/var/lib/hems"] in declared  # the spool survives a container restart
    assert mounts["grafana"]["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    assert mounts["grafana"]["/etc/grafana/dashboards"] == "./deploy/grafana/dashboards"
    assert mounts["collector"]["/config"] == mounts["api"]["/config"] == mounts["ingest"]["/config"]
    # Gateway credentials are read from the access database in PostgreSQL: no file of the API's.
    assert "/var/lib/hems" not in mounts["ingest"]
    ingest = svc_command(compose, "ingest")
    assert mounts["ingest"][ingest[ingest.index("--spool-dir") + 1]] in declared


def svc_command(compose: dict[str, Any], name: str) -> list[str]:
    return [str(a) for a in services(compose)[name]["command"]]


def test_clients_wait_for_a_healthy_influxdb_and_postgresql(compose: dict[str, Any]) -> None:
    svc = services(compose)
    assert svc["influxdb"]["healthcheck"]["test"]
    assert svc["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    healthy = {"condition": "service_healthy"}
    for name in ("collector", "grafana"):
        assert svc[name]["depends_on"] == {"influxdb": healthy}, name
    for name in ("api", "ingest"):
        assert svc[name]["depends_on"] == {"influxdb": healthy, "postgres": healthy}, name


def test_the_api_uses_the_postgres_service_with_its_password_from_the_environment(
    compose: dict[str, Any],
) -> None:
    """The access database URL names the postgres service, its user and database, and no password:
    the password reaches libpq as PGPASSWORD (a URL would show it in logs and ps)."""
    from psycopg.conninfo import conninfo_to_dict

    from access.db import is_url
    from access.db_postgres import MIN_SERVER_VERSION

    svc = services(compose)
    pg, api = svc["postgres"]["environment"], svc["api"]["environment"]
    url = api["HEMS_ACCESS_DB"]
    assert is_url(url)
    parts = conninfo_to_dict(url)
    assert (parts["host"], parts["port"]) == ("postgres", "5432")
    assert (parts["user"], parts["dbname"]) == (pg["POSTGRES_USER"], pg["POSTGRES_DB"])
    assert "password" not in parts and pg["POSTGRES_PASSWORD"] not in url
    assert api["PGPASSWORD"] == pg["POSTGRES_PASSWORD"] == FULL_ENV["HEMS_ACCESS_DB_PASSWORD"]
    # The ingest replicas read the gateway credentials from the same database.
    ingest = svc["ingest"]["environment"]
    assert (ingest["HEMS_ACCESS_DB"], ingest["PGPASSWORD"]) == (url, api["PGPASSWORD"])
    # Every replica reads one key, kept on the api's volume.
    assert api["HEMS_KEY_FILE"].startswith(api["HEMS_DATA_DIR"] + "/")
    name, _, tag = svc["postgres"]["image"].partition(":")
    assert name == "postgres" and int(tag.split(".")[0]) >= MIN_SERVER_VERSION // 10000


def test_grafana_gets_every_variable_its_provisioning_reads(compose: dict[str, Any]) -> None:
    genv = services(compose)["grafana"]["environment"]
    used = variables(DATASOURCE.read_text())
    assert used == INFLUX_ENV
    assert used <= set(genv)
    assert genv["GF_SECURITY_ADMIN_PASSWORD"] == FULL_ENV["GRAFANA_ADMIN_PASSWORD"]
    # Without its own read-only token, Grafana falls back to the admin token.
    assert genv["HEMS_INFLUX_TOKEN"] == FULL_ENV["HEMS_INFLUX_TOKEN"]


def test_env_example_documents_every_setting_with_the_compose_default(raw: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    documented = env_example()
    assert variables(text) <= set(documented), variables(text) - set(documented)
    for secret in SECRETS:
        assert documented[secret] == "", f"{secret} must have no value in the example"
    for m in re.finditer(r"\$\{([A-Z0-9_]+):-([^}$]*)\}", text):
        name, default = m.group(1), m.group(2)
        assert documented[name] == default, (name, documented[name], default)


# ---------------------------------------------------------------------- the hems image and CLI
def _hems_help(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hems", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_collector_and_api_run_hems_subcommands(compose: dict[str, Any]) -> None:
    listed = re.findall(r"^  (\S+) ", _hems_help("--help").stdout, flags=re.M)
    svc = services(compose)
    assert svc["collector"]["command"][0] == "collect"
    assert svc["api"]["command"][0] == "serve"
    assert svc["ingest"]["command"][:3] == ["serve", "--role", "ingest"]
    for name in ("collector", "api", "ingest"):
        assert svc[name]["command"][0] in listed, (name, listed)
        assert svc[name]["build"] == "."
        assert svc[name]["image"] == svc["collector"]["image"]  # one image, two commands
        # Both reach the influxdb service on its container port, and keep state in their volume.
        assert svc[name]["environment"]["HEMS_INFLUX_URL"] == "http://influxdb:8086"
        assert svc[name]["environment"]["HEMS_DATA_DIR"] == "/var/lib/hems"
    collect = svc["collector"]["command"]
    assert collect[collect.index("--influx-url") + 1] == "http://influxdb:8086"
    assert collect[collect.index("--data-dir") + 1] == "/var/lib/hems"
    serve = svc["api"]["command"]
    assert serve[serve.index("--store") + 1] == "influx"
    assert serve[serve.index("--host") + 1] == "0.0.0.0"


@pytest.mark.parametrize("service", ["collector", "api", "ingest"])
def test_the_options_compose_passes_are_ones_the_subcommand_accepts(
    compose: dict[str, Any], service: str
) -> None:
    command = services(compose)[service]["command"]
    helped = _hems_help(command[0], "--help")
    if helped.returncode != 0:
        why = ((helped.stderr or helped.stdout).strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"'hems {command[0]} --help' does not run yet: {why}")
    for option in (a for a in command if a.startswith("--")):
        assert option in helped.stdout, f"hems {command[0]} has no {option}"


def test_dockerfile_installs_the_package_and_runs_hems() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", text, flags=re.M)
    assert re.search(r"^RUN pip install \.", text, flags=re.M)
    assert 'ENTRYPOINT ["hems"]' in text
    for pkg in ("hems", "collector", "pipeline", "access", "devices", "seeds"):
        assert f"COPY {pkg} ./{pkg}" in text, pkg  # every package setuptools is told to find


# ---------------------------------------------------------------------- Grafana
def dashboards() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(DASHBOARDS.glob("*.json")):
        d: dict[str, Any] = json.loads(p.read_text())
        out[d["title"]] = d
    return out


def queries(dashboard: dict[str, Any]) -> Iterator[str]:
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield target["query"]


def named(query: str, column: str) -> set[str]:
    """Values a Flux query compares ``r.<column>`` with (== or contains(..., set: [...]))."""
    found = set(re.findall(rf'r\.{column}\s*==\s*"([^"]+)"', query))
    for group in re.findall(rf"contains\(value: r\.{column}, set: \[([^\]]*)\]\)", query):
        found |= set(re.findall(r'"([^"]+)"', group))
    return found


def test_the_two_dashboards_exist_with_their_variable() -> None:
    ds = dashboards()
    assert set(ds) == {"Household usage", "Installer maintenance"}
    for d in ds.values():
        assert "household" in {v["name"] for v in d["templating"]["list"]}
        assert d["uid"]
    assert len({d["uid"] for d in ds.values()}) == 2


def test_dashboards_name_only_known_categories_fields_and_tags() -> None:
    tags = {"household", "device", "source", "_measurement", "_field", "_value", "_time", "name"}
    for title, d in dashboards().items():
        for q in queries(d):
            assert named(q, "_measurement") <= set(SERIES_CATEGORIES), (title, q)
            assert named(q, "_field") <= set(FIELD_UNITS), (title, q)
            assert set(re.findall(r"\br\.(\w+)", q)) <= tags, (title, q)


def test_dashboards_cover_what_each_audience_needs() -> None:
    ds = dashboards()
    usage = set().union(*(named(q, "_measurement") for q in queries(ds["Household usage"])))
    assert {"electricity", "pv", "battery", "water", "gas"} <= usage
    usage_fields = set().union(*(named(q, "_field") for q in queries(ds["Household usage"])))
    assert {"import_wh_total", "export_wh_total", "soc_pct", "volume_l_total"} <= usage_fields
    maint = list(queries(ds["Installer maintenance"]))
    assert any("pv" in named(q, "_measurement") and "power_w" in named(q, "_field") for q in maint)
    assert any({"pv", "battery"} <= named(q, "_measurement") and "fault" in named(q, "_field") for q in maint)
    assert any("last()" in q and "_time" in q for q in maint)


def test_dashboards_use_the_provisioned_data_source() -> None:
    provisioned = yaml.safe_load(DATASOURCE.read_text())["datasources"]
    assert [d["jsonData"]["version"] for d in provisioned] == ["Flux"]
    uid = provisioned[0]["uid"]
    for title, d in dashboards().items():
        for panel in d["panels"]:
            assert panel["datasource"]["uid"] == uid, (title, panel["title"])
        for var in d["templating"]["list"]:
            assert var["datasource"]["uid"] == uid, (title, var["name"])
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "hems.yaml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"


# ---------------------------------------------------------------------- dashboards against real Flux
# Relative to now: the dashboards look back a fixed span (30 days for the last-reading table).
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)


def _seed_lines() -> str:
    """Two households, an hour of 5-minute readings of every category the dashboards show."""
    lines = []
    for hh in ("hh-a", "hh-b"):
        for i in range(13):
            ts = int((T0 + timedelta(minutes=5 * i)).timestamp())
            lines += [
                f"electricity,household={hh},device=meter,source=echonet power_w={300 + i},"
                f"import_wh_total={1000 + 25 * i},export_wh_total={500 + 10 * i} {ts}",
                f"pv,household={hh},device=inv,source=modbus "
                f"power_w={1500 + i},energy_wh_total={9000 + 125 * i},"
                f'fault={"true" if i == 12 and hh == "hh-b" else "false"},running=true,state="mppt" {ts}',
                f"battery,household={hh},device=bat,source=modbus "
                f"soc_pct={40 + i},power_w=-200,fault=false {ts}",
                f"water,household={hh},device=wm,source=echonet volume_l_total={100 + 3 * i} {ts}",
            ]
            if hh == "hh-a" or i <= 6:  # hh-b's gas meter goes quiet half-way: the oldest last reading
                lines.append(f"gas,household={hh},device=gm,source=echonet volume_l_total={50 + i} {ts}")
    return "\n".join(lines)


# What hh-a's counters grow by over the seeded hour (12 five-minute steps) as the interval panels show
# it: 10-minute windows starting on the hour, so the first window's own step (T0 -> T0+5m) has no
# previous window to difference against and 11 of the 12 steps are counted.
PER_INTERVAL_TOTALS = {
    "Grid energy imported / exported per interval": {"import_wh_total": 11 * 25, "export_wh_total": 11 * 10},
    "PV generation per interval": {"energy_wh_total": 11 * 125},
    "Water use per interval": {"volume_l_total": 11 * 3},
    "Gas use per interval": {"volume_l_total": 11 * 1},
}


def _as_flux(query: str, bucket: str) -> str:
    """Substitute what Grafana would: its variables and the ``v`` record of time range and window."""
    q = query.replace("${bucket}", bucket).replace("${household:json}", '["hh-a", "hh-b"]')
    q = q.replace("${household}", "hh-a")
    assert "$" not in q, q
    start, stop = (T0 - timedelta(minutes=1)).isoformat(), (T0 + timedelta(hours=2)).isoformat()
    option = f"option v = {{timeRangeStart: {start}, timeRangeStop: {stop}, windowPeriod: 10m}}\n"
    # An option must precede the statements but follow the imports.
    imports = re.findall(r"^import .*$", q, flags=re.M)
    body = re.sub(r"^import .*$", "", q, flags=re.M)
    return "\n".join(imports) + "\n" + option + body


@pytest.mark.influxdb
def test_every_dashboard_query_runs_and_returns_rows(influxdb: InfluxServer, influx_bucket: str) -> None:
    from influxdb_client import InfluxDBClient
    from influxdb_client.client.write_api import SYNCHRONOUS

    with InfluxDBClient(url=influxdb.url, token=influxdb.token, org=influxdb.org, timeout=30_000) as client:
        with client.write_api(write_options=SYNCHRONOUS) as w:
            w.write(bucket=influx_bucket, record=_seed_lines(), write_precision="s")
        api = client.query_api()
        for title, d in dashboards().items():
            for var in d["templating"]["list"]:
                values = {
                    r.get_value() for t in api.query(_as_flux(var["query"], influx_bucket)) for r in t.records
                }
                assert values, (title, var["name"])
            for panel in d["panels"]:
                q = panel["targets"][0]["query"]
                rows = [r.values for t in api.query(_as_flux(q, influx_bucket)) for r in t.records]
                assert rows, (title, panel["title"])
                if panel["title"] in PER_INTERVAL_TOTALS:  # increases per window add up to the hour's
                    totals: dict[str, float] = {}
                    for r in rows:
                        totals[r["_field"]] = totals.get(r["_field"], 0) + r["_value"]
                    assert totals == PER_INTERVAL_TOTALS[panel["title"]], panel["title"]
                if panel["title"] == "Inverter and battery status (latest)":
                    faulted = {(r["household"], r["device"]) for r in rows if r.get("fault") is True}
                    assert faulted == {("hh-b", "inv")}
                if panel["title"] == "Last reading per device (oldest first)":
                    assert len(rows) == 10  # 5 devices x 2 households, one row each
                    assert (rows[0]["household"], rows[0]["device"]) == ("hh-b", "gm")
                    assert rows[0]["_time"] == T0 + timedelta(minutes=30)
                    assert all(r["_time"] == T0 + timedelta(hours=1) for r in rows[1:])


@contextlib.contextmanager
def running_service(
    compose: dict[str, Any],
    name: str,
    influxdb: InfluxServer,
    postgres: PgServer,
    pg_url: str,
    tmp_path: Path,
    bucket: str | None = None,
) -> Iterator[str]:
    """A service's command and environment as compose gives them, with only the addresses and paths
    moved to this host; yields its base URL once /healthz answers.  It must name the PostgreSQL
    access database it serves from."""
    svc = services(compose)[name]
    port = free_port()
    command = [str(a) for a in svc["command"]]
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    config = tmp_path / "hems.toml"
    config.write_text("")
    command[command.index("--config") + 1] = str(config)
    if "--spool-dir" in command:
        command[command.index("--spool-dir") + 1] = str(tmp_path / "spool")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEMS_")}
    env.update(svc["environment"])
    env.update(
        HEMS_INFLUX_URL=influxdb.url,
        HEMS_INFLUX_TOKEN=influxdb.token,
        HEMS_INFLUX_ORG=influxdb.org,
        HEMS_INFLUX_BUCKET=bucket or influxdb.bucket,
        HEMS_DATA_DIR=str(tmp_path),
        HEMS_ACCESS_DB=pg_url,
        PGPASSWORD=postgres.password,
        HEMS_KEY_FILE=str(tmp_path / "hems.key"),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "hems", *command],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        status = None
        while status is None and proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as r:
                    status = r.status
            except OSError:
                time.sleep(0.2)
        assert status == 200, f"hems {' '.join(command)} did not serve (exit {proc.poll()})"
        yield base
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert "serving on" in output and pg_url in output, output


@pytest.mark.influxdb
@pytest.mark.postgresql
def test_the_api_service_command_serves_from_the_real_influxdb_and_postgresql(
    compose: dict[str, Any], influxdb: InfluxServer, postgres: PgServer, pg_url: str, tmp_path: Path
) -> None:
    """The api container's command and environment, with only the addresses (and the key's path)
    moved to this host: it serves, and keeps its access database in PostgreSQL, not in a file."""
    with running_service(compose, "api", influxdb, postgres, pg_url, tmp_path):
        pass
    assert not (tmp_path / "access.sqlite").exists()
    import psycopg

    with psycopg.connect(pg_url, password=postgres.password) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM hems_schema")}
    assert {"relationships", "consent", "tokens", "ledger", "web", "signin", "alerts"} <= names


@pytest.mark.influxdb
@pytest.mark.postgresql
def test_the_ingest_service_command_stores_a_gateway_upload_in_the_real_influxdb(
    compose: dict[str, Any],
    influxdb: InfluxServer,
    influx_bucket: str,
    postgres: PgServer,
    pg_url: str,
    tmp_path: Path,
) -> None:
    """The ingest container's command and environment: a credential issued in the PostgreSQL access
    database (where the api replicas keep theirs) lets a gateway's upload into InfluxDB."""
    from access.gateways import GatewayCredentials

    creds = GatewayCredentials(pg_url)
    _, credential = creds.issue(["hh-compose"])
    creds.close()
    ts = int(time.time()) * 10**9
    body = f"electricity,device=m,household=hh-compose,source=echonet power_w=42.5 {ts}".encode()
    with running_service(compose, "ingest", influxdb, postgres, pg_url, tmp_path, influx_bucket) as base:
        status, answer = post_batch(base, credential, body)
        assert status == 200 and answer["accepted"] == 1
    from influxdb_client import InfluxDBClient

    with InfluxDBClient(url=influxdb.url, token=influxdb.token, org=influxdb.org) as client:
        flux = f'from(bucket: "{influx_bucket}") |> range(start: 0) |> filter(fn: (r) => r.device == "m")'
        values = [r.get_value() for t in client.query_api().query(flux) for r in t.records]
    assert values == [42.5]


if __name__ == "__main__":  # pragma: no cover - handy for checking a .env by hand
    print(json.dumps(resolve(yaml.safe_load(COMPOSE.read_text()), dict(os.environ)), indent=2))
