"""The package layering of ../shared/DESIGN.md, checked on what Python really loads.

Each check imports every module of a package in a fresh interpreter and lists which of our top-level
packages ended up loaded: the collector must never load the emulator, the emulator only the protocols
and the common and config leaves, and those three nothing but themselves.  A static scan then holds
the tree to one event-loop start helper.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = [
    p.rstrip("*")
    for p in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"][
        "include"
    ]
]

_PROBE = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
for info in pkgutil.walk_packages(package.__path__, sys.argv[1] + "."):
    if not info.name.endswith(("__main__",)):
        importlib.import_module(info.name)
ours = set(json.loads(sys.argv[2]))
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules} & ours)))
"""


def loaded_by(package: str) -> set[str]:
    """Our top-level packages loaded by importing every module of ``package``."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, package, json.dumps(OURS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(json.loads(out.stdout))


def test_the_packages_list_is_the_one_this_test_knows() -> None:
    assert set(OURS) == {
        "hems",
        "collector",
        "pipeline",
        "access",
        "devices",
        "protocols",
        "common",
        "seeds",
        "config",
    }


def test_the_collector_never_loads_the_emulator() -> None:
    loaded = loaded_by("collector")
    assert "devices" not in loaded
    assert "protocols" in loaded  # it reads the devices through the shared codecs


def test_the_emulator_loads_only_protocols_common_and_config() -> None:
    assert loaded_by("devices") <= {"devices", "protocols", "common", "config"}
    assert {"devices", "protocols", "common"} <= loaded_by("devices")


@pytest.mark.parametrize("leaf", ["protocols", "common", "config"])
def test_protocols_common_and_config_are_leaves(leaf: str) -> None:
    assert loaded_by(leaf) == {leaf}


@pytest.mark.parametrize("package", ["pipeline", "access", "seeds"])
def test_nothing_downstream_loads_the_emulator_or_the_protocols(package: str) -> None:
    assert not loaded_by(package) & {"devices", "protocols"}


def _imported(node: ast.Import | ast.ImportFrom) -> set[str]:
    if isinstance(node, ast.ImportFrom):
        return {node.module or ""}
    return {alias.name for alias in node.names}


def _starts_a_loop(tree: ast.AST) -> list[int]:
    """Lines that start an event loop themselves: asyncio.run / asyncio.Runner, or importing uvloop."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("run", "Runner"):
            if isinstance(node.value, ast.Name) and node.value.id == "asyncio":
                lines.append(node.lineno)
        elif isinstance(node, ast.Import | ast.ImportFrom) and "uvloop" in _imported(node):
            lines.append(node.lineno)
    return lines


def test_every_command_starts_its_loop_through_common_loop() -> None:
    offenders = {}
    for package in OURS:
        for path in (ROOT / package).rglob("*.py"):
            if path == ROOT / "common" / "loop.py":
                continue
            lines = _starts_a_loop(ast.parse(path.read_text(encoding="utf-8")))
            if lines:
                offenders[str(path.relative_to(ROOT))] = lines
    assert offenders == {}, "start the event loop with common.loop.run"
    assert _starts_a_loop(ast.parse((ROOT / "common" / "loop.py").read_text(encoding="utf-8")))


def test_readme_layout_lists_every_package() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout") :]
    for package in OURS:
        assert f"| `{package}/` |" in layout, package
