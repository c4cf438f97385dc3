"""Prometheus metrics: the node's `statistics()` in the text exposition format, at `GET /metrics`
on the control API (loopback). Rendered on demand inside the node's trio loop, so the numbers are
one consistent snapshot and no second thread ever reads state the loop is changing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _StatisticsCollector(Collector):
    def __init__(self, statistics: Callable[[], dict[str, Any]]) -> None:
        self._statistics = statistics

    def collect(self) -> Iterator[Metric]:
        s = self._statistics()
        node, transport = s.get("node", {}), s.get("transport", {})
        yield _gauge("dsperse_peers", "Connected peers.", transport.get("peers_count", 0))
        yield _gauge("dsperse_providers", "Provers whose advert is known.", len(s["providers"]))
        yield _gauge("dsperse_uptime_seconds", "Seconds since the node started.", node["uptime_s"])
        yield _counter("dsperse_adverts_published", "Capacity adverts published.",
                       node.get("adverts_published", 0))  # fmt: skip
        yield _counter("dsperse_adverts_received", "Capacity adverts accepted.",
                       node.get("adverts_received", 0))  # fmt: skip
        mesh = GaugeMetricFamily("dsperse_mesh_peers", "GossipSub mesh peers.", labels=["topic"])
        for topic, n in sorted(transport.get("mesh", {}).items()):
            mesh.add_metric([topic], n)
        yield mesh
        msgs_in = CounterMetricFamily(
            "dsperse_gossip_in", "Gossip messages received.", labels=["topic", "verdict"]
        )
        for topic, verdicts in sorted(transport.get("messages_in", {}).items()):
            for verdict, n in sorted(verdicts.items()):
                msgs_in.add_metric([topic, verdict], n)
        yield msgs_in
        msgs_out = CounterMetricFamily("dsperse_gossip_out", "Gossip published.", labels=["topic"])
        for topic, n in sorted(transport.get("messages_out", {}).items()):
            msgs_out.add_metric([topic], n)
        yield msgs_out
        drops = CounterMetricFamily("dsperse_drops", "Messages dropped.", labels=["reason"])
        for reason, n in sorted(transport.get("drops", {}).items()):
            drops.add_metric([reason], n)
        yield drops
        refused = CounterMetricFamily(
            "dsperse_gossip_refused", "Gossip refused by validators.", labels=["topic", "reason"]
        )
        for topic, reasons in sorted(s.get("gossip", {}).items()):
            for reason, n in sorted(reasons.items()):
                refused.add_metric([topic, reason], n)
        yield refused


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def render_metrics(statistics: Callable[[], dict[str, Any]]) -> bytes:
    """The exposition text of one snapshot of `statistics()`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatisticsCollector(statistics))
    return generate_latest(registry)
