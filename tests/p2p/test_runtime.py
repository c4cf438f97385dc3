"""node.runtime over the in-memory transport (Tier B): adverts, replays, peers, control API."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from node.config import NodeConfig
from node.control import parse_control_listen
from node.errors import ConfigError
from node.identity import NodeIdentity
from node.runtime import NodeRuntime
from node.topics import GOSSIP_TOPICS, PROTOCOL_STATUS, TOPIC_CAPACITY
from node.wire import ENVELOPE_BYTES_MAX, encode_envelope
from p2p.abc import TransportSettings
from p2p.memory import MemoryNetwork

WAIT_S = 10.0


def identity(i: int) -> NodeIdentity:
    return NodeIdentity.from_seed(hashlib.sha256(b"runtime-%d" % i).digest())


def config(interval_s: float = 0.1) -> NodeConfig:
    base = NodeConfig(data_dir=Path("/nonexistent"))
    return base.with_overrides("network", advert_interval_s=interval_s)


@asynccontextmanager
async def runtimes(n: int, *, control: bool = False) -> AsyncIterator[list[NodeRuntime]]:
    """N runtimes in a line (0-1-2-…) on one memory network."""
    net = MemoryNetwork(3)
    settings = TransportSettings(topics=GOSSIP_TOPICS, gossip_bytes_max=ENVELOPE_BYTES_MAX)
    nodes = []
    for i in range(n):
        ident = identity(i)
        transport = net.create(ident.peer_id, settings)
        nodes.append(NodeRuntime(config(), ident, transport, control=control))
    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.run)
        for a, b in itertools.pairwise(nodes):
            await b.transport.connect(a.transport.listen_addrs()[0])
        yield nodes
        nursery.cancel_scope.cancel()


async def test_every_runtime_learns_every_other_runtimes_advert() -> None:
    async with runtimes(3) as nodes:
        ids = {n.identity.peer_id for n in nodes}
        for node in nodes:
            await node.wait_providers(ids - {node.identity.peer_id}, WAIT_S)
        stats = nodes[2].statistics()
        provider = stats["providers"][nodes[0].identity.peer_id]
        assert provider["free_slots"] == NodeConfig().prover.slots
        assert stats["gossip"][TOPIC_CAPACITY]["accept"] >= 2
        assert stats["transport"]["messages_in"][TOPIC_CAPACITY].get("reject", 0) == 0


async def test_a_replayed_advert_is_dropped_after_delivery() -> None:
    async with runtimes(2) as (a, b):
        await b.wait_providers({a.identity.peer_id}, WAIT_S)
        data = encode_envelope(a.build_advert(), a.identity, trio_ms())
        received = b.adverts_received
        await a.transport.publish(TOPIC_CAPACITY, data)
        await a.transport.publish(TOPIC_CAPACITY, data)  # same signed bytes, new gossip message
        with trio.fail_after(WAIT_S):
            while b.statistics()["node"]["replays_dropped"] < 1:
                await b._adverts_changed.wait()
        assert b.adverts_received >= received + 1


def trio_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


async def test_a_departed_peer_is_logged_and_forgotten(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="node.runtime")
    net = MemoryNetwork(4)
    a_id, b_id = identity(10), identity(11)
    a = NodeRuntime(config(), a_id, net.create(a_id.peer_id), control=False)
    b = NodeRuntime(config(), b_id, net.create(b_id.peer_id), control=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        async with trio.open_nursery() as b_nursery:
            await b_nursery.start(b.run)
            await b.transport.connect(a.transport.listen_addrs()[0])
            await a.wait_providers({b_id.peer_id}, WAIT_S)
            b_nursery.cancel_scope.cancel()
        with trio.fail_after(WAIT_S):
            while b_id.peer_id in a.adverts:
                await a._adverts_changed.wait()
        nursery.cancel_scope.cancel()
    events = [getattr(r, "dsperse_event", None) for r in caplog.records]
    assert {"node_started", "peer_connected", "advert_received", "peer_disconnected"} <= set(events)


async def test_status_request_protocol_answers_with_the_summary() -> None:
    async with runtimes(2) as (a, b):
        body = await a.transport.request(b.identity.peer_id, PROTOCOL_STATUS, b"")
        doc = json.loads(body)
        assert doc["peer_id"] == b.identity.peer_id
        assert doc["adverts_published"] >= 1


async def _http_get(addr: str, path: str, raw: bytes | None = None) -> tuple[int, dict]:
    host, port = addr.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(raw if raw is not None else f"GET {path} HTTP/1.0\r\n\r\n".encode())
        data = b""
        with trio.fail_after(WAIT_S):
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def test_control_api_serves_status_and_refuses_the_rest() -> None:
    async with runtimes(2, control=True) as (a, _b):
        assert a.control_addr.startswith("127.0.0.1:")
        code, doc = await _http_get(a.control_addr, "/status")
        assert code == 200
        assert doc["node"]["peer_id"] == a.identity.peer_id
        assert doc["transport"]["peers_count"] == 1
        assert (await _http_get(a.control_addr, "/health"))[0] == 200
        assert (await _http_get(a.control_addr, "/nope"))[0] == 404
        assert (await _http_get(a.control_addr, "", raw=b"POST /status HTTP/1.0\r\n\r\n"))[0] == 404
        big = b"GET /status HTTP/1.0\r\n" + b"X: " + b"y" * 10_000 + b"\r\n\r\n"
        assert (await _http_get(a.control_addr, "", raw=big))[0] == 400


@pytest.mark.parametrize(
    "listen", ["0.0.0.0:1", "10.0.0.1:80", "localhost:1", "127.0.0.1", "127.0.0.1:99999"]
)
def test_control_listen_must_be_a_loopback_host_port(listen: str) -> None:
    expected = "loopback" if listen[0].isdigit() and listen.count(":") == 1 else "HOST:PORT|IP"
    if listen.endswith(":99999"):
        expected = "HOST:PORT"
    with pytest.raises(ConfigError, match=expected):
        parse_control_listen(listen)
    assert parse_control_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_control_listen("::1:5") == ("::1", 5)


async def test_discovery_turns_a_star_into_a_mesh_and_respects_the_target() -> None:
    # Nodes 1..4 know only node 0 (a star). Adverts name each node's address, so with a target of
    # 3 peers every node dials others it hears of, and nobody dials past the target.
    net = MemoryNetwork(5)
    settings = TransportSettings(topics=GOSSIP_TOPICS, gossip_bytes_max=ENVELOPE_BYTES_MAX)
    nodes = []
    for i in range(5):
        ident = identity(40 + i)
        cfg = config().with_overrides("network", peers_target=3)
        nodes.append(NodeRuntime(cfg, ident, net.create(ident.peer_id, settings), control=False))
    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.run)
        for node in nodes[1:]:
            await node.transport.connect(nodes[0].transport.listen_addrs()[0])
        with trio.fail_after(WAIT_S):
            while not all(len(n.transport.connected_peers()) >= 3 for n in nodes[1:]):
                await net.wait_changed()
        leaves = nodes[1:]
        # Leaves now also reach each other directly: the hub is no longer a single point of failure.
        assert all(
            any(p != nodes[0].identity.peer_id for p in n.transport.connected_peers())
            for n in leaves
        )
        dials = sum(n.discovery.statistics().dials_ok for n in nodes)
        assert dials >= 2
        # Nobody dials beyond its target (inbound connections may still arrive).
        for n in nodes:
            stats = n.statistics()["discovery"]
            assert stats["target"] == 3 and stats["dials_failed"] == 0
        nursery.cancel_scope.cancel()


async def test_discovery_off_keeps_only_bootstrap_links() -> None:
    net = MemoryNetwork(6)
    nodes = []
    for i in range(3):
        ident = identity(50 + i)
        cfg = config().with_overrides("network", peers_target=0)
        nodes.append(NodeRuntime(cfg, ident, net.create(ident.peer_id), control=False))
    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.run)
        for node in nodes[1:]:
            await node.transport.connect(nodes[0].transport.listen_addrs()[0])
        ids = {n.identity.peer_id for n in nodes}
        for node in nodes:
            await node.wait_providers(ids - {node.identity.peer_id}, WAIT_S)
        assert [len(n.transport.connected_peers()) for n in nodes] == [2, 1, 1]
        assert all(n.discovery.statistics().offered > 0 for n in nodes)
        nursery.cancel_scope.cancel()


async def test_control_api_serves_prometheus_metrics() -> None:
    async with runtimes(2, control=True) as (a, b):
        await a.wait_providers({b.identity.peer_id}, WAIT_S)
        host, port = a.control_addr.rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(b"GET /metrics HTTP/1.0\r\n\r\n")
            data = b""
            with trio.fail_after(WAIT_S):
                while chunk := await stream.receive_some(65536):
                    data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200") and b"text/plain; version=0.0.4" in head
        text = body.decode()
        assert "dsperse_peers 1.0" in text
        assert "dsperse_providers 1.0" in text
        assert f'dsperse_gossip_in_total{{topic="{TOPIC_CAPACITY}",verdict="accept"}}' in text
        assert "dsperse_adverts_published_total" in text
