"""One conformance suite, run against both transports (in-memory and real py-libp2p)."""

from __future__ import annotations

import json

import pytest
import trio

from p2p.abc import GossipMessage, PeerEvent, TransportSettings, Verdict
from p2p.errors import (
    DialFailed,
    InvalidAddress,
    MessageTooLarge,
    RequestFailed,
    RequestTimeout,
    TransportNotRunning,
)
from tests.p2p.cluster import KINDS, make_transport, open_cluster

TOPIC = "test/topic/1"
RR = "/dsperse/test/echo/1"
WAIT_S = 10.0


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def accept_all(msg: GossipMessage) -> Verdict:
    return Verdict.ACCEPT


def by_prefix(msg: GossipMessage) -> Verdict:
    if msg.data.startswith(b"reject"):
        return Verdict.REJECT
    if msg.data.startswith(b"ignore"):
        return Verdict.IGNORE
    return Verdict.ACCEPT


async def receive(channel: trio.MemoryReceiveChannel[GossipMessage]) -> GossipMessage:
    with trio.fail_after(WAIT_S):
        return await channel.receive()


async def test_listen_addrs_end_with_own_peer_id(kind: str) -> None:
    async with open_cluster(kind, 1) as (a,):
        addrs = a.listen_addrs()
        assert addrs
        assert all(addr.endswith(f"/p2p/{a.peer_id}") for addr in addrs)


async def test_connect_emits_peer_events_on_both_sides(kind: str) -> None:
    async with open_cluster(kind, 2) as (a, b):
        with trio.fail_after(WAIT_S):
            assert await a.peer_events().receive() == PeerEvent(b.peer_id, True)
            assert await b.peer_events().receive() == PeerEvent(a.peer_id, True)
        assert a.connected_peers() == (b.peer_id,)
        assert b.connected_peers() == (a.peer_id,)


async def test_gossip_reaches_every_subscriber_over_two_hops(kind: str) -> None:
    async with open_cluster(kind, 3) as (a, b, c):
        subs = [await t.subscribe(TOPIC, accept_all) for t in (a, b, c)]
        await a.wait_topic_peers(TOPIC, 1, WAIT_S)
        await b.wait_topic_peers(TOPIC, 2, WAIT_S)
        await c.wait_topic_peers(TOPIC, 1, WAIT_S)
        await a.publish(TOPIC, b"hello")
        for sub in subs[1:]:
            msg = await receive(sub)
            assert (msg.topic, msg.source, msg.data) == (TOPIC, a.peer_id, b"hello")
            assert len(msg.msg_id) == 32
        got_c = c.statistics()
        assert got_c.messages_in[TOPIC]["accept"] == 1
        assert got_c.delivered[TOPIC] == 1
        assert a.statistics().messages_out[TOPIC] == 1
        # the publisher never gets its own message back
        assert subs[0].statistics().current_buffer_used == 0


async def test_reject_and_ignore_are_dropped_counted_and_only_reject_penalises(kind: str) -> None:
    async with open_cluster(kind, 2) as (a, b):
        await a.subscribe(TOPIC, accept_all)
        sub_b = await b.subscribe(TOPIC, by_prefix)
        await a.wait_topic_peers(TOPIC, 1, WAIT_S)
        await b.wait_topic_peers(TOPIC, 1, WAIT_S)
        await a.publish(TOPIC, b"ignore me")
        await a.publish(TOPIC, b"reject me")
        await a.publish(TOPIC, b"fine")
        assert (await receive(sub_b)).data == b"fine"
        # the three may arrive in any order
        await b.counters.wait_until(
            lambda: sum(b.counters.messages_in[TOPIC].values()) >= 3, WAIT_S
        )
        stats = b.statistics()
        assert stats.messages_in[TOPIC] == {"accept": 1, "ignore": 1, "reject": 1}
        assert stats.delivered[TOPIC] == 1
        assert stats.peer_scores[a.peer_id] < 0
        assert sub_b.statistics().current_buffer_used == 0


async def test_ignore_alone_does_not_lower_the_score(kind: str) -> None:
    async with open_cluster(kind, 2) as (a, b):
        await a.subscribe(TOPIC, accept_all)
        sub_b = await b.subscribe(TOPIC, by_prefix)
        await a.wait_topic_peers(TOPIC, 1, WAIT_S)
        await b.wait_topic_peers(TOPIC, 1, WAIT_S)
        for i in range(3):
            await a.publish(TOPIC, b"ignore %d" % i)
        await a.publish(TOPIC, b"fine")
        assert (await receive(sub_b)).data == b"fine"
        await b.counters.wait_until(lambda: b.counters.messages_in[TOPIC]["ignore"] >= 3, WAIT_S)
        assert b.statistics().peer_scores[a.peer_id] >= 0


