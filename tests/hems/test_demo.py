"""``hems demo`` (the README's main command) brings up homes, collection, store and API together,
and the sign-in text it prints is true: the printed token reads the printed URL."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.loopback import free_port, free_prefix


def test_demo_serves_what_it_prints(tmp_path: Path) -> None:
    port = free_port()
    # this run's own loopback /16 and Modbus port: two test runs at once never meet
    prefix = free_prefix()
    modbus_port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hems",
            "demo",
            "--homes",
            "1",
            "--history-days",
            "1",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "demo"),
            "--address-prefix",
            prefix,
            "--modbus-port",
            str(modbus_port),
            "--echonet-bind",
            f"{prefix}.255.1",
            "--power-interval",
            "1",
            "--summary-every",
            "2",
            "--duration",
            "40",
            "--control-port",
            str(free_port()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "devices ok" in line:  # the first live summary: everything is up
                break
        text = "".join(lines)
        assert "devices ok" in text, text
        control = re.search(r"fault injection: curl -X PUT -d '(.*)' (http://\S+)", text)
        assert control, text
        put = urllib.request.Request(control.group(2), data=control.group(1).encode(), method="PUT")
        with urllib.request.urlopen(put, timeout=10) as response:
            assert json.loads(response.read())["no_reply"] is True
        # /metrics answers under the demo (it was a 500: nested pipeline statistics), without household ids.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert response.status == 200 and "hems_pipeline_validation" in metrics
        assert "hh-" not in metrics
        token = re.search(r"Bearer (hems_\S+)'", text)
        url = re.search(r"'(http://127\.0\.0\.1:\d+/api/v1/households/\S+)'", text)
        assert token and url, text
        request = urllib.request.Request(url.group(1), headers={"Authorization": f"Bearer {token.group(1)}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.loads(response.read())
        assert response.status == 200
        # the default span is 24 h: hourly PV windows from the filled history plus the live data
        assert body["clause_ids"] == ["sps-2.2.4"]
        assert body["count"] >= 20, body
        assert max(v for v in body["columns"]["power_w"] if v is not None) > 0
        forged = urllib.request.Request(url.group(1), headers={"Authorization": "Bearer hems_forged_x"})
        try:
            urllib.request.urlopen(forged, timeout=10)
            raise AssertionError("a forged token was accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines) + out
    assert out.strip().endswith(" 0 lost")  # the run summary: nothing lost
