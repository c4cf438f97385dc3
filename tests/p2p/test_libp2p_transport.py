"""What only the py-libp2p transport has: identity, Noise-only, bootstrap redial, stream guards."""

from __future__ import annotations

import socket

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from node.identity import NodeIdentity
from p2p.abc import GossipMessage, PeerEvent, TransportSettings, Verdict
from p2p.errors import InvalidAddress, ListenFailed
from p2p.libp2p_transport import Libp2pTransport, compute_libp2p_peer_id
from tests.p2p.cluster import make_seed

WAIT_S = 15.0


@given(st.binary(min_size=32, max_size=32))
@settings(max_examples=20, deadline=None)
def test_libp2p_peer_id_from_the_seed_equals_node_identity(seed: bytes) -> None:
    assert compute_libp2p_peer_id(seed) == NodeIdentity.from_seed(seed).peer_id


def test_bad_listen_or_bootstrap_addresses_are_refused_at_construction() -> None:
    with pytest.raises(InvalidAddress):
        Libp2pTransport(make_seed(1), listen=("/ip4/999.0.0.1/tcp/1",))
    with pytest.raises(InvalidAddress):
        Libp2pTransport(make_seed(1), bootstrap=("/ip4/127.0.0.1/tcp/1",))  # no /p2p/<id>


async def test_plaintext_only_dialer_is_refused_and_noise_peers_connect() -> None:
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
    from multiaddr import Multiaddr

    node = Libp2pTransport(make_seed(2))
    key_pair = create_new_key_pair(make_seed(3))
    plain = new_host(
        key_pair=key_pair, sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(key_pair)}
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        async with plain.run(listen_addrs=[Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            with pytest.raises(Exception, match=r"(?i)fail|unable"), trio.fail_after(WAIT_S):
                await plain.connect(info_from_p2p_addr(Multiaddr(node.listen_addrs()[0])))
        assert node.connected_peers() == ()
        nursery.cancel_scope.cancel()


async def test_a_listen_address_in_use_stops_the_transport(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # libp2p alone logs the failed bind and runs on, listening nowhere; we refuse to start.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        addr = f"/ip4/127.0.0.1/tcp/{busy.getsockname()[1]}"
        node = Libp2pTransport(make_seed(4), listen=("/ip4/127.0.0.1/tcp/0", addr))
        async with trio.open_nursery() as nursery:
            with trio.fail_after(WAIT_S), pytest.raises(ListenFailed, match="in use") as info:
                await nursery.start(node.run)
    assert addr in str(info.value)
    assert node.connected_peers() == ()
    assert not [r for r in caplog.records if "TCP listener" in r.getMessage()]  # said once


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_bootstrap_peer_is_redialled_after_it_comes_back() -> None:
    port = _free_port()
    seed_a = make_seed(4)
    addr_a = f"/ip4/127.0.0.1/tcp/{port}/p2p/{compute_libp2p_peer_id(seed_a)}"
    fast = TransportSettings(bootstrap_backoff_s_min=0.05, bootstrap_backoff_s_max=0.5)
    b = Libp2pTransport(make_seed(5), bootstrap=(addr_a,), settings=fast)
    events = b.peer_events()
    async with trio.open_nursery() as nursery:
        await nursery.start(b.run)  # A is not up yet: B keeps retrying with backoff
        for _round in range(2):
            a = Libp2pTransport(seed_a, listen=(f"/ip4/127.0.0.1/tcp/{port}",))
            async with trio.open_nursery() as a_nursery:
                await a_nursery.start(a.run)
                with trio.fail_after(WAIT_S):
                    assert await events.receive() == PeerEvent(a.peer_id, True)
                a_nursery.cancel_scope.cancel()
            with trio.fail_after(WAIT_S):
                assert await events.receive() == PeerEvent(a.peer_id, False)
        nursery.cancel_scope.cancel()


async def test_a_garbage_pubsub_frame_drops_that_stream_not_the_node() -> None:
    from libp2p.custom_types import TProtocol
    from libp2p.peer.id import ID

    from p2p.codec import encode_frame

    a, b = Libp2pTransport(make_seed(6)), Libp2pTransport(make_seed(7))
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        await b.connect(a.listen_addrs()[0])
        stream = await b._host.new_stream(ID.from_base58(a.peer_id), [TProtocol("/meshsub/1.1.0")])
        await stream.write(encode_frame(b"\xff" * 64, 1000))  # not a protobuf RPC
        await a.counters.wait_until(lambda: a.counters.drops["rpc_malformed"] >= 1, WAIT_S)

        # the node is alive and still talks to the same peer
        async def echo(peer: str, body: bytes) -> bytes:
            return body

        a.set_request_handler("/x/echo/1", echo)
        assert await b.request(a.peer_id, "/x/echo/1", b"still here") == b"still here"
        nursery.cancel_scope.cancel()


async def test_shutdown_under_load_is_clean() -> None:
    """P22: nodes leaving while neighbours still push messages must not crash anyone."""
    topic = "load/1"
    a, b, c = (Libp2pTransport(make_seed(i)) for i in (8, 9, 10))

    def accept(message: GossipMessage) -> Verdict:
        return Verdict.ACCEPT

    async def flood() -> None:
        i = 0
        while True:
            await a.publish(topic, i.to_bytes(4, "big") * 8192)  # 32 KiB
            i += 1
            await trio.sleep(0.005)  # pacing (~200 msg/s, under libp2p's 500/s rate limit)

    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        inbox_b = await b.subscribe(topic, accept)
        await a.subscribe(topic, accept)
        await b.connect(a.listen_addrs()[0])
        async with trio.open_nursery() as c_nursery:
            await c_nursery.start(c.run)
            inbox_c = await c.subscribe(topic, accept)
            await c.connect(b.listen_addrs()[0])
            await a.wait_topic_peers(topic, 1, WAIT_S)
            await b.wait_topic_peers(topic, 2, WAIT_S)
            nursery.start_soon(flood)
            with trio.fail_after(WAIT_S):
                for _ in range(20):
                    await inbox_c.receive()
            c_nursery.cancel_scope.cancel()  # c leaves mid-stream
        with trio.fail_after(WAIT_S):
            for _ in range(20):
                await inbox_b.receive()  # b still gets a's traffic
        nursery.cancel_scope.cancel()  # everyone stops while a is still publishing
    assert c.connected_peers() == ()
