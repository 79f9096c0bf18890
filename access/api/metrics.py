"""The API's own counters and their Prometheus exposition.

Handlers count into plain fields (a dict increment costs far less than a labelled client metric on
the hot path); ``Metrics.render`` hands a snapshot to ``prometheus_client``, which writes the text
format, so escaping, types and nested statistics are its job rather than hand-written lines (a
hand-rendered nested pipeline statistic was the 500 under ``hems demo``)."""

from __future__ import annotations

import bisect
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from access.api.multiproc import SharedMetrics
from access.api.pagecache import PageCache
from pipeline.exposition import CollectorHealth, PipelineStats, operations_families

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


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


def _metric_name(key: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in key)


@dataclass
class Metrics:
    requests: dict[tuple[str, str, int], int] = field(default_factory=lambda: defaultdict(int))
    decisions: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    refusals: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    ledger_records: int = 0
    ledger_commits: int = 0  # the transactions they were written in (group commit)
    decision_seconds: Histogram = field(default_factory=Histogram)
    store_seconds: Histogram = field(default_factory=Histogram)
    request_seconds: Histogram = field(default_factory=Histogram)
    store_ping_seconds: float | None = None
    store_up: bool | None = None
    # ``hems serve --workers N``: every worker's counters merged (``access.api.multiproc``)
    shared: SharedMetrics | None = None

    def render(
        self,
        collector_health: CollectorHealth | None = None,
        pipeline_stats: PipelineStats | None = None,
        pages: PageCache | None = None,
    ) -> bytes:
        """The Prometheus text exposition, written by ``prometheus_client``: this process's counters,
        or with ``shared`` every worker's.  No series is labelled with a household id: device health
        is counted by state."""
        registry = CollectorRegistry(auto_describe=False)
        if self.shared is None:
            registry.register(Families(lambda: self.families(pages)))
        else:
            self.publish(pages)
            registry.register(Families(self.shared.collect))
        registry.register(Families(lambda: operations_families(collector_health, pipeline_stats)))
        return bytes(generate_latest(registry))

    def publish(self, pages: PageCache | None = None) -> None:
        """Write this process's totals where the other workers' scrapes read them (with ``shared``)."""
        if self.shared is not None:
            self.shared.publish(self.families(pages))

    def families(self, pages: PageCache | None = None) -> Iterator[Metric]:
        """This process's API counters, histograms and gauges as Prometheus families."""
        m = self
        worker = GaugeMetricFamily(
            "hems_api_worker",
            "The processes answering (with --workers, one series per live worker).",
            labels=["pid"],
        )
        worker.add_metric([str(os.getpid())], 1)
        yield worker
        requests = CounterMetricFamily(
            "hems_api_requests",
            "HTTP requests by route, method and status.",
            labels=["route", "method", "status"],
        )
        for (route, method, status), n in sorted(m.requests.items()):
            requests.add_metric([route, method, str(status)], n)
        yield requests
        yield histogram_family("hems_api_request_seconds", "Time to answer a request.", m.request_seconds)
        decisions = CounterMetricFamily(
            "hems_policy_decisions", "Policy decisions by outcome.", labels=["outcome"]
        )
        for outcome, n in sorted(m.decisions.items()):
            decisions.add_metric([outcome], n)
        yield decisions
        refusals = CounterMetricFamily("hems_policy_refusals", "Refusals by reason code.", labels=["reason"])
        for reason, n in sorted(m.refusals.items()):
            refusals.add_metric([reason], n)
        yield refusals
        yield histogram_family(
            "hems_policy_decision_seconds", "Time spent deciding (policy only).", m.decision_seconds
        )
        yield CounterMetricFamily(
            "hems_ledger_records", "Provision records written by this process.", value=m.ledger_records
        )
        yield CounterMetricFamily(
            "hems_ledger_commits",
            "Transactions this process wrote provision records in (records per commit: group commit).",
            value=m.ledger_commits,
        )
        yield histogram_family(
            "hems_store_query_seconds", "Time the store took to answer a series query.", m.store_seconds
        )
        if pages is not None:
            st = pages.stats
            for name, doc, value in (
                ("hems_page_cache_hits", "Data pages answered from the page cache.", st.hits),
                ("hems_page_cache_misses", "Data pages queried and rendered (then cached).", st.misses),
                ("hems_page_cache_shared", "Requests that waited for a page being made.", st.shared),
                ("hems_page_cache_stale", "Cached pages dropped because a write touched them.", st.stale),
                (
                    "hems_page_cache_from_other_process",
                    "Pages another process of this server had made (shared page file).",
                    st.from_other_process,
                ),
                (
                    "hems_page_cache_uncacheable",
                    "Pages rendered uncached (store has no version).",
                    st.uncacheable,
                ),
            ):
                yield CounterMetricFamily(name, doc, value=value)
            yield GaugeMetricFamily(
                "hems_page_cache_bytes", "Bytes of rendered pages held.", value=pages.bytes
            )
        if m.store_up is not None:
            yield GaugeMetricFamily(
                "hems_store_up", "Whether the last store ping succeeded.", value=int(m.store_up)
            )
        if m.store_ping_seconds is not None:
            yield GaugeMetricFamily(
                "hems_store_ping_seconds", "Duration of the last store ping.", value=m.store_ping_seconds
            )


def histogram_family(name: str, doc: str, h: Histogram) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(h.buckets, h.counts, strict=False):
        running += count
        buckets.append((repr(bound), running))
    buckets.append(("+Inf", h.n))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=h.total)


class Families(Collector):
    """A registry entry that yields whatever ``families`` makes at scrape time."""

    def __init__(self, families: Callable[[], Iterable[Metric]]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families()
