"""The in-memory transport's own promises: seeded determinism, partitions, losses, delays."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

from p2p.abc import GossipMessage, TransportSettings, Verdict
from p2p.memory import MemoryNetwork, MemoryTransport

TOPIC = "t/1"


def accept(message: GossipMessage) -> Verdict:
    return Verdict.ACCEPT


async def _flood(net: MemoryNetwork, n: int, messages: int) -> tuple[list[MemoryTransport], list]:
    """n nodes in a line; node 0 publishes `messages`; returns nodes and what each received."""
    nodes = [net.create(f"m{i}", TransportSettings()) for i in range(n)]
    received: list[list[bytes]] = [[] for _ in nodes]
    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.run)
        inboxes = [await node.subscribe(TOPIC, accept) for node in nodes]
        for a, b in itertools.pairwise(nodes):
            await b.connect(a.listen_addrs()[0])
        for i in range(messages):
            await nodes[0].publish(TOPIC, b"%d" % i)
        await net.wait_idle(600)  # virtual time under MockClock: delays cost nothing
        for k, inbox in enumerate(inboxes):
            while True:
                try:
                    received[k].append(inbox.receive_nowait().data)
                except trio.WouldBlock:
                    break
        nursery.cancel_scope.cancel()
    return nodes, received


def _run(seed: int, drop_rate: float) -> tuple[list[list[bytes]], list[dict[str, int]], float]:
    async def main() -> tuple[list[list[bytes]], list[dict[str, int]], float]:
        net = MemoryNetwork(seed, delay_s_min=0.01, delay_s_max=0.2, drop_rate=drop_rate)
        nodes, received = await _flood(net, 5, 40)
        return received, [dict(n.counters.drops) for n in nodes], trio.current_time()

    clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(main, clock=clock)


def test_same_seed_same_run_and_losses_are_counted() -> None:
    first, second = _run(11, 0.2), _run(11, 0.2)
    assert first == second  # deliveries, drop counters and the virtual end time
    received, drops, _end = first
    assert sum(d.get("link_loss", 0) for d in drops) > 0
    assert len(received[4]) < 40  # losses compound along the line
    other = _run(12, 0.2)
    assert other[0] != received


def test_without_loss_every_message_reaches_every_node() -> None:
    received, drops, _end = _run(5, 0.0)
    assert received[0] == []  # the publisher does not receive its own messages
    expected = sorted(b"%d" % i for i in range(40))
    assert all(sorted(r) == expected for r in received[1:])
    assert all(not d for d in drops)


async def test_partition_blocks_then_heal_restores() -> None:
    net = MemoryNetwork(1)
    a, b = net.create("a"), net.create("b")
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        await a.subscribe(TOPIC, accept)
        inbox = await b.subscribe(TOPIC, accept)
        await b.connect(a.listen_addrs()[0])
        net.partition({"a"}, {"b"})
        await a.publish(TOPIC, b"lost")
        assert a.counters.drops["partitioned"] == 1
        net.heal()
        await a.publish(TOPIC, b"found")
        with trio.fail_after(5):
            assert (await inbox.receive()).data == b"found"
        nursery.cancel_scope.cancel()


def test_network_parameters_are_checked() -> None:
    with pytest.raises(ValueError):
        MemoryNetwork(delay_s_min=1, delay_s_max=0.5)
    with pytest.raises(ValueError):
        MemoryNetwork(drop_rate=1.0)
