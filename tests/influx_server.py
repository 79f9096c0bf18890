"""A real InfluxDB 2.x server (``influxd``) for the tests, as pytest fixtures.

Load it from ``tests/conftest.py`` with ``pytest_plugins = ["tests.influx_server"]``.

Why a real server: the store's contract (idempotent writes, Flux queries, data surviving a restart)
is exactly what a mock would get wrong.  The binary is built once by ``scripts/influxdb.sh``; when it
is absent the tests are *skipped visibly* (never passed silently), and CI can demand it with
``CI=true HEMS_REQUIRE_INFLUXDB=1``, which turns that skip into a failure.

Binary lookup: ``$INFLUXD_BIN``; else ``scripts/influxdb.sh`` when ``HEMS_BUILD_INFLUXD=1`` (may
build for 20-40 min); else the script's cache path ``${HEMS_CACHE:-~/.cache/hems}/influxd-<ver>/bin/influxd``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.loopback import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "influxdb.sh"
# The version the tests run against; docker-compose.yml must deploy the same minor.
DEFAULT_INFLUX_VERSION = "v2.9.1"
START_TIMEOUT_S = 90.0  # first start on a loaded 2-core machine can be slow (engine + sqlite migrations)


class InfluxServerError(RuntimeError):
    """influxd failed to start, stop or answer; the message carries the tail of its log."""


def influx_version() -> str:
    return os.environ.get("INFLUX_VER", DEFAULT_INFLUX_VERSION)


def cached_binary() -> Path:
    """Where ``scripts/influxdb.sh`` leaves the binary it builds."""
    cache = Path(os.environ.get("HEMS_CACHE") or Path.home() / ".cache" / "hems")
    return cache / f"influxd-{influx_version()}" / "bin" / "influxd"


def find_influxd() -> tuple[Path | None, str]:
    """Return ``(binary, "")`` or ``(None, reason)``; never builds unless ``HEMS_BUILD_INFLUXD=1``."""
    env_bin = os.environ.get("INFLUXD_BIN")
    if env_bin:
        p = Path(env_bin)
        if p.is_file() and os.access(p, os.X_OK):
            return p.resolve(), ""
        return None, f"INFLUXD_BIN={env_bin} is not an executable file"
    if os.environ.get("HEMS_BUILD_INFLUXD") == "1":
        done = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
        path = done.stdout.strip()
        if done.returncode == 0 and path:
            return Path(path), ""
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return None, f"scripts/influxdb.sh failed (exit {done.returncode}): {tail[0]}"
    cached = cached_binary()
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached, ""
    return None, (
        f"no INFLUXD_BIN and no build at {cached}; run scripts/influxdb.sh (or set HEMS_BUILD_INFLUXD=1)"
    )


def _die_with_parent() -> None:
    """Runs in the child before exec: on Linux, SIGTERM influxd when the process that started it
    dies without running its finalizers (kill -9, a CI timeout), so no server outlives its tests."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


