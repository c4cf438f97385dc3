"""The ledger replica inside the node (Tier B: real runtimes and SQLite stores over the memory
transport): gossip replication, anti-entropy catch-up and heal, forks slashed once, refusals."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from ledger.builders import ChainWriter, build_entry
from ledger.config import minimal_config
from ledger.containers import Bond, Entry, GenesisAllocation, Transfer, Unbond
from ledger.encoding import encode_entry
from ledger.env import LedgerEnv
from ledger.store import LedgerStore
from node.config import NodeConfig
from node.gossip import GossipIgnore, GossipReject
from node.identity import Ed25519Scheme, NodeIdentity
from node.proof_verifier import UndecidedVerifier
from node.replica import WalletRefusal
from node.runtime import NodeRuntime
from node.topics import GOSSIP_TOPICS, TOPIC_LEDGER
from node.wire import ENVELOPE_BYTES_MAX, decode_envelope, encode_envelope
from node.wire.ledger_messages import LedgerEntries
from p2p.abc import TransportSettings
from p2p.memory import MemoryNetwork

WAIT_S = 20.0
NETWORK_ID = hashlib.sha256(b"test-network").digest()
GENESIS_KEY = NodeIdentity.from_seed(hashlib.sha256(b"genesis").digest())
PER_NODE = 10_000


def identity(i: int) -> NodeIdentity:
    return NodeIdentity.from_seed(hashlib.sha256(b"replica-%d" % i).digest())


def genesis_entries(n: int) -> list[Entry]:
    bank = ChainWriter(GENESIS_KEY)
    return [bank.append(GenesisAllocation(identity(i).public_key, PER_NODE)) for i in range(n)]


def env() -> LedgerEnv:
    return LedgerEnv(minimal_config(GENESIS_KEY.public_key), Ed25519Scheme(), UndecidedVerifier())


def config() -> NodeConfig:
    base = NodeConfig(data_dir=Path("/nonexistent"))
    base = base.with_overrides("network", advert_interval_s=5.0)
    return base.with_overrides("ledger", sync_interval_s=0.2)


def without_rate_limits(runtime: NodeRuntime) -> NodeRuntime:
    """Fuzz tests send hundreds of messages from one peer to test content checks: take the
    per-publisher and per-peer rate limits out of the way (tests/node/test_rate_limits.py
    covers them)."""
    from node.ratelimit import PeerLimits

    for validator in runtime.validators.values():
        validator.rate_per_s = 0.0
    if runtime.market is not None:
        runtime.market._limits = PeerLimits(1e12, 1e15)
    return runtime


class Cluster:
    def __init__(self, net: MemoryNetwork, nodes: list[NodeRuntime]) -> None:
        self.net = net
        self.nodes = nodes

    def roots(self) -> set[bytes]:
        return {n.replica.lattice.compute_root() for n in self.nodes if n.replica}

    async def wait_until(self, cond: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
        with trio.fail_after(timeout_s):
            while not cond():
                with trio.move_on_after(0.5):  # re-check also when nothing new arrives
                    async with trio.open_nursery() as nursery:
                        for node in self.nodes:
                            assert node.replica is not None

                            async def wait(node: NodeRuntime = node) -> None:
                                assert node.replica is not None
                                await node.replica.wait_added()
                                nursery.cancel_scope.cancel()

                            nursery.start_soon(wait)

    async def wait_converged(self, timeout_s: float = WAIT_S) -> None:
        await self.wait_until(lambda: len(self.roots()) == 1, timeout_s)


@asynccontextmanager
async def cluster(tmp: Path, n: int, *, line: bool = True) -> AsyncIterator[Cluster]:
    net = MemoryNetwork(7)
    settings = TransportSettings(topics=GOSSIP_TOPICS, gossip_bytes_max=ENVELOPE_BYTES_MAX)
    nodes = []
    for i in range(n):
        ident = identity(i)
        store = LedgerStore.open(tmp / f"n{i}.sqlite", env())
        store.add_many(genesis_entries(n))
        transport = net.create(ident.peer_id, settings)
        nodes.append(
            NodeRuntime(
                config(), ident, transport, control=False, store=store, network_id=NETWORK_ID
            )
        )
    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.run)
        pairs = itertools.pairwise(nodes) if line else itertools.combinations(nodes, 2)
        for a, b in pairs:
            await b.transport.connect(a.transport.listen_addrs()[0])
        yield Cluster(net, nodes)
        nursery.cancel_scope.cancel()
    for node in nodes:
        assert node.replica is not None
        node.replica.store.close()


async def test_wallet_entries_reach_every_replica_and_roots_agree(tmp_path: Path) -> None:
    async with cluster(tmp_path, 4) as c:
        a, b = c.nodes[0], c.nodes[3]
        assert a.replica and b.replica
        result = a.replica.submit(Transfer(b.identity.public_key, 250))
        b.replica.submit(Bond(1000))
        await c.wait_until(lambda: all(n.replica and n.replica.has_entry(
            bytes.fromhex(result["hash"])) for n in c.nodes))  # fmt: skip
        await c.wait_converged()
        for node in c.nodes:
            assert node.replica is not None
            assert node.replica.wallet()["account"] == node.identity.peer_id
        assert b.replica.wallet()["balance"] == PER_NODE + 250 - 1000
        assert b.replica.wallet()["bonded"] == 1000
        assert a.replica.counters["published_entries"] == 1


async def test_a_refused_operation_writes_nothing(tmp_path: Path) -> None:
    async with cluster(tmp_path, 2) as c:
        a = c.nodes[0].replica
        assert a is not None
        count = a.store.count
        with pytest.raises(WalletRefusal, match="insufficient balance"):
            a.submit(Transfer(c.nodes[1].identity.public_key, PER_NODE + 1))
        a.submit(Bond(1))
        with pytest.raises(WalletRefusal, match="insufficient bond"):
            a.submit(Unbond(5))
        assert a.store.count == count + 1  # only the valid bond was stored
        assert a.own_chain_length() == 1


async def test_a_partitioned_replica_catches_up_by_anti_entropy_alone(tmp_path: Path) -> None:
    async with cluster(tmp_path, 3, line=False) as c:
        a, b, off = c.nodes
        assert a.replica and b.replica and off.replica
        c.net.partition({a.identity.peer_id, b.identity.peer_id}, {off.identity.peer_id})
        for i in range(60):
            (a if i % 2 else b).replica.submit(  # type: ignore[union-attr]
                Transfer(off.identity.public_key, 1)
            )

        def published_and_equal() -> bool:
            assert a.replica and b.replica
            sent = sum(r.counters["published_entries"] for r in (a.replica, b.replica))
            equal = a.replica.lattice.compute_root() == b.replica.lattice.compute_root()
            return sent == 60 and equal

        await c.wait_until(published_and_equal)
        assert off.replica.store.count == 3  # genesis only: gossip never reached it
        published = sum(r.counters["published_batches"] for r in (a.replica, b.replica))
        c.net.heal()
        await c.wait_converged()
        assert off.replica.wallet()["balance"] == PER_NODE + 60
        assert off.sync is not None and off.sync.counters["entries_received"] >= 60
        # Nothing was re-published: the healed replica got everything by anti-entropy.
        assert sum(r.counters["published_batches"] for r in (a.replica, b.replica)) == published


async def test_a_forked_chain_is_slashed_exactly_once_everywhere(tmp_path: Path) -> None:
    async with cluster(tmp_path, 4, line=False) as c:
        cheat = identity(3)
        offender = c.nodes[3]
        assert offender.replica is not None
        offender.replica.submit(Bond(5000))
        await c.wait_converged()
        # A test helper signs a second entry at the same seq with the cheater's key.
        head = offender.replica.lattice.get_chain(cheat.public_key, 0, 1)[0]
        fork = build_entry(cheat, 0, head.header.prev, head.header.height, Bond(4000))
        data = encode_envelope(LedgerEntries((encode_entry(fork),)), cheat, trio_ms(),
                               network_id=NETWORK_ID)  # fmt: skip
        await offender.transport.publish(TOPIC_LEDGER, data)

        def slashed_everywhere() -> bool:
            return all(
                n.replica is not None and len(n.replica.lattice.state.offences) == 1
                for n in c.nodes
            )

        await c.wait_until(slashed_everywhere)
        await c.wait_converged()
        state = c.nodes[0].replica.lattice.state  # type: ignore[union-attr]
        [offence] = state.offences.values()
        assert offence.offender == cheat.public_key
        for node in c.nodes[:3]:
            assert state.accounts[node.identity.public_key].slashed == 0
        assert state.accounts[cheat.public_key].slashed > 0


def trio_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


def test_content_check_refuses_foreign_undecodable_and_known_batches(tmp_path: Path) -> None:
    store = LedgerStore.open(tmp_path / "x.sqlite", env())
    store.add_many(genesis_entries(2))
    a, b = identity(0), identity(1)
    net = MemoryNetwork(1)
    runtime = NodeRuntime(config(), a, net.create(a.peer_id), control=False, store=store,
                          network_id=NETWORK_ID)  # fmt: skip
    replica = runtime.replica
    assert replica is not None

    def envelope_of(signer: NodeIdentity, entries: tuple[bytes, ...]) -> object:
        data = encode_envelope(LedgerEntries(entries), signer, trio_ms(), network_id=NETWORK_ID)
        return decode_envelope(data, trio_ms(), network_id=NETWORK_ID)

    own = build_entry(b, 0, bytes(32), 5, Bond(10))
    with pytest.raises(GossipReject, match="entry_not_publishers"):
        replica.content_check(envelope_of(a, (encode_entry(own),)))  # type: ignore[arg-type]
    with pytest.raises(GossipReject, match="entry_malformed"):
        replica.content_check(envelope_of(b, (b"\x93\x01",)))  # type: ignore[arg-type]
    forged = build_entry(a, 0, bytes(32), 5, Bond(10))
    forged_bytes = encode_entry(forged)
    tampered = forged_bytes[:-1] + bytes([forged_bytes[-1] ^ 1])
    with pytest.raises(GossipReject):
        replica.content_check(envelope_of(a, (tampered,)))  # type: ignore[arg-type]
    genesis = encode_entry(genesis_entries(2)[0])
    with pytest.raises(GossipIgnore, match="duplicate"):
        replica.content_check(envelope_of(GENESIS_KEY, (genesis,)))  # type: ignore[arg-type]
    replica.content_check(envelope_of(b, (encode_entry(own),)))  # type: ignore[arg-type]
    store.close()


async def test_ledger_metrics_and_statistics_show_the_replica(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from node.metrics import render_metrics

    async with cluster(tmp_path, 2) as c:
        a, b = c.nodes
        assert a.replica is not None
        a.replica.submit(Bond(10))
        await c.wait_converged()
        stats = b.statistics()["ledger"]
        assert stats["entries"] == 3 and stats["network_id"] == NETWORK_ID.hex()
        assert stats["state_root"] == a.replica.lattice.compute_root().hex()
        families = {
            f.name: f for f in text_string_to_metric_families(render_metrics(b.statistics).decode())
        }
        [entries] = families["dsperse_ledger_entries"].samples
        assert entries.value == 3
        added = {
            s.labels["source"]: s.value for s in families["dsperse_ledger_entries_added"].samples
        }
        assert added["gossip"] + added["sync"] >= 1
        # The market's families are there too (no job yet: every state counts 0).
        jobs = {s.labels["state"]: s.value for s in families["dsperse_market_jobs"].samples}
        assert jobs["done"] == 0 and set(jobs) >= {"bidding", "proving", "failed"}
        assert "dsperse_market_bids_sent" in families
