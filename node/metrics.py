"""Prometheus metrics: the node's `statistics()` in the text exposition format, at `GET /metrics`
on the control API (loopback). Rendered on demand inside the node's trio loop, so the numbers are
one consistent snapshot and no second thread ever reads state the loop is changing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
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
        market = s.get("market")
        if market:
            yield from _market_metrics(market)


def _labelled(name: str, doc: str, label: str, values: dict[str, Any]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, n in sorted(values.items()):
        family.add_metric([key], n)
    return family


def _prefixed(counters: dict[str, int], prefix: str) -> dict[str, int]:
    return {k[len(prefix) :]: v for k, v in counters.items() if k.startswith(prefix)}


def _market_metrics(market: dict[str, Any]) -> Iterator[Metric]:
    core = market.get("core", {})
    jobs = GaugeMetricFamily("dsperse_market_jobs", "Own jobs by state.", labels=["state"])
    for state in ("escrowing", "bidding", "proving", "verifying", "done", "failed"):
        jobs.add_metric([state], market.get("jobs_by_state", {}).get(state, 0))
    yield jobs
    yield _gauge("dsperse_market_free_slots", "Prover slots free for new bids.",
                 market.get("free_slots", 0))  # fmt: skip
    yield _gauge("dsperse_market_proving", "Slices being proven here.", market.get("proving", 0))
    yield _counter("dsperse_market_bids_sent", "Bids this node sent.", core.get("bids_sent", 0))
    yield _counter("dsperse_market_bids_accepted", "Bids accepted on own jobs.",
                   core.get("bids_accepted", 0))  # fmt: skip
    refused = {**_prefixed(core, "bids_refused:"), **_prefixed(market.get("service", {}),
               "bids_refused:")}  # fmt: skip
    yield _labelled("dsperse_market_bids_refused", "Bids refused on own jobs.", "reason", refused)
    yield _counter("dsperse_market_awards", "Awards made on own jobs.", core.get("awards", 0))
    yield _counter("dsperse_market_awards_won", "Awards this node won.", core.get("awards_won", 0))
    yield _counter("dsperse_market_deadlines_missed", "Awards re-awarded after their deadline.",
                   core.get("deadlines_missed", 0))  # fmt: skip
    yield _counter("dsperse_market_proofs_verified", "Proofs of own jobs that checked.",
                   core.get("proofs_verified", 0))  # fmt: skip
    yield _labelled("dsperse_market_verification_failures", "Proofs of own jobs that failed.",
                    "reason", _prefixed(core, "proofs_bad:"))  # fmt: skip
    yield _labelled("dsperse_market_evidence_filed", "Slash evidence this node filed.", "kind",
                    _prefixed(market.get("service", {}), "evidence_filed:"))  # fmt: skip
    pool = market.get("pool") or {}
    if pool:
        yield _labelled("dsperse_prover_proofs", "Proofs by outcome.", "outcome",
                        pool.get("proofs", {}))  # fmt: skip
        yield _labelled("dsperse_prover_verifies", "Verifications by outcome.", "outcome",
                        pool.get("verifies", {}))  # fmt: skip
        hist = pool.get("prove_s_histogram", {})
        bounds = hist.get("bounds_s", [])
        family = HistogramMetricFamily(
            "dsperse_prover_prove_seconds", "Time to prove one slice.", labels=["logrows"]
        )
        for logrows, h in sorted(hist.get("logrows", {}).items()):
            buckets = [(str(b), n) for b, n in zip(bounds, h["le"], strict=False)]
            buckets.append(("+Inf", h["count"]))
            family.add_metric([logrows], buckets, sum_value=h["sum_s"])
        yield family


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
