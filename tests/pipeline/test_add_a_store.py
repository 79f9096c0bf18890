"""The README's "Add a store" path: one module plus one registration puts a store through the whole
conformance suite, with nothing in the suite naming it.

The store is tests/pipeline/example_store.py; it is registered at run time by a pytest plugin of one
line, in a separate pytest run of the conformance suite (the suite collects the registry once, so the
registration must come before collection, as a built-in line in ``pipeline/stores.py`` does).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import stores
from pipeline.config import ConfigError, PipelineConfig
from tests.pipeline.example_store import MemoryStore

REPO = Path(__file__).resolve().parents[2]
SUITE = "tests/pipeline/test_store_conformance.py"
CROSS_CHECK = "test_every_store_returns_frames_identical_to_sqlite"
_RESULT = re.compile(r"^(\S+::(\w+)\[([^\]]*)\]) (PASSED|FAILED|ERROR|SKIPPED)", re.MULTILINE)


def _cases(output: str, store: str) -> dict[str, str]:
    """Test id with the store's name taken out -> outcome, for the cases of ``store``."""
    out = {}
    for _, name, params, outcome in _RESULT.findall(output):
        parts = params.split("-")
        if store in parts:
            parts.remove(store)
            out[f"{name}[{'-'.join(parts)}]"] = outcome
    return out


def test_a_store_registered_at_run_time_goes_through_the_conformance_suite(tmp_path: Path) -> None:
    assert "example" not in stores.names()  # not built in: only the registration below brings it in
    (tmp_path / "register_example_store.py").write_text(
        'from pipeline import stores\n\nstores.register("example", "tests.pipeline.example_store")\n'
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", SUITE, "-p", "register_example_store", "-p", "no:cacheprovider",
         "-v", "-m", "not influxdb", "-k", "sqlite or example"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    sqlite_cases = _cases(done.stdout, "sqlite")
    example_cases = _cases(done.stdout, "example")
    assert len(sqlite_cases) >= 20, done.stdout[-3000:]
    # Every case the built-in store runs, the registered one runs too, plus the comparison with SQLite.
    assert set(example_cases) == set(sqlite_cases) | {f"{CROSS_CHECK}[]"}
    assert set(example_cases.values()) == {"PASSED"}


async def test_a_registered_store_is_selected_by_the_pipeline_setting() -> None:
    stores.register("example_here", "tests.pipeline.example_store")
    try:
        cfg = PipelineConfig.from_mapping({"store": "example_here"}, env={})
        store = stores.open_store(cfg)
        assert isinstance(store, MemoryStore)
        assert stores.describe(cfg) == "memory" and stores.maintenance(store, cfg) is None
        with pytest.raises(ValueError, match="already registered"):
            stores.register("example_here", "tests.pipeline.example_store")
    finally:
        stores.unregister("example_here")
    with pytest.raises(
        ConfigError, match=r"pipeline\.store: unknown store 'example_here'; registered: sqlite"
    ):
        PipelineConfig.from_mapping({"store": "example_here"}, env={})