@dataclass
class InfluxServer:
    """One influxd process with its own data directory; stop/start keep the data and the port so a
    test can check what survives a restart."""

    binary: Path
    data_dir: Path
    port: int
    org: str = "hems-test"
    bucket: str = "hems-test"
    token: str = field(default_factory=lambda: "test-" + uuid.uuid4().hex)
    username: str = "hems-admin"
    password: str = field(default_factory=lambda: uuid.uuid4().hex)
    org_id: str = ""
    host: str = "127.0.0.1"
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "influxd.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _command(self) -> list[str]:
        d = self.data_dir
        return [
            str(self.binary),
            "--bolt-path",
            str(d / "influxd.bolt"),
            "--engine-path",
            str(d / "engine"),
            "--sqlite-path",
            str(d / "influxd.sqlite"),
            "--http-bind-address",
            f"{self.host}:{self.port}",
            "--reporting-disabled",
            "--log-level",
            "warn",
        ]

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start influxd (same data and port as before) and wait until /health says it is ready."""
        if self.running:
            return
        # influxd reads INFLUXD_* from the environment and config.* from its cwd; neither may leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUXD_")}
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._command(),
                cwd=self.data_dir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise InfluxServerError(f"influxd exited with {code} during start:\n{self.log_tail()}")
            if self._healthy():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise InfluxServerError(f"influxd not healthy after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                return r.status == 200 and json.load(r).get("status") == "pass"
        except (OSError, ValueError):
            return False

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait, so the engine flushes its WAL as in a normal shutdown (SIGKILL if stuck)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise InfluxServerError(
                f"influxd ignored SIGTERM for {timeout:.0f} s:\n{self.log_tail()}"
            ) from None

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nothing answers (a hung server)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    # ------------------------------------------------------------------ HTTP API helpers
    def api(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        """Call the v2 HTTP API; returns the decoded JSON (or None for an empty answer)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Token {self.token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise InfluxServerError(f"{method} {path} -> HTTP {e.code}: {detail}") from None
        return json.loads(raw) if raw.strip() else None

    def setup(self) -> None:
        """Create the first user, org, bucket and the admin token (once per data directory)."""
        answer = self.api(
            "POST",
            "/api/v2/setup",
            {
                "username": self.username,
                "password": self.password,
                "org": self.org,
                "bucket": self.bucket,
                "token": self.token,
                "retentionPeriodSeconds": 0,
            },
            auth=False,
        )
        self.org_id = answer["org"]["id"]

    def create_bucket(self, name: str) -> str:
        """Create a bucket with infinite retention in the test org; returns its id."""
        answer = self.api(
            "POST", "/api/v2/buckets", {"orgID": self.org_id, "name": name, "retentionRules": []}
        )
        bucket_id: str = answer["id"]
        return bucket_id

    def delete_bucket(self, bucket_id: str) -> None:
        self.api("DELETE", f"/api/v2/buckets/{bucket_id}")

    def bucket_names(self) -> set[str]:
        query = urllib.parse.urlencode({"orgID": self.org_id, "limit": 100})
        answer = self.api("GET", f"/api/v2/buckets?{query}")
        return {b["name"] for b in answer["buckets"]}


def start_server(binary: Path) -> InfluxServer:
    """Start a fresh server in a new temp dir; retries on another port if the free one was taken
    between probing and binding (another test process on this shared machine)."""
    data_dir = Path(tempfile.mkdtemp(prefix="hems-influxd-"))
    last: InfluxServerError | None = None
    for _ in range(3):
        server = InfluxServer(binary=binary, data_dir=data_dir, port=free_port())
        try:
            server.start()
        except InfluxServerError as e:
            last = e
            if "address already in use" not in str(e):
                break
            continue
        try:
            server.setup()
        except BaseException:
            server.stop()
            shutil.rmtree(data_dir, ignore_errors=True)
            raise
        return server
    shutil.rmtree(data_dir, ignore_errors=True)
    assert last is not None
    raise last


def _unavailable(reason: str) -> NoReturn:
    msg = f"influxd 2.x not available: {reason}"
    if os.environ.get("CI") == "true" and os.environ.get("HEMS_REQUIRE_INFLUXDB") == "1":
        pytest.fail(msg + " (CI requires it: HEMS_REQUIRE_INFLUXDB=1)", pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def influxdb() -> Iterator[InfluxServer]:
    """A set-up influxd on 127.0.0.1 for the whole session; always stopped and removed at the end."""
    binary, reason = find_influxd()
    if binary is None:
        _unavailable(reason)
    server = start_server(binary)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


_NOT_NAME = re.compile(r"[^A-Za-z0-9_-]+")


@pytest.fixture
def influx_bucket(influxdb: InfluxServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty bucket for one test (named after it), deleted afterwards."""
    name = f"{_NOT_NAME.sub('-', request.node.name)[:40]}-{uuid.uuid4().hex[:8]}"
    bucket_id = influxdb.create_bucket(name)
    try:
        yield name
    finally:
        if not influxdb.running:  # a test that stopped the server must not leak its bucket
            influxdb.start()
        influxdb.delete_bucket(bucket_id)


@pytest.fixture
def influxdb_settings(influxdb: InfluxServer, influx_bucket: str) -> dict[str, str]:
    """``[pipeline]`` settings that select this server and a fresh bucket (the store conformance
    suite opens every store that names the ``influxdb`` service with these)."""
    return {
        "influx_url": influxdb.url,
        "influx_org": influxdb.org,
        "influx_bucket": influx_bucket,
        "influx_token": influxdb.token,
    }
