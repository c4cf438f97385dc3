"""The transport seam: what node/ may ask of a peer-to-peer network, and nothing more.

A transport moves opaque bytes by gossip topic and by request/response protocol id between peers
named by libp2p peer ids. It knows nothing of proofs, ledgers or our wire format. Validation is
three-valued (ACCEPT / IGNORE / REJECT, as in the Ethereum p2p spec): REJECT means the forwarder
misbehaved (its score drops), IGNORE means "not useful now" (dropped silently, no penalty). Both
implementations (`p2p.libp2p_transport`, `p2p.memory`) satisfy `Transport` structurally and pass
the same conformance suite (tests/p2p/test_conformance.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, NewType, Protocol

import trio

if TYPE_CHECKING:
    from p2p.counters import TransportCounters

PeerId = NewType("PeerId", str)


class Verdict(Enum):
    """A validator's decision on one gossip message."""

    ACCEPT = "accept"  # deliver locally and forward
    IGNORE = "ignore"  # drop silently: neither delivered nor forwarded, no penalty
    REJECT = "reject"  # drop and penalise the forwarding peer


@dataclass(frozen=True, slots=True)
class GossipMessage:
    """One gossip message as a validator and a subscriber see it."""

    topic: str
    source: PeerId  # the peer that published (and signed, at the transport level) it
    forwarder: PeerId  # the neighbour it arrived from
    data: bytes
    msg_id: bytes  # content id: sha256 over source, sequence number and data


@dataclass(frozen=True, slots=True)
class PeerEvent:
    """A peer became reachable (first connection) or unreachable (last connection closed)."""

    peer_id: PeerId
    connected: bool


# A validator must be pure and fast: it runs on the event loop for every message and its verdict
# may be cached per message id. State checks (replay, ordering) belong after delivery.
Validator = Callable[[GossipMessage], Verdict]
# A request handler gets (requesting peer, request body) and returns the response body.
RequestHandler = Callable[[PeerId, bytes], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class TransportSettings:
    """Limits and timeouts shared by every transport implementation. Units are in the names."""

    topics: tuple[str, ...] = ()  # the only topics accepted from peers (empty = any)
    gossip_bytes_max: int = 600 * 1024  # payload limit per gossip message, both directions
    rpc_frame_bytes_max: int = 1 << 20  # libp2p pubsub frame limit (RPC with envelope overhead)
    request_bytes_max: int = 1 << 20
    response_bytes_max: int = 8 << 20  # proof bytes are fetched this way
    request_timeout_s: float = 10.0
    connect_timeout_s: float = 10.0
    shutdown_timeout_s: float = 5.0
    delivery_queue_max: int = 1024  # per subscription
    peer_events_max: int = 256
    outbound_queue_max: int = 1024  # per peer (libp2p's default of 32 drops bursts)
    requests_inflight_max: int = 64  # concurrent inbound requests served
    bootstrap_backoff_s_min: float = 0.5
    bootstrap_backoff_s_max: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.gossip_bytes_max < self.rpc_frame_bytes_max:
            raise ValueError("gossip_bytes_max must be positive and below rpc_frame_bytes_max")
        for name in ("request_bytes_max", "response_bytes_max", "delivery_queue_max"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


@dataclass(frozen=True, slots=True)
class TransportStatistics:
    """A snapshot of a transport's state and counters (what dashboards and tests read)."""

    peer_id: PeerId
    listen_addrs: tuple[str, ...]
    peers: tuple[PeerId, ...]
    topics: tuple[str, ...]  # topics subscribed locally
    mesh: Mapping[str, int] = field(default_factory=dict)  # topic -> mesh peers
    messages_in: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # topic->verdict
    messages_out: Mapping[str, int] = field(default_factory=dict)  # topic -> published
    delivered: Mapping[str, int] = field(default_factory=dict)  # topic -> handed to subscriber
    requests_in: Mapping[str, int] = field(default_factory=dict)  # protocol -> served
    requests_out: Mapping[str, int] = field(default_factory=dict)  # protocol -> completed
    queue_depths: Mapping[str, int] = field(default_factory=dict)
    drops: Mapping[str, int] = field(default_factory=dict)  # reason -> count
    peer_scores: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (the control API serves this)."""
        return {
            "peer_id": self.peer_id,
            "listen_addrs": list(self.listen_addrs),
            "peers": list(self.peers),
            "peers_count": len(self.peers),
            "topics": list(self.topics),
            "mesh": dict(self.mesh),
            "messages_in": {t: dict(v) for t, v in self.messages_in.items()},
            "messages_out": dict(self.messages_out),
            "delivered": dict(self.delivered),
            "requests_in": dict(self.requests_in),
            "requests_out": dict(self.requests_out),
            "queue_depths": dict(self.queue_depths),
            "drops": dict(self.drops),
            "peer_scores": dict(self.peer_scores),
        }


class Transport(Protocol):
    """A running peer-to-peer endpoint. All methods except `run` need `run` to have started."""

    counters: TransportCounters  # live counters; `counters.wait_until(...)` waits on them

    @property
    def peer_id(self) -> PeerId: ...

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start, report readiness with `task_status.started()`, serve until cancelled."""

    def listen_addrs(self) -> tuple[str, ...]:
        """Dialable addresses ending in `/p2p/<peer id>`."""

    def connected_peers(self) -> tuple[PeerId, ...]: ...

    async def connect(self, addr: str) -> PeerId:
        """Dial a full multiaddr (`…/p2p/<id>`) within `connect_timeout_s`; the peer's id."""

    async def subscribe(
        self, topic: str, validator: Validator
    ) -> trio.MemoryReceiveChannel[GossipMessage]:
        """Join a topic; accepted messages from others arrive on the returned bounded channel."""

    async def wait_topic_peers(self, topic: str, count: int, timeout_s: float) -> None:
        """Wait until `count` connected peers will get our gossip on `topic` (WaitTimeout)."""

    async def publish(self, topic: str, data: bytes) -> None:
        """Gossip `data` on `topic` (raises MessageTooLarge above `gossip_bytes_max`)."""

    def set_request_handler(self, protocol_id: str, handler: RequestHandler) -> None: ...

    async def request(
        self, peer: PeerId, protocol_id: str, body: bytes, timeout_s: float | None = None
    ) -> bytes:
        """One request, one response, within the timeout; raises RequestFailed subclasses."""

    def peer_events(self) -> trio.MemoryReceiveChannel[PeerEvent]:
        """Connection events (one consumer; bounded; overflow is counted in drops)."""

    def statistics(self) -> TransportStatistics: ...