async def test_oversize_from_a_peer_is_rejected_and_later_traffic_flows(kind: str) -> None:
    small = TransportSettings(gossip_bytes_max=1000)
    big = TransportSettings(gossip_bytes_max=200_000)
    from p2p.memory import MemoryNetwork

    net = MemoryNetwork(1)
    sender, receiver = make_transport(kind, 10, big, net), make_transport(kind, 11, small, net)
    async with trio.open_nursery() as nursery:
        await nursery.start(sender.run)
        await nursery.start(receiver.run)
        await sender.subscribe(TOPIC, accept_all)
        sub = await receiver.subscribe(TOPIC, accept_all)
        await receiver.connect(sender.listen_addrs()[0])
        await sender.wait_topic_peers(TOPIC, 1, WAIT_S)
        with pytest.raises(MessageTooLarge):
            await receiver.publish(TOPIC, b"x" * 1001)
        await sender.publish(TOPIC, b"x" * 100_000)
        await sender.publish(TOPIC, b"after")
        assert (await receive(sub)).data == b"after"
        await receiver.counters.wait_until(lambda: receiver.counters.drops["oversize"] >= 1, WAIT_S)
        stats = receiver.statistics()
        assert stats.messages_in[TOPIC] == {"reject": 1, "accept": 1}
        assert stats.drops["publish_oversize"] == 1
        assert receiver.connected_peers() == (sender.peer_id,)
        nursery.cancel_scope.cancel()


async def echo(peer: str, body: bytes) -> bytes:
    return body[::-1]


async def test_request_response_round_trip_with_multi_mib_body(kind: str) -> None:
    settings = TransportSettings(response_bytes_max=6 << 20)
    async with open_cluster(kind, 2, settings) as (a, b):

        async def blob(peer: str, body: bytes) -> bytes:
            assert peer == a.peer_id
            return bytes(range(256)) * (int(body) // 256)

        b.set_request_handler(RR, echo)
        b.set_request_handler(RR + "/blob", blob)
        assert await a.request(b.peer_id, RR, b"abc") == b"cba"
        data = await a.request(b.peer_id, RR + "/blob", b"%d" % (5 << 20), timeout_s=60)
        assert len(data) == 5 << 20 and data[:3] == b"\x00\x01\x02"
        assert b.statistics().requests_in == {RR: 1, RR + "/blob": 1}
        assert a.statistics().requests_out == {RR: 1, RR + "/blob": 1}


async def test_request_failures_are_specific(kind: str) -> None:
    settings = TransportSettings(request_bytes_max=1000, response_bytes_max=2000)
    async with open_cluster(kind, 2, settings) as (a, b):
        from p2p.errors import P2PError

        async def refuse(peer: str, body: bytes) -> bytes:
            raise P2PError("no such proof")

        async def too_big(peer: str, body: bytes) -> bytes:
            return b"y" * 3000

        async def stall(peer: str, body: bytes) -> bytes:
            await trio.sleep_forever()
            raise AssertionError

        for suffix, handler in (("/refuse", refuse), ("/big", too_big), ("/stall", stall)):
            b.set_request_handler(RR + suffix, handler)
        with pytest.raises(MessageTooLarge):
            await a.request(b.peer_id, RR + "/refuse", b"z" * 1001)
        with pytest.raises(RequestFailed, match="no such proof"):
            await a.request(b.peer_id, RR + "/refuse", b"q")
        with pytest.raises(RequestFailed):
            await a.request(b.peer_id, RR + "/unknown", b"q")
        with pytest.raises(RequestFailed):
            await a.request(b.peer_id, RR + "/big", b"q")
        with pytest.raises(RequestTimeout):
            await a.request(b.peer_id, RR + "/stall", b"q", timeout_s=0.5)


async def test_peer_leaving_is_reported(kind: str) -> None:
    from p2p.memory import MemoryNetwork

    net = MemoryNetwork(2)
    a = make_transport(kind, 20, TransportSettings(), net)
    b = make_transport(kind, 21, TransportSettings(), net)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        async with trio.open_nursery() as b_nursery:
            await b_nursery.start(b.run)
            await a.connect(b.listen_addrs()[0])
            with trio.fail_after(WAIT_S):
                assert await a.peer_events().receive() == PeerEvent(b.peer_id, True)
            b_nursery.cancel_scope.cancel()
        with trio.fail_after(WAIT_S):
            assert await a.peer_events().receive() == PeerEvent(b.peer_id, False)
        assert a.connected_peers() == ()
        nursery.cancel_scope.cancel()


async def test_bad_addresses_and_unreachable_peers(kind: str) -> None:
    async with open_cluster(kind, 1) as (a,):
        with pytest.raises(InvalidAddress):
            await a.connect("not a multiaddr")
        with pytest.raises(InvalidAddress):
            await a.connect(a.listen_addrs()[0])
        if kind == "memory":
            dead = "/memory/ghost/p2p/ghost"
        else:
            other = make_transport(kind, 99, TransportSettings())
            dead = f"/ip4/127.0.0.1/tcp/1/p2p/{other.peer_id}"
        with pytest.raises(DialFailed):
            await a.connect(dead)


async def test_use_before_run_is_refused(kind: str) -> None:
    from p2p.memory import MemoryNetwork

    t = make_transport(kind, 30, TransportSettings(), MemoryNetwork())
    with pytest.raises(TransportNotRunning):
        await t.publish(TOPIC, b"x")


async def test_statistics_are_json_ready(kind: str) -> None:
    async with open_cluster(kind, 2) as (a, _b):
        await a.subscribe(TOPIC, accept_all)
        doc = json.loads(json.dumps(a.statistics().to_dict()))
        assert doc["peer_id"] == a.peer_id
        assert doc["topics"] == [TOPIC]
        assert doc["peers_count"] == 1
        assert "delivery:" + TOPIC in doc["queue_depths"]
