"""A real PostgreSQL server for the tests (one per test session, a fresh database per test), as fixtures.

Loaded from ``tests/conftest.py`` (``pytest_plugins``).  Why a real server: what the access database
must do there (advisory locks across connections, triggers with NOTIFY, identity columns, float and
text round trips the ledger's hashes depend on) is exactly what a mock would get wrong.

Binaries: ``$PG_BIN`` (the directory holding ``initdb`` and ``postgres``, printed by
``scripts/ci_postgres.sh``, which installs Debian's ``postgresql`` package when they are missing),
else the newest ``/usr/lib/postgresql/<version>/bin``, else ``initdb`` on the PATH.  Without them the
tests that need the server are *skipped visibly*; CI can demand it with ``CI=true
HEMS_REQUIRE_POSTGRES=1``.

The server runs in a temporary directory on a free loopback port (no Unix socket), with a random
password for its superuser ``hems_test`` given to the tests through ``PGPASSWORD`` (as a deployment
gives it).  PostgreSQL refuses to run as root: when the tests run as root, ``initdb`` and ``postgres``
run as ``$HEMS_PG_RUN_AS`` (default ``nobody``, which every Debian system has), who is given the
temporary directory.  ``fsync`` is off: the server is thrown away, and durability across a power cut
is PostgreSQL's, not something these tests can see.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.loopback import free_port

START_TIMEOUT_S = 60.0
SUPERUSER = "hems_test"
RUN_AS_ENV = "HEMS_PG_RUN_AS"


class PgServerError(RuntimeError):
    """initdb or postgres failed; the message carries the tail of its log."""


def _has_server(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / name, os.X_OK) for name in ("initdb", "postgres"))


def find_pg_bin() -> tuple[Path | None, str]:
    """``(directory with initdb and postgres, "")`` or ``(None, reason)``."""
    env_bin = os.environ.get("PG_BIN")
    if env_bin:
        if _has_server(Path(env_bin)):
            return Path(env_bin), ""
        return None, f"PG_BIN={env_bin} holds no initdb and postgres"
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for bin_dir in versions:
        if _has_server(bin_dir):
            return bin_dir, ""
    initdb = shutil.which("initdb")
    if initdb is not None and _has_server(Path(initdb).resolve().parent):
        return Path(initdb).resolve().parent, ""
    return None, "no PG_BIN, no /usr/lib/postgresql/*/bin and no initdb on the PATH (scripts/ci_postgres.sh)"


def _run_as() -> pwd.struct_passwd | None:
    """The user the server runs as when we are root (None: as ourselves)."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get(RUN_AS_ENV, "nobody")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise PgServerError(f"{RUN_AS_ENV}={name}: no such user to run PostgreSQL as (not as root)") from None


def _die_with_parent() -> None:
    """Runs in the child after it became the server's user: SIGINT (a fast shutdown) when the test
    process dies without cleaning up.  Set after the user change, which would clear it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGINT)  # 1 = PR_SET_PDEATHSIG


@dataclass
class PgServer:
    bin_dir: Path
    root: Path  # temporary directory: pgdata/, the log, the password file
    port: int
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    user: pwd.struct_passwd | None = None
    durable: bool = False  # fsync on, as deployed (benchmarks); the tests' server skips it
    host: str = "127.0.0.1"
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.root / "pgdata"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        """A URL as a deployment writes it: no password (that is in ``PGPASSWORD``)."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def _child_options(self) -> dict[str, Any]:
        if self.user is None:
            return {"preexec_fn": _die_with_parent}
        return {
            "user": self.user.pw_uid,
            "group": self.user.pw_gid,
            "extra_groups": [],
            "preexec_fn": _die_with_parent,
        }

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def initdb(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            for path in (self.root, pwfile):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        done = subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",  # the order of text comes from the schema (COLLATE "C"), not from here
            ],
            cwd=self.root,
            capture_output=True,
            check=False,
            **self._child_options(),
        )
        pwfile.unlink()
        if done.returncode != 0:
            raise PgServerError(f"initdb failed ({done.returncode}): {done.stderr.decode(errors='replace')}")

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        import psycopg

        command = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={self.host}",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=300",
            "-c",
            "shared_buffers=32MB" if not self.durable else "shared_buffers=256MB",
        ]
        if not self.durable:
            command += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        with self.log_path.open("ab") as log:
            if self.user is not None:
                os.chown(self.log_path, self.user.pw_uid, self.user.pw_gid)
            self._proc = subprocess.Popen(
                command, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, **self._child_options()
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code, self._proc = self._proc.returncode, None
                raise PgServerError(f"postgres exited with {code} during start:\n{self.log_tail()}")
            try:
                psycopg.connect(self.url(), password=self.password, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise PgServerError(f"postgres not ready after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 30.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # fast shutdown: open connections are ended
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def admin(self) -> Any:
        """A superuser connection (autocommit) to the ``postgres`` database."""
        import psycopg

        return psycopg.connect(self.url(), password=self.password, autocommit=True)

    def create_database(self, name: str) -> str:
        """A fresh database; returns its URL."""
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Dropped even while a test's forgotten connection is open (WITH (FORCE) ends them)."""
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_pg_server(bin_dir: Path, durable: bool = False) -> PgServer:
    """initdb in a new temporary directory, then start on a free port (another, if that one was taken
    between probing and binding by another test run on this machine)."""
    root = Path(tempfile.mkdtemp(prefix="hems-pg-"))
    try:
        server = PgServer(bin_dir, root, free_port(), user=_run_as(), durable=durable)
        server.initdb()
        for _ in range(3):
            try:
                server.start()
                return server
            except PgServerError as exc:
                if "could not bind" not in str(exc) and "already in use" not in str(exc):
                    raise
                server.port = free_port()
        server.start()
        return server
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _unavailable(reason: str) -> NoReturn:
    msg = f"PostgreSQL not available: {reason}"
    if os.environ.get("CI") == "true" and os.environ.get("HEMS_REQUIRE_POSTGRES") == "1":
        pytest.fail(msg + " (CI requires it: HEMS_REQUIRE_POSTGRES=1)", pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    """A running server for the whole session, its password in ``PGPASSWORD``; removed at the end."""
    bin_dir, reason = find_pg_bin()
    if bin_dir is None:
        _unavailable(reason)
    try:
        server = start_pg_server(bin_dir)
    except PgServerError as exc:
        _unavailable(str(exc))
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PGPASSWORD", server.password)
            yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


_NOT_NAME = re.compile(r"[^a-z0-9_]+")


def database_name(hint: str) -> str:
    return f"t_{_NOT_NAME.sub('_', hint.lower())[:40]}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pg_url(postgres: PgServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database for one test (named after it), dropped afterwards."""
    name = database_name(request.node.name)
    url = postgres.create_database(name)
    try:
        yield url
    finally:
        postgres.drop_database(name)
