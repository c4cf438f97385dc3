"""Peer discovery from capacity adverts: dial advertised peers until connected to `target` peers.

Without it every node stays connected only to its bootstrap peers, so the mesh is a star around
them and their loss partitions the network. Adverts are signed and name the signer's dialable
addresses; only addresses ending in `/p2p/<signer's peer id>` are used, so a node cannot be made
to dial a third party under someone else's name (Noise authenticates the id on connect anyway).
Dials run one at a time from a bounded queue, each under a timeout, with a per-peer retry delay
after a failure. Every offer, dial and failure is counted in `statistics()`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from p2p.abc import PeerId, Transport
from p2p.errors import P2PError

QUEUE_MAX = 64
ADDRS_PER_PEER_MAX = 3
DIAL_TIMEOUT_S = 10.0
RETRY_AFTER_S = 30.0
FAILED_REMEMBERED_MAX = 4096


@dataclass(frozen=True, slots=True)
class DiscoveryStatistics:
    target: int
    offered: int
    queued: int
    dropped_queue_full: int
    dials_ok: int
    dials_failed: int


class PeerDiscovery:
    def __init__(
        self,
        transport: Transport,
        target: int,
        *,
        clock: Callable[[], float] = trio.current_time,
        dial_timeout_s: float = DIAL_TIMEOUT_S,
        retry_after_s: float = RETRY_AFTER_S,
    ) -> None:
        self.transport = transport
        self.target = target
        self._clock = clock
        self._dial_timeout_s = dial_timeout_s
        self._retry_after_s = retry_after_s
        self._send, self._receive = trio.open_memory_channel[tuple[PeerId, tuple[str, ...]]](
            QUEUE_MAX
        )
        self._queued: set[PeerId] = set()
        self._failed_at: dict[PeerId, float] = {}
        self.offered = 0
        self.dropped_queue_full = 0
        self.dials_ok = 0
        self.dials_failed = 0

    def _wants_more(self) -> bool:
        return len(self.transport.connected_peers()) < self.target

    def offer(self, peer: PeerId, addrs: Sequence[str]) -> None:
        """An advert arrived from `peer`; queue a dial if we want more peers (never blocks)."""
        self.offered += 1
        if peer == self.transport.peer_id or peer in self._queued or not self._wants_more():
            return
        if peer in self.transport.connected_peers():
            return
        failed_at = self._failed_at.get(peer)
        if failed_at is not None and self._clock() - failed_at < self._retry_after_s:
            return
        usable = tuple(a for a in addrs if a.endswith(f"/p2p/{peer}") and "/0.0.0.0/" not in a)
        if not usable:
            return
        try:
            self._send.send_nowait((peer, usable[:ADDRS_PER_PEER_MAX]))
        except trio.WouldBlock:
            self.dropped_queue_full += 1
            return
        self._queued.add(peer)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for peer, addrs in self._receive:
            self._queued.discard(peer)
            if peer in self.transport.connected_peers() or not self._wants_more():
                continue
            if await self._dial(addrs):
                self.dials_ok += 1
                self._failed_at.pop(peer, None)
            else:
                self.dials_failed += 1
                self._failed_at[peer] = self._clock()
                if len(self._failed_at) > FAILED_REMEMBERED_MAX:
                    oldest = min(self._failed_at, key=self._failed_at.__getitem__)
                    del self._failed_at[oldest]

    async def _dial(self, addrs: tuple[str, ...]) -> bool:
        for addr in addrs:
            with trio.move_on_after(self._dial_timeout_s):
                try:
                    await self.transport.connect(addr)
                    return True
                except P2PError:
                    continue
        return False

    def statistics(self) -> DiscoveryStatistics:
        return DiscoveryStatistics(
            target=self.target,
            offered=self.offered,
            queued=len(self._queued),
            dropped_queue_full=self.dropped_queue_full,
            dials_ok=self.dials_ok,
            dials_failed=self.dials_failed,
        )
