"""Test helpers: start N transports of one kind inside a nursery and wire them up."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from p2p.abc import Transport, TransportSettings
from p2p.memory import MemoryNetwork

KINDS = ("memory", "libp2p")


def make_seed(i: int, salt: str = "") -> bytes:
    return hashlib.sha256(f"dsperse-test-{salt}-{i}".encode()).digest()


def make_transport(
    kind: str, i: int, settings: TransportSettings, network: MemoryNetwork | None = None
) -> Transport:
    if kind == "memory":
        assert network is not None
        return network.create(f"mem-{i}", settings)
    from p2p.libp2p_transport import Libp2pTransport

    return Libp2pTransport(make_seed(i), listen=("/ip4/127.0.0.1/tcp/0",), settings=settings)


@asynccontextmanager
async def open_cluster(
    kind: str,
    n: int,
    settings: TransportSettings | None = None,
    *,
    topology: str = "line",
    seed: int = 0,
) -> AsyncIterator[list[Transport]]:
    """N running transports; `line` connects i to i+1, `star` connects everyone to node 0."""
    settings = settings or TransportSettings()
    network = MemoryNetwork(seed) if kind == "memory" else None
    nodes = [make_transport(kind, i, settings, network) for i in range(n)]
    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.run)
        for i in range(1, n):
            target = nodes[i - 1] if topology == "line" else nodes[0]
            await nodes[i].connect(target.listen_addrs()[0])
        yield nodes
        nursery.cancel_scope.cancel()
