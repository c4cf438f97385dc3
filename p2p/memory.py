"""The in-memory transport: the same `Transport` interface inside one trio loop, no sockets.

For protocol tests and the simulator. All randomness (link delays, message drops) comes from one
`random.Random(seed)` owned by the `MemoryNetwork`, and partitions are set explicitly, so a run
under trio's `MockClock` is reproducible. Gossip floods along connections between subscribers with
a per-node seen-set, running each hop's validator exactly as the libp2p transport does: ACCEPT is
delivered and forwarded, IGNORE and REJECT are dropped and counted (REJECT lowers a local score).
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import trio

from p2p.abc import (
    GossipMessage,
    PeerEvent,
    PeerId,
    RequestHandler,
    TransportSettings,
    TransportStatistics,
    Validator,
    Verdict,
)
from p2p.counters import BoundedOutbox, Deliveries, TransportCounters, judge
from p2p.errors import (
    DialFailed,
    InvalidAddress,
    MessageTooLarge,
    P2PError,
    RequestFailed,
    RequestTimeout,
    TransportNotRunning,
    UnknownTopic,
    WaitTimeout,
)

SEEN_IDS_MAX = 65_536
REJECT_PENALTY = 10.0


@dataclass(frozen=True, slots=True)
class _Packet:
    ready_at: float
    topic: str
    source: PeerId
    forwarder: PeerId
    data: bytes
    msg_id: bytes


class MemoryNetwork:
    """The shared medium: who is running, seeded link delays and drops, partitions."""

    def __init__(
        self,
        seed: int = 0,
        *,
        delay_s_min: float = 0.0,
        delay_s_max: float = 0.0,
        drop_rate: float = 0.0,
    ) -> None:
        if not 0 <= delay_s_min <= delay_s_max or not 0 <= drop_rate < 1:
            raise ValueError("need 0 <= delay_s_min <= delay_s_max and 0 <= drop_rate < 1")
        self.rng = random.Random(seed)
        self.delay_s_min = delay_s_min
        self.delay_s_max = delay_s_max
        self.drop_rate = drop_rate
        self.nodes: dict[PeerId, MemoryTransport] = {}
        self._group_of: dict[PeerId, int] = {}
        self._changed = trio.Event()
        self.in_flight = 0  # gossip packets queued or being delayed, network-wide
        self._idle = trio.Event()
        self._idle.set()

    def packet_sent(self) -> None:
        self.in_flight += 1
        if self._idle.is_set():
            self._idle = trio.Event()

    def packet_done(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> None:
        """Wait until no gossip packet is in flight anywhere (a quiescent network)."""
        with trio.fail_after(timeout_s):
            while self.in_flight:
                await self._idle.wait()

    def notify_changed(self) -> None:
        """Wake every `wait_topic_peers` (a connection or subscription changed)."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def create(self, peer_id: str, settings: TransportSettings | None = None) -> MemoryTransport:
        return MemoryTransport(self, PeerId(peer_id), settings)

    def partition(self, *groups: set[str] | frozenset[str]) -> None:
        """Split the network: peers in different groups cannot exchange anything."""
        self._group_of = {PeerId(p): i for i, group in enumerate(groups) for p in group}

    def heal(self) -> None:
        self._group_of = {}

    def is_reachable(self, a: PeerId, b: PeerId) -> bool:
        return self._group_of.get(a, -1) == self._group_of.get(b, -1)

    def compute_delay_s(self) -> float:
        if self.delay_s_max == 0:
            return 0.0
        return self.rng.uniform(self.delay_s_min, self.delay_s_max)

    def is_dropped(self) -> bool:
        return self.drop_rate > 0 and self.rng.random() < self.drop_rate


