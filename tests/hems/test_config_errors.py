"""The commands read one configuration file and refuse what they cannot use in one line, exit 2.

Real processes: what a person typing the command sees is the behaviour under test (a traceback or a
silent fallback to defaults is exactly the failure).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pipeline.points import Point
from pipeline.sqlite_schema import SCHEMA_VERSION
from pipeline.sqlite_store import SQLiteStore
from tests.loopback import free_port, free_prefix


def _hems(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hems", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_serve_with_a_mistyped_config_file_refuses_to_start(tmp_path: Path) -> None:
    """The bug: ``--config typo.toml`` silently served ./var/hems.sqlite with every default."""
    done = _hems("serve", "--config", "typo.toml", "--port", str(free_port()), cwd=tmp_path, timeout=30)
    _one_line_error(done, "hems serve: typo.toml: cannot read")
    assert not (tmp_path / "var").exists()


def test_a_wrong_setting_names_the_file_section_and_key(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text("[pipeline]\ninflux_url = 42\n")  # the bug: a None default skipped the type check
    _one_line_error(
        _hems("serve", "--config", str(site), cwd=tmp_path), f"{site}: pipeline.influx_url: expected str"
    )
    site.write_text("[demo]\nhomez = 2\n")
    _one_line_error(
        _hems("demo", "--config", str(site), cwd=tmp_path), f"{site}: demo.homez: unknown setting; known:"
    )
    site.write_text('[serve]\nworkers = "2"\n')
    _one_line_error(_hems("serve", "--config", str(site), cwd=tmp_path), "serve.workers: expected int")


def test_serve_takes_its_options_and_store_from_the_file(tmp_path: Path) -> None:
    store_path = tmp_path / "series.sqlite"
    port = free_port()
    site = tmp_path / "site.toml"
    site.write_text(
        f'[pipeline]\nsqlite_path = "{store_path}"\n\n'
        f'[serve]\nport = {port}\ndb = "{tmp_path / "access.sqlite"}"\npage_cache_mb = 0\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "hems", "serve", "--config", str(site)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert f"127.0.0.1:{port}" in proc.stdout.readline()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert store_path.exists()  # the [pipeline] store, created and migrated at start
    assert not (tmp_path / "var").exists()


def _newer_store(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.execute("CREATE TABLE points (household TEXT)")
    conn.commit()
    conn.close()


def test_serve_and_collect_refuse_a_store_from_a_newer_release(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _newer_store(data / "hems.sqlite")
    done = _hems(
        "serve", "--store", f"sqlite:{data / 'hems.sqlite'}", "--port", str(free_port()), cwd=tmp_path
    )
    _one_line_error(done, "hems serve:", "newer than this hems understands")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"version": 1, "homes": []}))
    done = _hems(
        "collect", "--manifest", str(manifest), "--data-dir", str(data), "--duration", "1", cwd=tmp_path
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "hems collect:" in done.stderr and "newer than this hems understands" in done.stderr


async def test_collect_migrates_an_old_store_before_it_polls(tmp_path: Path) -> None:
    """The migration runs at start (``Store.open``), not at the first write of a running collector."""
    data = tmp_path / "data"
    data.mkdir()
    store = SQLiteStore(data / "hems.sqlite")
    await store.write([Point("pv", "h1", "inv1", "modbus", 1_780_000_000 * 10**9, {"power_w": 1.0})])
    await store.close()
    conn = sqlite3.connect(data / "hems.sqlite")
    conn.execute("PRAGMA user_version = 0")  # as the unversioned release left it
    conn.commit()
    conn.close()
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"version": 1, "homes": []}))
    done = _hems(
        "collect", "--manifest", str(manifest), "--data-dir", str(data), "--duration", "0.5", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    conn = sqlite3.connect(data / "hems.sqlite")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_devices_take_their_options_from_the_file(tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    site = tmp_path / "site.toml"
    site.write_text(
        f"[devices]\nhomes = 2\nseed = 5\nmodbus_port = 0\nno_echonet = true\nduration = 0.5\n"
        f'manifest = "{manifest}"\naddress_prefix = "{free_prefix()}"\n'
    )
    started = time.monotonic()
    done = _hems("devices", "--config", str(site), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30
    written = json.loads(manifest.read_text())
    assert written["seed"] == 5 and len(written["homes"]) == 2
    site.write_text("[devices]\nhomes = 0.5\n")
    _one_line_error(
        _hems("devices", "--config", str(site), "--seed", "1", cwd=tmp_path), "devices.homes: expected int"
    )
