"""Prometheus families for what every long-running command reports: device health and pipeline
statistics.  ``hems serve``/``hems demo`` add them to the API's ``/metrics``; ``hems collect`` serves
them alone on its own port (``serve_metrics``), so a gateway is scraped the same way as the fleet.

Devices are counted by the collector's verdict, never labelled with a household; nested statistics
(``Pipeline.metrics()``) become gauges with a ``key`` label.  What an operator alerts on has families
of its own: readings lost by reason (``hems_readings_lost_total``, every reason always present, so a
rule can say ``> 0``), the spool's bytes, limit, fill and its 80 % warning, and whether the store
took the last write.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.losses import REASONS

# device key -> its state (the collector's reason, or True/False for healthy); only counts are exported
CollectorHealth = Callable[[], Mapping[str, str | bool]]
PipelineStats = Callable[[], Mapping[str, object]]  # Pipeline.metrics(): numbers and dicts of numbers


def metric_name(key: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in key)


# Pipeline.metrics() keys with families of their own (``reliability_families``), not hems_pipeline_*.
_GAUGES = {
    "spool_bytes": ("hems_spool_bytes", "Bytes of spool segment files on disk."),
    "spool_max_bytes": ("hems_spool_max_bytes", "The spool's limit (spool_max_bytes)."),
    "spool_fill_ratio": ("hems_spool_fill_ratio", "Spool bytes over its limit."),
    "spool_fill_warning": ("hems_spool_fill_warning", "1 while the spool is at least 80 % full."),
    "store_up": ("hems_store_up", "1 if the store took the last write, else 0."),
}
_OWN_FAMILIES = frozenset({"lost", *_GAUGES})


def reliability_families(stats: Mapping[str, object]) -> Iterator[Metric]:
    lost = stats.get("lost")
    if isinstance(lost, Mapping):
        family = CounterMetricFamily(
            "hems_readings_lost", "Readings that could not be kept, by reason.", labels=["reason"]
        )
        for reason in sorted({*REASONS, *lost}):
            family.add_metric([str(reason)], float(lost.get(reason, 0)))
        yield family
    for key, (name, doc) in _GAUGES.items():
        value = stats.get(key)
        if isinstance(value, int | float):
            yield GaugeMetricFamily(name, doc, value=float(value))


def flatten(stats: Mapping[str, object]) -> Iterator[tuple[str, str | None, float]]:
    """Nested statistics as (metric name, ``key`` label or None, number): a number is a gauge of its
    own, a mapping of numbers one gauge with a ``key`` label, and a mapping of those one gauge per
    inner name (``validation.rejected.bad_type`` -> ``hems_pipeline_validation_rejected{key="bad_type"}``).
    Text and nulls carry no number."""
    for k, v in stats.items():
        if k in _OWN_FAMILIES:
            continue
        name = f"hems_pipeline_{metric_name(str(k))}"
        if isinstance(v, int | float):
            yield name, None, float(v)
        elif isinstance(v, Mapping):
            for k2, v2 in v.items():
                if isinstance(v2, int | float):
                    yield name, str(k2), float(v2)
                elif isinstance(v2, Mapping):
                    for k3, v3 in v2.items():
                        if isinstance(v3, int | float):
                            yield f"{name}_{metric_name(str(k2))}", str(k3), float(v3)


def operations_families(health: CollectorHealth | None, stats: PipelineStats | None) -> Iterator[Metric]:
    if health is not None:
        states = Counter(
            ("healthy" if v else "unhealthy") if isinstance(v, bool) else str(v) for v in health().values()
        )
        devices = GaugeMetricFamily(
            "hems_collector_devices",
            "Devices by the collector's verdict (never by household).",
            labels=["state"],
        )
        for state, n in sorted(states.items()):
            devices.add_metric([state], n)
        yield devices
    if stats is not None:
        snapshot = stats()
        yield from reliability_families(snapshot)
        families: dict[str, GaugeMetricFamily] = {}
        for name, key, number in flatten(snapshot):
            family = families.get(name)
            if family is None:
                family = families[name] = GaugeMetricFamily(
                    name,
                    "Pipeline statistic (see pipeline.writer.Pipeline.metrics).",
                    labels=None if key is None else ["key"],
                )
            family.add_metric([] if key is None else [key], number)
        yield from families.values()


class _Operations(Collector):
    def __init__(self, health: CollectorHealth | None, stats: PipelineStats | None) -> None:
        self.health, self.stats = health, stats

    def collect(self) -> Iterator[Metric]:
        yield from operations_families(self.health, self.stats)


def exposition(health: CollectorHealth | None, stats: PipelineStats | None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Operations(health, stats))
    return bytes(generate_latest(registry))


async def serve_metrics(
    host: str, port: int, health: CollectorHealth | None, stats: PipelineStats | None
) -> web.AppRunner:
    """``GET /metrics`` on ``host:port`` (keep it on a local or management address: it has no login).
    Returns the runner; ``await runner.cleanup()`` stops it."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=exposition(health, stats), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
