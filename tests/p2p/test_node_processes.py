"""Integration: 8 real `dsperse-node run` processes on 127.0.0.1 (slow, multi-process).

One cluster serves the module's tests, in order: mesh from one bootstrap address and every advert
everywhere; SIGKILL noticed and a restart rejoining with the same peer id; a plaintext dialer
refused; an oversize gossip message rejected and counted while the sender's next message flows;
SIGTERM stops every node cleanly. All waits are on events with timeouts.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio

from node.config import NodeConfig
from tests.p2p.procs import NodeProc, init_data_dirs

pytestmark = pytest.mark.slow
NODES = 8
START_TIMEOUT_S = 120.0  # 8 interpreters importing libp2p on 2 shared cores
EVENT_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeProc]]:
    root = tmp_path_factory.mktemp("cluster")
    dirs = [root / f"node{i}" for i in range(NODES)]
    init_data_dirs(dirs)
    nodes = [NodeProc(d) for d in dirs]
    try:
        nodes[0].start()
        nodes[0].wait_ready(START_TIMEOUT_S)
        for node in nodes[1:]:  # started together: import time dominates
            node.start(bootstrap=[nodes[0].addr])
        for node in nodes[1:]:
            node.wait_ready(START_TIMEOUT_S)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def test_eight_nodes_mesh_from_one_bootstrap_and_every_advert_reaches_everyone(
    cluster: list[NodeProc],
) -> None:
    ids = {n.peer_id for n in cluster}
    assert len(ids) == NODES and all(i.startswith("12D3KooW") for i in ids)
    for node in cluster:
        assert node.addr.endswith(f"/p2p/{node.peer_id}")
        node.wait_adverts_from(ids - {node.peer_id}, EVENT_TIMEOUT_S)
    for node in cluster:
        status = node.status()
        assert status["node"]["peer_id"] == node.peer_id
        assert status["transport"]["peers_count"] >= 1
        assert set(status["providers"]) == ids - {node.peer_id}
        assert status["transport"]["mesh"]["/dsperse/capacity/1"] >= 1
        assert "reject" not in status["transport"]["messages_in"].get("/dsperse/capacity/1", {})


def test_sigkilled_node_is_noticed_and_rejoins_with_the_same_peer_id(
    cluster: list[NodeProc],
) -> None:
    victim, hub = cluster[3], cluster[0]
    old_id = victim.peer_id
    victim.send_signal(signal.SIGKILL)
    assert victim.proc is not None and victim.proc.wait(timeout=30) == -signal.SIGKILL
    hub.wait_for(
        lambda e: e.get("event") == "peer_disconnected" and e["peer"] == old_id, EVENT_TIMEOUT_S
    )
    marks = {id(n): len(n.events) for n in cluster}  # only events after the restart count
    victim.start(bootstrap=[hub.addr])
    victim.wait_ready(START_TIMEOUT_S)
    assert victim.peer_id == old_id
    for node in cluster:
        if node is victim:
            continue
        # every node sees the restarted node's advert (new listen address => changed advert)
        try:
            node.wait_for(
                lambda e: e.get("event") == "advert_received" and e["peer"] == old_id,
                EVENT_TIMEOUT_S,
                since=marks[id(node)],
            )
        except TimeoutError:
            raise AssertionError(_diagnose(node, hub, victim, marks[id(node)])) from None
    victim.wait_adverts_from({n.peer_id for n in cluster} - {old_id}, EVENT_TIMEOUT_S)


def _diagnose(node: NodeProc, hub: NodeProc, victim: NodeProc, since: int) -> str:
    """What a failing wait saw: recent events and each side's transport figures."""
    parts = [f"{node.data_dir.name} events since restart: {node.events[since:][-15:]}"]
    for who in (node, hub, victim):
        t = who.status()["transport"]
        keys = ("peers", "mesh", "messages_in", "drops", "peer_scores")
        parts.append(f"{who.data_dir.name}: " + json.dumps({k: t[k] for k in keys}))
    return "\n".join(parts)


async def test_plaintext_dialer_is_refused(cluster: list[NodeProc]) -> None:
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

    key_pair = create_new_key_pair(b"\x07" * 32)
    host = new_host(key_pair=key_pair, sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(key_pair)})
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        with pytest.raises(Exception) as caught, trio.fail_after(EVENT_TIMEOUT_S):
            await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(cluster[0].addr)))
        assert (
            "SwarmDialAllFailedError" in type(caught.value).__name__
            or "fail" in str(caught.value).lower()
        )
        assert host.get_network().get_connections() == []
    assert cluster[0].status()["node"]["peer_id"] == cluster[0].peer_id  # still serving


async def test_oversize_gossip_is_rejected_and_counted_and_the_sender_still_flows(
    cluster: list[NodeProc],
) -> None:
    from node.identity import NodeIdentity
    from node.runtime import NodeRuntime
    from node.topics import TOPIC_CAPACITY
    from node.wire import ENVELOPE_BYTES_MAX, encode_envelope
    from p2p.abc import GossipMessage, TransportSettings, Verdict
    from p2p.libp2p_transport import Libp2pTransport

    hub = cluster[0]
    seed = b"\x42" * 32
    identity = NodeIdentity.from_seed(seed)
    # A peer whose own limit is larger than the network's: it can send what others must refuse.
    loose = TransportSettings(gossip_bytes_max=900_000)
    sender = Libp2pTransport(seed, settings=loose)
    assert sender.peer_id == identity.peer_id  # libp2p's id from the seed == node.identity's
    before = hub.status()["transport"]

    def accept(message: GossipMessage) -> Verdict:
        return Verdict.ACCEPT

    async with trio.open_nursery() as nursery:
        await nursery.start(sender.run)
        await sender.subscribe(TOPIC_CAPACITY, accept)
        await sender.connect(hub.addr)
        await sender.wait_topic_peers(TOPIC_CAPACITY, 1, EVENT_TIMEOUT_S)
        await sender.publish(TOPIC_CAPACITY, b"\x00" * (ENVELOPE_BYTES_MAX + 100_000))
        runtime = NodeRuntime(hub_config(), identity, sender, control=False)
        advert = encode_envelope(runtime.build_advert(), identity, _now_ms())
        await sender.publish(TOPIC_CAPACITY, advert)
        await trio.to_thread.run_sync(
            partial(
                hub.wait_for,
                lambda e: e.get("event") == "advert_received" and e["peer"] == identity.peer_id,
                EVENT_TIMEOUT_S,
            )
        )
        nursery.cancel_scope.cancel()
    after = hub.status()["transport"]
    assert after["drops"].get("oversize", 0) == before["drops"].get("oversize", 0) + 1
    rejects = after["messages_in"][TOPIC_CAPACITY].get("reject", 0)
    assert rejects == before["messages_in"][TOPIC_CAPACITY].get("reject", 0) + 1
    assert identity.peer_id in hub.status()["providers"]


def hub_config() -> NodeConfig:
    return NodeConfig(data_dir=Path("/nonexistent"))


def _now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


def test_sigterm_and_sigint_stop_every_node_cleanly(cluster: list[NodeProc]) -> None:
    for i, node in enumerate(cluster):
        node.send_signal(signal.SIGINT if i % 2 else signal.SIGTERM)
    for node in cluster:
        assert node.proc is not None
        assert node.proc.wait(timeout=60) == 0, node.events[-5:]
        node.wait_for(lambda e: e.get("event") == "stderr_closed", 10)
        tracebacks = [e for e in node.events if "Traceback" in e.get("line", "")]
        assert tracebacks == []
