"""Schemathesis against a real ``hems serve``: cases generated from the served OpenAPI document, sent
with a homeowner's, an installer's and an analyst's token, checked for server errors and for
responses that break the document (status codes, content types, headers, body schemas).

The run is bounded (``MAX_EXAMPLES`` per operation and phase, fixed seed) so it fits the test
command; ``schemathesis_hooks`` only repairs what the document cannot say (see there).  The case
count is printed and kept in ``artifacts/schemathesis/``; schemathesis runs in the test's temporary
directory, where it keeps its own cache.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from access.relationships import RelationshipStore
from access.tokens import TokenStore
from pipeline.sqlite_store import SQLiteStore
from tests.access.api_world import HOUSEHOLDS, TOKEN_PURPOSES, issue_token, populate, readings
from tests.loopback import free_port

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "schemathesis"
MAX_EXAMPLES = 20
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
# An installer, an analyst, a homeowner: in this order, since the homeowner's run suspends provision.
CALLERS = ("inst1", "ana", "alice")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], Path]]:
    """``hems serve`` on a data directory with the API tests' world and a day of readings."""
    data = tmp_path_factory.mktemp("st")
    db = data / "access.sqlite"
    rel = RelationshipStore(db)
    populate(rel)
    tokens = TokenStore(db)
    issued = {who: issue_token(tokens, rel, who, time.time()) for who in CALLERS}
    tokens.close()
    rel.close()

    async def fill() -> None:
        store = SQLiteStore(data / "series.sqlite")
        for household in HOUSEHOLDS:
            await store.write(readings(household, 288))
        await store.close()

    asyncio.run(fill())
    port = free_port()
    log = data / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hems", "serve", "--port", str(port), "--db", str(db),
             "--store", f"sqlite:{data / 'series.sqlite'}", "--rate", "0", "--insecure-cookies",
             # Generated cases set alert webhooks to made-up hosts: no round may send to them.
             "--alert-every", "0"],
            stdout=subprocess.PIPE, stderr=out, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert f"127.0.0.1:{port}" in line, (line, log.read_text())
            yield f"http://127.0.0.1:{port}", issued, log
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.mark.parametrize("who", CALLERS)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    server: tuple[str, dict[str, str], Path], who: str
) -> None:
    base, tokens, log = server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    report, har = ARTIFACTS / f"report-{who}.json", ARTIFACTS / f"requests-{who}.har"
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.hems.schemathesis_hooks",
        "HEMS_ST_PURPOSE": TOKEN_PURPOSES[who][0],
        "HEMS_ST_HOUSEHOLD": "h1",  # alice's home, installed by inst1
        "PYTHONPATH": str(REPO),
    }
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{base}/api/v1/openapi.json",
         "--checks", ",".join(CHECKS), "--max-examples", str(MAX_EXAMPLES), "--seed", "19",
         "--workers", "1", "--header", f"Authorization: Bearer {tokens[who]}", "--request-timeout", "30",
         "--report", "json,har", "--report-json-path", str(report), "--report-har-path", str(har)],
        capture_output=True, text=True, timeout=600, env=env, cwd=log.parent, check=False,
    )  # fmt: skip
    (ARTIFACTS / f"output-{who}.txt").write_text(run.stdout + run.stderr)
    assert report.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(report.read_text())
    cases = result["test_cases"]
    statuses = _statuses(har)
    print(f"schemathesis ({who}): {cases['generated']} cases, {cases['with_failures']} failed; {statuses}")
    assert result["failures"] == [] and result["errors"] == [], run.stdout[-5000:]
    assert cases["with_failures"] == 0 and cases["errored"] == 0
    assert result["operations"]["tested"] == result["operations"]["total"] >= 15
    assert run.returncode == 0, run.stdout[-5000:]
    assert cases["generated"] >= 500
    assert not any(status >= 500 for (_, status) in statuses)
    # Generated requests reach the handlers: the data endpoints answered some of them with data.
    reached = "stats" if who == "ana" else "series"
    assert statuses.get((reached, 200), 0) > 0, statuses
    assert "unhandled error" not in log.read_text()


def _statuses(har: Path) -> dict[tuple[str, int], int]:
    """(endpoint, status) -> how many of the run's requests got that answer."""
    counts: Counter[tuple[str, int]] = Counter()
    for entry in json.loads(har.read_text())["log"]["entries"]:
        path = entry["request"]["url"].split("?", 1)[0]
        named = (p for p in ("series", "daily", "stats", "ledger", "consent", "erasure") if f"/{p}" in path)
        endpoint = next(named, path.rsplit("/", 1)[-1])
        counts[(endpoint, int(entry["response"]["status"]))] += 1
    return dict(sorted(counts.items()))
