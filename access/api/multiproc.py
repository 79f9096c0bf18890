"""``/metrics`` across ``hems serve --workers N``: prometheus_client's multiprocess mode.

Without it each worker answered a scrape with its own counters only, so a scrape saw whichever
worker the kernel handed the connection to.  Now every worker writes its totals into its own files in
one shared directory (``PROMETHEUS_MULTIPROC_DIR``, in prometheus_client's multiprocess format), and
the worker that answers a scrape merges every worker's files (``MultiProcessCollector``): counters and
histograms are summed over workers (a worker that stopped keeps its totals, as counters must), the
worker gauge lists each live worker by pid, and the other gauges are summed, or taken at their worst,
over live workers.

The hot path is unchanged: handlers still count into plain fields (``access.api.metrics.Metrics``)
and each worker writes its totals every ``PUBLISH_EVERY_S`` and right before it answers a scrape, so
a scrape sees another worker's counts at most that old.  The values are written with
``prometheus_client.values.MultiProcessValue``, the storage its own metric objects use in this mode.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.values import MultiProcessValue

ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
PUBLISH_EVERY_S: Final = 1.0
# How each gauge is merged over workers (prometheus_client's multiprocess modes).
GAUGE_MODES: Final[dict[str, str]] = {
    "hems_api_worker": "liveall",  # one series per live worker, labelled with its pid
    "hems_page_cache_bytes": "livesum",
    "hems_store_up": "livemin",  # down if any worker's last ping failed
    "hems_store_ping_seconds": "livemax",
}


def prepare(directory: Path) -> None:
    """Make ``directory`` the shared one for this process and the workers it starts (they inherit the
    environment), emptied of a previous run's files."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in glob.glob(str(directory / "*.db")):
        os.remove(stale)
    os.environ[ENV] = str(directory)


def forget(pid: int) -> None:
    """A worker is gone: its live gauges leave the merge (its counters stay)."""
    if os.environ.get(ENV):
        mark_process_dead(pid)


class SharedMetrics:
    """This process's side of the shared directory: ``publish`` writes, ``collect`` merges."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._value_class = MultiProcessValue()
        self._values: dict[tuple[str, ...], Any] = {}

    def publish(self, families: Iterable[Metric]) -> None:
        """Write this process's current totals (the families ``Metrics`` renders)."""
        for family in families:
            if family.type == "histogram":
                samples = _per_bucket(family)
                mode = ""
            elif family.type == "counter":
                samples = [
                    (s.name, s.labels, s.value) for s in family.samples if not s.name.endswith("_created")
                ]
                mode = ""
            elif family.type == "gauge":
                mode = GAUGE_MODES.get(family.name, "livesum")
                # The merge labels each live worker with its pid itself.
                samples = [
                    (s.name, {k: v for k, v in s.labels.items() if k != "pid"}, s.value)
                    for s in family.samples
                ]
            else:
                continue
            for name, labels, value in samples:
                self._value(family, name, labels, mode).set(float(value))

    def _value(self, family: Metric, name: str, labels: dict[str, str], mode: str) -> Any:
        key = (family.type, family.name, name, mode, *sorted(f"{k}={v}" for k, v in labels.items()))
        value = self._values.get(key)
        if value is None:
            names = tuple(sorted(labels))
            value = self._values[key] = self._value_class(
                family.type,
                family.name,
                name,
                names,
                tuple(labels[n] for n in names),
                family.documentation,
                multiprocess_mode=mode,
            )
        return value

    def collect(self) -> Iterator[Metric]:
        yield from MultiProcessCollector.merge(_readable_files(self.directory), accumulate=True)


# A multiprocess file starts with 8 bytes saying how much of it is used.  A worker creates its file
# empty and sizes it a moment later; prometheus_client's merge fails on a file caught in between, and
# the scrape with it.  Such a file holds no value yet, so leaving it out of this merge loses nothing.
_HEADER_BYTES: Final = 8


def _readable_files(directory: Path) -> list[str]:
    files = []
    for name in glob.glob(str(directory / "*.db")):
        try:
            if os.path.getsize(name) >= _HEADER_BYTES:
                files.append(name)
        except FileNotFoundError:  # a dead worker's live gauge file, removed since the glob
            continue
    return files


def _per_bucket(family: Metric) -> list[tuple[str, dict[str, str], float]]:
    """A histogram as the multiprocess files hold it: each bucket's own count (the merge adds them up
    again, over buckets and workers) and the sum; the count follows from the buckets."""
    out: list[tuple[str, dict[str, str], float]] = []
    previous = 0.0
    for s in family.samples:
        if s.name.endswith("_bucket"):
            out.append((s.name, dict(s.labels), s.value - previous))
            previous = s.value
        elif s.name.endswith("_sum"):
            out.append((s.name, dict(s.labels), s.value))
    return out
