"""``python -m collector.cli`` against a running fleet: JSON lines out, a clear error for bad input."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collector.cli import main
from devices.fleet import Fleet
from tests.collector.conftest import controller_address


async def test_cli_prints_readings_as_json_lines(fleet_factory: Callable[..., Any], tmp_path: Path) -> None:
    fleet: Fleet = await fleet_factory(1)
    manifest = fleet.write_manifest(tmp_path / "manifest.json")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector.cli", "--manifest", str(manifest), "--duration", "1.5",
        "--power-interval", "0.3", "--counter-interval", "0.3",
        "--echonet-bind", controller_address(fleet), "--health",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    rows = [json.loads(line) for line in out.decode().splitlines()]
    assert {r["device"] for r in rows} == {d["device"] for d in _devices(fleet)}
    assert all(r["household"] == fleet.homes[0].household_id for r in rows)
    assert all(r["ts"].endswith("Z") and r["fields"] for r in rows)
    assert "\tok\t" in err.decode()  # the health table


def _devices(fleet: Fleet) -> list[dict[str, Any]]:
    home = fleet.manifest()["homes"][0]
    return [*home["echonet"]["objects"], *home["modbus"]["devices"]]


def test_cli_reports_bad_config(tmp_path: Path, capsys: Any) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[collector]\nbogus = 1\n")
    assert main(["--config", str(bad), "--duration", "0"]) == 2
    assert "collector.bogus" in capsys.readouterr().err
