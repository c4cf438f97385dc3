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
        ledger = s.get("ledger")
        if ledger:
            yield from _ledger_metrics(ledger)


def _ledger_metrics(ledger: dict[str, Any]) -> Iterator[Metric]:
    counters, sync = ledger.get("counters", {}), ledger.get("sync", {})
    sync_counters = sync.get("counters", {})
    yield _gauge("dsperse_ledger_entries", "Entries stored in this replica.", ledger["entries"])
    yield _gauge("dsperse_ledger_pending_entries", "Entries waiting for a dependency.",
                 ledger["pending"])  # fmt: skip
    yield _gauge("dsperse_ledger_accounts", "Accounts in the ledger state.",
                 ledger["accounts_count"])  # fmt: skip
    yield _gauge("dsperse_ledger_offences", "Offences slashed.", len(ledger.get("offences", [])))
    added = CounterMetricFamily(
        "dsperse_ledger_entries_added", "Entries added to the replica.", labels=["source"]
    )
    for source in ("gossip", "sync"):
        added.add_metric([source], counters.get(f"added_{source}", 0))
    yield added
    yield _counter("dsperse_ledger_own_entries", "Entries this node signed.",
                   counters.get("own_entries", 0))  # fmt: skip
    refused = CounterMetricFamily(
        "dsperse_ledger_entries_refused", "Entries the ledger refused.", labels=["reason"]
    )
    for reason, n in sorted(ledger.get("refused", {}).items()):
        refused.add_metric([reason], n)
    yield refused
    yield _counter("dsperse_ledger_sync_sessions", "Anti-entropy sessions started.",
                   sync_counters.get("sessions", 0))  # fmt: skip
    yield _counter("dsperse_ledger_sync_sessions_failed", "Anti-entropy sessions that failed.",
                   sync_counters.get("sessions_failed", 0))  # fmt: skip
    sync_bytes = CounterMetricFamily(
        "dsperse_ledger_sync_bytes", "Anti-entropy bytes.", labels=["direction"]
    )
    sync_bytes.add_metric(["in"], sync_counters.get("bytes_in", 0))
    sync_bytes.add_metric(["out"], sync_counters.get("bytes_out", 0))
    sync_bytes.add_metric(["served"], sync_counters.get("bytes_served", 0))
    yield sync_bytes
    sync_refused = CounterMetricFamily(
        "dsperse_ledger_sync_refused", "Sync requests refused.", labels=["reason"]
    )
    for reason, n in sorted(sync.get("refused_in", {}).items()):
        sync_refused.add_metric([reason], n)
    yield sync_refused
    peers = sync.get("peers", {})
    yield _gauge("dsperse_ledger_replication_lag_entries",
                 "Most entries a peer held that this replica lacked, at the last sync with it.",
                 max((p["behind"] for p in peers.values()), default=0))  # fmt: skip


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def render_metrics(statistics: Callable[[], dict[str, Any]]) -> bytes:
    """The exposition text of one snapshot of `statistics()`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatisticsCollector(statistics))
    return generate_latest(registry)
