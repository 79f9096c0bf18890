"""deploy/gateway/ (the systemd unit and the configuration a home gateway is installed with) agrees
with the code: the configuration loads, the unit runs a command that exists with options it takes,
the credential reaches the process as a file and never as a flag, and that command starts and stops
cleanly with it (and refuses to start without it, saying where it looked)."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from collector.config import from_toml_dict
from pipeline.config import PipelineConfig
from pipeline.fleet_config import CREDENTIAL_FILE_ENV, FleetConfig
from tests.influx_server import REPO_ROOT
from tests.loopback import free_port

GATEWAY = REPO_ROOT / "deploy" / "gateway"
UNIT = GATEWAY / "hems-gateway.service"
CONFIG = GATEWAY / "gateway.toml"


def unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def exec_start() -> list[str]:
    return unit()["Service"]["ExecStart"].split()


def test_the_example_configuration_loads_with_every_loader() -> None:
    doc = tomllib.loads(CONFIG.read_text())
    collector = from_toml_dict(doc, str(CONFIG))
    assert collector.devices and {d.household for d in collector.devices} == {"hh-0123456789"}
    fleet = FleetConfig.load(CONFIG, env={})
    assert fleet.upload_url is not None and fleet.upload_url.startswith("https://")
    assert fleet.credential_file is None  # the credential is never in the configuration
    PipelineConfig.load(CONFIG, env={})


def test_the_unit_runs_hems_collect_with_options_it_takes() -> None:
    argv = exec_start()
    assert argv[0].endswith("/hems") and argv[1] == "collect"
    helped = subprocess.run(
        [sys.executable, "-m", "hems", "collect", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for option in (a for a in argv if a.startswith("--")):
        assert option in helped, option
    assert argv[argv.index("--config") + 1] == "/etc/hems/gateway.toml"
    # The state directory systemd creates is the one hems collect keeps its spool in.
    assert argv[argv.index("--data-dir") + 1] == "/var/lib/" + unit()["Service"]["StateDirectory"]


def test_the_credential_is_a_file_systemd_hands_over_never_a_flag() -> None:
    service = unit()["Service"]
    name, _, source = service["LoadCredential"].partition(":")
    assert source == "/etc/hems/gateway.credential"
    assert service["Environment"] == f"{CREDENTIAL_FILE_ENV}=%d/{name}"  # %d: the credentials directory
    assert not any("hemsgw_" in a or "credential" in a.lower() for a in exec_start())
    assert service["User"] != "root" and service["Restart"] == "always"


def test_the_units_command_starts_with_the_credential_file_and_refuses_without(tmp_path: Path) -> None:
    """The unit's command, paths moved here: the example configuration with the fleet at an address
    where nothing answers (readings wait in the spool) and devices that do not answer."""
    text = CONFIG.read_text().replace("https://ingest.example.net", f"http://127.0.0.1:{free_port()}")
    text = text.replace('"192.168.1.20"', '"127.0.0.1"').replace(
        "modbus_port = 502", f"modbus_port = {free_port()}"
    )
    text = re.sub(r'echonet_bind = "[^"]*"', 'echonet_bind = "127.0.0.1"', text)
    config = tmp_path / "gateway.toml"
    config.write_text(text)
    argv = exec_start()
    argv[argv.index("--config") + 1] = str(config)
    argv[argv.index("--data-dir") + 1] = str(tmp_path / "state")
    command = [sys.executable, "-m", "hems", *argv[1:], "--duration", "2"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEMS_")}
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2
    assert "HEMS_GATEWAY_CREDENTIAL" in refused.stderr and CREDENTIAL_FILE_ENV in refused.stderr
    credential = tmp_path / "credentials" / "gateway"
    credential.parent.mkdir()
    credential.write_text("hemsgw_0123456789abcdef_" + "x" * 43 + "\n")
    env[CREDENTIAL_FILE_ENV] = str(credential)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "collecting 6 devices into http://127.0.0.1" in done.stderr
    assert "uploaded: 0 points" in done.stderr
