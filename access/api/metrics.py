"""Prometheus text exposition, written by hand (format 0.0.4): a few counters and two histograms do
not justify a dependency, and the label sets here are small and fixed."""

from __future__ import annotations

import bisect
import os
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from access.api.pagecache import PageCache

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

CollectorHealth = Callable[[], Mapping[str, bool]]  # device id -> healthy
PipelineStats = Callable[[], Mapping[str, float]]  # e.g. {"spool_depth": 3, "points_written": 1e6}


@dataclass
class Histogram:
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        out = []
        running = 0
        sep = "," if labels else ""
        for bound, count in zip(self.buckets, self.counts, strict=False):
            running += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {running}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.n}')
        suffix = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{suffix} {self.total:.6f}")
        out.append(f"{name}_count{suffix} {self.n}")
        return out


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _metric_name(key: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in key)


@dataclass
class Metrics:
    requests: dict[tuple[str, str, int], int] = field(default_factory=lambda: defaultdict(int))
    decisions: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    refusals: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    ledger_records: int = 0
    decision_seconds: Histogram = field(default_factory=Histogram)
    store_seconds: Histogram = field(default_factory=Histogram)
    request_seconds: Histogram = field(default_factory=Histogram)
    store_ping_seconds: float | None = None
    store_up: bool | None = None

    def render(
        self,
        collector_health: CollectorHealth | None = None,
        pipeline_stats: PipelineStats | None = None,
        pages: PageCache | None = None,
    ) -> str:
        out: list[str] = [
            "# HELP hems_api_worker The process answering; with --workers each keeps its own counters.",
            "# TYPE hems_api_worker gauge",
            f'hems_api_worker{{pid="{os.getpid()}"}} 1',
        ]
        out += [
            "# HELP hems_api_requests_total HTTP requests by route, method and status.",
            "# TYPE hems_api_requests_total counter",
        ]
        for (route, method, status), n in sorted(self.requests.items()):
            out.append(
                f'hems_api_requests_total{{route="{_esc(route)}",method="{method}",status="{status}"}} {n}'
            )
        out += [
            "# HELP hems_api_request_seconds Time to answer a request.",
            "# TYPE hems_api_request_seconds histogram",
        ]
        out += self.request_seconds.lines("hems_api_request_seconds")
        out += [
            "# HELP hems_policy_decisions_total Policy decisions by outcome.",
            "# TYPE hems_policy_decisions_total counter",
        ]
        for outcome, n in sorted(self.decisions.items()):
            out.append(f'hems_policy_decisions_total{{outcome="{outcome}"}} {n}')
        out += [
            "# HELP hems_policy_refusals_total Refusals by reason code.",
            "# TYPE hems_policy_refusals_total counter",
        ]
        for reason, n in sorted(self.refusals.items()):
            out.append(f'hems_policy_refusals_total{{reason="{_esc(reason)}"}} {n}')
        out += [
            "# HELP hems_policy_decision_seconds Time spent deciding (policy only).",
            "# TYPE hems_policy_decision_seconds histogram",
        ]
        out += self.decision_seconds.lines("hems_policy_decision_seconds")
        out += [
            "# HELP hems_ledger_records_total Provision records written by this process.",
            "# TYPE hems_ledger_records_total counter",
            f"hems_ledger_records_total {self.ledger_records}",
        ]
        out += [
            "# HELP hems_store_query_seconds Time the store took to answer a series query.",
            "# TYPE hems_store_query_seconds histogram",
        ]
        out += self.store_seconds.lines("hems_store_query_seconds")
        if pages is not None:
            st = pages.stats
            out += [
                "# HELP hems_page_cache_hits_total Data pages answered from the page cache.",
                "# TYPE hems_page_cache_hits_total counter",
                f"hems_page_cache_hits_total {st.hits}",
                "# HELP hems_page_cache_misses_total Data pages queried and rendered (then cached).",
                "# TYPE hems_page_cache_misses_total counter",
                f"hems_page_cache_misses_total {st.misses}",
                "# HELP hems_page_cache_shared_total Requests that waited for a page being made.",
                "# TYPE hems_page_cache_shared_total counter",
                f"hems_page_cache_shared_total {st.shared}",
                "# HELP hems_page_cache_uncacheable_total Pages rendered uncached (store has no version).",
                "# TYPE hems_page_cache_uncacheable_total counter",
                f"hems_page_cache_uncacheable_total {st.uncacheable}",
                "# HELP hems_page_cache_bytes Bytes of rendered pages held.",
                "# TYPE hems_page_cache_bytes gauge",
                f"hems_page_cache_bytes {pages.bytes}",
            ]
        if self.store_up is not None:
            out += [
                "# HELP hems_store_up Whether the last store ping succeeded.",
                "# TYPE hems_store_up gauge",
                f"hems_store_up {int(self.store_up)}",
            ]
        if self.store_ping_seconds is not None:
            out += [
                "# HELP hems_store_ping_seconds Duration of the last store ping.",
                "# TYPE hems_store_ping_seconds gauge",
                f"hems_store_ping_seconds {self.store_ping_seconds:.6f}",
            ]
        if collector_health is not None:
            health = dict(collector_health())
            out += [
                "# HELP hems_collector_device_healthy 1 if the last poll of the device succeeded.",
                "# TYPE hems_collector_device_healthy gauge",
            ]
            for device, ok in sorted(health.items()):
                out.append(f'hems_collector_device_healthy{{device="{_esc(device)}"}} {int(ok)}')
            out += [
                "# TYPE hems_collector_devices gauge",
                f'hems_collector_devices{{state="healthy"}} {sum(1 for v in health.values() if v)}',
                f'hems_collector_devices{{state="unhealthy"}} {sum(1 for v in health.values() if not v)}',
            ]
        if pipeline_stats is not None:
            for key, value in sorted(pipeline_stats().items()):
                name = f"hems_pipeline_{_metric_name(key)}"
                out += [f"# TYPE {name} gauge", f"{name} {float(value)}"]
        return "\n".join(out) + "\n"