class MemoryTransport:
    """One node on a `MemoryNetwork`; satisfies `p2p.abc.Transport`."""

    def __init__(
        self, network: MemoryNetwork, peer_id: PeerId, settings: TransportSettings | None = None
    ) -> None:
        self.settings = settings or TransportSettings()
        self._network = network
        self._peer_id = peer_id
        self.counters = TransportCounters()
        self._deliveries = Deliveries(
            self.counters, self.settings.delivery_queue_max, self.settings.peer_events_max
        )
        self._inbox: BoundedOutbox[_Packet] = BoundedOutbox(
            self.settings.outbound_queue_max, self.counters, "inbox_full"
        )
        self._validators: dict[str, Validator] = {}
        self._handlers: dict[str, RequestHandler] = {}
        self._peers: set[PeerId] = set()
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._scores: dict[PeerId, float] = {}
        self._seqno = 0
        self._running = False

    @property
    def peer_id(self) -> PeerId:
        return self._peer_id

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if self._peer_id in self._network.nodes:
            raise P2PError(f"peer {self._peer_id} is already running on this network")
        self._network.nodes[self._peer_id] = self
        self._running = True
        try:
            task_status.started()
            async for packet in self._inbox.receive:
                try:
                    await trio.sleep_until(packet.ready_at)
                    self._process(packet)
                finally:
                    self._network.packet_done()
        finally:
            self._running = False
            for _ in range(self._inbox.depth()):  # never processed: no longer in flight
                self._network.packet_done()
            del self._network.nodes[self._peer_id]
            for peer in list(self._peers):
                other = self._network.nodes.get(peer)
                if other is not None:
                    other._on_link(self._peer_id, connected=False)
            self._peers.clear()
            self._deliveries.close()

    def _require_running(self) -> None:
        if not self._running:
            raise TransportNotRunning("the transport is not running")

    # -- peers ------------------------------------------------------------------------------

    def listen_addrs(self) -> tuple[str, ...]:
        return (f"/memory/{self._peer_id}/p2p/{self._peer_id}",)

    def connected_peers(self) -> tuple[PeerId, ...]:
        return tuple(sorted(self._peers))

    def _on_link(self, peer: PeerId, *, connected: bool) -> None:
        if connected == (peer in self._peers):
            return
        if connected:
            self._peers.add(peer)
        else:
            self._peers.discard(peer)
        self._deliveries.events.put(PeerEvent(peer, connected))
        self._network.notify_changed()

    async def connect(self, addr: str) -> PeerId:
        self._require_running()
        parts = addr.split("/")
        if len(parts) != 5 or parts[1] != "memory" or parts[3] != "p2p" or not parts[4]:
            raise InvalidAddress(f"{addr!r} is not a /memory/<name>/p2p/<id> address")
        peer = PeerId(parts[4])
        if peer == self._peer_id:
            raise InvalidAddress("refusing to dial our own peer id")
        await trio.sleep(self._network.compute_delay_s())
        other = self._network.nodes.get(peer)
        if other is None or not self._network.is_reachable(self._peer_id, peer):
            raise DialFailed(f"dial {addr} failed: unreachable")
        self._on_link(peer, connected=True)
        other._on_link(self._peer_id, connected=True)
        return peer

    def peer_events(self) -> trio.MemoryReceiveChannel[PeerEvent]:
        return self._deliveries.events.receive

    # -- gossip -----------------------------------------------------------------------------

    async def subscribe(
        self, topic: str, validator: Validator
    ) -> trio.MemoryReceiveChannel[GossipMessage]:
        self._require_running()
        if self.settings.topics and topic not in self.settings.topics:
            raise UnknownTopic(topic)
        self._validators[topic] = validator
        receive = self._deliveries.open(topic)
        self._network.notify_changed()
        await trio.lowlevel.checkpoint()
        return receive

    def _topic_peers(self, topic: str) -> int:
        nodes = self._network.nodes
        return sum(1 for p in self._peers if (o := nodes.get(p)) and topic in o._validators)

    async def wait_topic_peers(self, topic: str, count: int, timeout_s: float) -> None:
        self._require_running()
        with trio.move_on_after(timeout_s):
            while self._topic_peers(topic) < count:
                await self._network.wait_changed()
            return
        raise WaitTimeout(f"{self._topic_peers(topic)} of {count} peers on {topic}")

    async def publish(self, topic: str, data: bytes) -> None:
        self._require_running()
        if len(data) > self.settings.gossip_bytes_max:
            self.counters.drop("publish_oversize")
            raise MessageTooLarge(f"{len(data)} bytes > {self.settings.gossip_bytes_max}")
        if self.settings.topics and topic not in self.settings.topics:
            raise UnknownTopic(topic)
        self._seqno += 1
        seqno = self._seqno.to_bytes(8, "big")
        msg_id = hashlib.sha256(self._peer_id.encode() + seqno + data).digest()
        self._remember(msg_id)
        self._forward(topic, self._peer_id, data, msg_id, exclude=None)
        self.counters.messages_out[topic] += 1
        await trio.lowlevel.checkpoint()

    def _forward(
        self, topic: str, source: PeerId, data: bytes, msg_id: bytes, exclude: PeerId | None
    ) -> None:
        net = self._network
        for peer in sorted(self._peers):
            other = net.nodes.get(peer)
            if peer == exclude or other is None or topic not in other._validators:
                continue
            if not net.is_reachable(self._peer_id, peer):
                self.counters.drop("partitioned")
                continue
            if net.is_dropped():
                self.counters.drop("link_loss")
                continue
            ready_at = trio.current_time() + net.compute_delay_s()
            if other._inbox.put(_Packet(ready_at, topic, source, self._peer_id, data, msg_id)):
                net.packet_sent()

    def _remember(self, msg_id: bytes) -> bool:
        if msg_id in self._seen:
            return False
        self._seen[msg_id] = None
        while len(self._seen) > SEEN_IDS_MAX:
            self._seen.popitem(last=False)
        return True

    def _process(self, p: _Packet) -> None:
        if p.msg_id in self._seen:
            return
        message = GossipMessage(p.topic, p.source, p.forwarder, p.data, p.msg_id)
        limit = self.settings.gossip_bytes_max
        verdict = judge(self._validators.get(p.topic), message, limit, self.counters)
        if verdict is Verdict.REJECT:
            self._scores[p.forwarder] = self._scores.get(p.forwarder, 0.0) - REJECT_PENALTY
        if verdict is not Verdict.ACCEPT:
            return
        self._remember(p.msg_id)
        self._deliveries.deliver(message)
        self._forward(p.topic, p.source, p.data, p.msg_id, exclude=p.forwarder)

    # -- request/response -------------------------------------------------------------------

    def set_request_handler(self, protocol_id: str, handler: RequestHandler) -> None:
        self._handlers[protocol_id] = handler

    async def request(
        self, peer: PeerId, protocol_id: str, body: bytes, timeout_s: float | None = None
    ) -> bytes:
        self._require_running()
        s = self.settings
        if len(body) > s.request_bytes_max:
            raise MessageTooLarge(f"request of {len(body)} bytes exceeds {s.request_bytes_max}")
        timeout = s.request_timeout_s if timeout_s is None else timeout_s
        with trio.move_on_after(timeout):
            response = await self._exchange(peer, protocol_id, body)
            self.counters.requests_out[protocol_id] += 1
            return response
        self.counters.drop("request_out_timeout")
        raise RequestTimeout(f"{protocol_id} to {peer}: no response within {timeout} s")

    async def _exchange(self, peer: PeerId, protocol_id: str, body: bytes) -> bytes:
        other = self._network.nodes.get(peer)
        if (
            other is None
            or peer not in self._peers
            or not self._network.is_reachable(self._peer_id, peer)
        ):
            self.counters.drop("request_out_failed")
            raise RequestFailed(f"{protocol_id} to {peer}: not connected")
        handler = other._handlers.get(protocol_id)
        if handler is None:
            self.counters.drop("request_out_failed")
            raise RequestFailed(f"{protocol_id} to {peer}: protocol not supported")
        await trio.sleep(self._network.compute_delay_s())
        try:
            response = await handler(self._peer_id, body)
        except P2PError as exc:
            raise RequestFailed(f"remote error: {exc}") from None
        other.counters.requests_in[protocol_id] += 1
        if len(response) > min(self.settings.response_bytes_max, other.settings.response_bytes_max):
            self.counters.drop("request_out_failed")
            raise RequestFailed(f"{protocol_id} to {peer}: response too large")
        await trio.sleep(self._network.compute_delay_s())
        return response

    # -- statistics -------------------------------------------------------------------------

    def statistics(self) -> TransportStatistics:
        topics = self._deliveries.topics()
        mesh = {t: self._topic_peers(t) for t in topics}
        depths = self._deliveries.depths()
        depths["inbox"] = self._inbox.depth()
        return TransportStatistics(
            peer_id=self._peer_id,
            listen_addrs=self.listen_addrs(),
            peers=self.connected_peers(),
            topics=topics,
            mesh=mesh,
            messages_in=self.counters.snapshot_in(),
            messages_out=dict(self.counters.messages_out),
            delivered=dict(self.counters.delivered),
            requests_in=dict(self.counters.requests_in),
            requests_out=dict(self.counters.requests_out),
            queue_depths=depths,
            drops=dict(self.counters.drops),
            peer_scores={p: self._scores.get(p, 0.0) for p in sorted(self._peers)},
        )
