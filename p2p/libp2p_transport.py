"""The real transport: py-libp2p 0.8.1 (TCP + Noise + Yamux, GossipSub /meshsub/1.1.0).

The ONLY module that imports libp2p. It applies the fixes for the pitfalls measured in
docs/py-libp2p-pitfalls.md (its labels P1-P22 and A1-A9 are cited below): one connection per peer
(P1), fixed 1 s heartbeat (P2), no self rate limit (P3), bigger counted outbound queues (P4), our
own bounded delivery queues (P5/P6), Noise only (P21), pubsub running before the first dial (P9),
content message ids as raw digests (P15), strict signing (P16), an error for a listen address that
cannot be bound (A7), and an orderly shutdown (P22). Our three-valued `Verdict` is mapped onto
libp2p's boolean validation here and only here: ACCEPT passes, REJECT fails and penalises the
forwarder (GossipSub's score component P4, not pitfall P4), IGNORE fails without the penalty (A4).
Both are counted per topic.

This module is longer than the house ~400 lines because it is the only one allowed to import
libp2p; everything that does not need libp2p lives elsewhere (p2p.reqresp, p2p.bootstrap,
p2p.counters.judge, p2p.codec).
"""

from __future__ import annotations

import hashlib
import logging
import socket
import weakref
from collections.abc import Sequence
from functools import partial
from typing import Any

import libp2p  # noqa: F401  (runs libp2p's logging setup, which we then override)
import libp2p.network.auto_connector as _auto_connector
import libp2p.pubsub.pubsub as _pubsub_mod
import libp2p.pubsub.rpc_queue as _rpc_queue_mod
import libp2p.transport.tcp.tcp as _tcp_mod
import multiaddr
import trio
from google.protobuf.message import DecodeError
from libp2p import create_yamux_muxer_option, new_host
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError, ValidationError
from libp2p.network.config import ConnectionConfig
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.score import ScoreParams, TopicScoreParams
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.tools.anyio_service import background_trio_service

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
from p2p.bootstrap import keep_connected
from p2p.codec import encode_frame
from p2p.counters import Deliveries, TransportCounters, judge
from p2p.errors import (
    DialFailed,
    InvalidAddress,
    ListenFailed,
    MessageTooLarge,
    RequestFailed,
    RequestTimeout,
    TransportNotRunning,
    UnknownTopic,
    WaitTimeout,
)
from p2p.reqresp import exchange_request, serve_request

GOSSIP_PROTOCOLS = ("/meshsub/1.1.0", "/meshsub/1.0.0")  # 1.2.0 doubles the cost (P8)
LOGGER_NAME = "libp2p"
_log = logging.getLogger("p2p.libp2p")
_STREAM_ERRORS = (BaseLibp2pError, OSError, trio.BrokenResourceError, trio.ClosedResourceError)


def tame_libp2p_logging(level: int = logging.WARNING) -> None:
    """Route libp2p's records into our handlers at `level` (its import leaves them unhandled)."""
    lg = logging.getLogger(LOGGER_NAME)
    lg.handlers.clear()
    lg.setLevel(level)
    lg.propagate = True
    # auto_connector forces INFO on import and logs every dial round (P12).
    logging.getLogger(_auto_connector.__name__).setLevel(max(level, logging.WARNING))


tame_libp2p_logging()

_LISTEN_FAILED_PREFIX = "Failed to start TCP listener for "


class _ListenFailures(logging.Filter):
    """libp2p logs a TCP listen it could not bind at ERROR and carries on without it; we raise
    `ListenFailed` instead, so its record is kept here (for the reason) rather than logged too."""

    def __init__(self) -> None:
        super().__init__()
        self.reasons: dict[str, str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(_LISTEN_FAILED_PREFIX):
            return True
        addr, _, reason = message.removeprefix(_LISTEN_FAILED_PREFIX).partition(": ")
        errno_at = reason.find("[Errno ")
        self.reasons[addr] = reason[errno_at:] if errno_at >= 0 else reason
        return False


_listen_failures = _ListenFailures()
logging.getLogger(_tcp_mod.__name__).addFilter(_listen_failures)


class _CountingRpcQueue(_rpc_queue_mod.RpcQueue):
    """libp2p's per-peer outbound queue, sized by us and counting what it refuses (P4)."""

    size_max = 1024
    message_bytes_max = 1 << 20

    def __init__(self) -> None:
        super().__init__(type(self).size_max, type(self).message_bytes_max)
        self.dropped = 0

    def push(self, rpc: rpc_pb2.RPC, priority: bool = False) -> bool:
        ok = super().push(rpc, priority)
        if not ok:
            self.dropped += 1
        return ok


_pubsub_mod.RpcQueue = _CountingRpcQueue  # type: ignore[misc,assignment]


def compute_msg_id(msg: rpc_pb2.Message) -> bytes:
    """Content message id: raw sha256 digest bytes, never hex text (P15)."""
    return hashlib.sha256(msg.from_id + msg.seqno + msg.data).digest()


def compute_libp2p_peer_id(key_seed: bytes) -> PeerId:
    """The peer id libp2p derives from a 32-byte ed25519 seed (equals node.identity's)."""
    return PeerId(ID.from_pubkey(create_new_key_pair(key_seed).public_key).to_base58())


class _ConnNotifee(INotifee):
    """Connection notifications; never blocks (the swarm awaits notifees during setup)."""

    def __init__(self, transport: Libp2pTransport) -> None:
        self._transport = transport

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        sock = _socket_stream_of(conn)
        if sock is not None:
            self._transport._sockets.add(sock)
        self._transport._on_connection_change(network, conn.muxed_conn.peer_id)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._transport._on_connection_change(network, conn.muxed_conn.peer_id)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None


def _socket_stream_of(conn: INetConn) -> trio.SocketStream | None:
    """The TCP socket under a connection (muxer -> Noise -> raw -> TCP stream -> socket)."""
    node: Any = conn
    for name in ("muxed_conn", "secured_conn", "conn", "conn", "stream", "stream"):
        node = getattr(node, name, None)
    return node if isinstance(node, trio.SocketStream) else None


def _make_router() -> GossipSub:
    """GossipSub /meshsub/1.1.0 with the settings of docs/py-libp2p-pitfalls.md (P2, P3, P8, A9)."""
    return GossipSub(
        protocols=[TProtocol(p) for p in GOSSIP_PROTOCOLS],
        degree=6,
        degree_low=4,
        degree_high=12,
        heartbeat_interval=1,
        heartbeat_initial_delay=0.1,
        gossip_window=3,
        gossip_history=5,
        time_to_live=60,
        do_px=False,
        prune_back_off=60,
        unsubscribe_back_off=10,
        adaptive_gossip_enabled=False,  # P2
        max_messages_per_topic_per_second=500,  # P3
        spam_protection_enabled=True,
        eclipse_protection_enabled=False,  # every peer shares 127.0.0.1 in tests and simnet
        score_params=ScoreParams(
            p4_invalid_messages=TopicScoreParams(weight=10.0, cap=100.0, decay=0.9),
            p5_behavior_penalty_weight=1.0,
            p5_behavior_penalty_decay=0.9,
            publish_threshold=-50,
            gossip_threshold=-20,
            graylist_threshold=-80,
        ),
    )


def _first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first exception inside (possibly nested) exception groups."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def _local_ipv4s() -> list[str]:
    try:
        found = socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        found = []
    return sorted({"127.0.0.1", *found}, key=lambda ip: (ip.startswith("127."), ip))


def _parse_addr(addr: str) -> Any:
    try:
        return info_from_p2p_addr(multiaddr.Multiaddr(addr))
    except (ValueError, TypeError, KeyError, BaseLibp2pError) as exc:
        raise InvalidAddress(f"{addr!r} is not a multiaddr with /p2p/<id>: {exc}") from None


class Libp2pTransport:
    """A py-libp2p node behind the `p2p.abc.Transport` protocol."""

    def __init__(
        self,
        key_seed: bytes,
        *,
        listen: Sequence[str] = ("/ip4/127.0.0.1/tcp/0",),
        bootstrap: Sequence[str] = (),
        settings: TransportSettings | None = None,
    ) -> None:
        self.settings = settings or TransportSettings()
        self._key_pair = create_new_key_pair(key_seed)
        self._id = ID.from_pubkey(self._key_pair.public_key)
        self._peer_id = PeerId(self._id.to_base58())
        try:
            self._listen = [multiaddr.Multiaddr(a) for a in listen]
        except ValueError as exc:
            raise InvalidAddress(f"bad listen address in {list(listen)}: {exc}") from None
        self._bootstrap = tuple(bootstrap)
        for addr in self._bootstrap:
            _parse_addr(addr)
        self.counters = TransportCounters()
        self._deliveries = Deliveries(
            self.counters, self.settings.delivery_queue_max, self.settings.peer_events_max
        )
        self._validators: dict[str, Validator] = {}
        self._handlers: dict[str, RequestHandler] = {}
        self._peers: set[PeerId] = set()
        # libp2p 0.8.1 does not close some TCP sockets when the host stops (they are freed, with
        # a ResourceWarning, only when garbage collected); we close them after it has stopped.
        self._sockets: weakref.WeakSet[trio.SocketStream] = weakref.WeakSet()
        self._peers_changed = trio.Event()
        self._topics_changed = trio.Event()
        self._inflight = 0
        self._ignore_pending = False
        self._accepted: tuple[bytes, PeerId] | None = None
        self._running = False
        self._host: Any = None
        self._pubsub: Any = None
        self._router: Any = None

    @property
    def peer_id(self) -> PeerId:
        return self._peer_id

    # -- lifecycle --------------------------------------------------------------------------

    def _build(self) -> None:
        s = self.settings
        _CountingRpcQueue.size_max = s.outbound_queue_max
        _CountingRpcQueue.message_bytes_max = s.rpc_frame_bytes_max
        noise = NoiseTransport(self._key_pair, noise_privkey=create_x25519_key_pair().private_key)
        self._host = new_host(
            key_pair=self._key_pair,
            sec_opt={NOISE_PROTOCOL_ID: noise},  # Noise only: plaintext/secio/TLS refused (P21)
            muxer_opt={k: v for k, v in create_yamux_muxer_option().items() if "yamux" in k},
            connection_config=ConnectionConfig(max_connections_per_peer=1),  # P1
        )
        self._router = _make_router()
        self._pubsub = Pubsub(
            self._host,
            self._router,
            strict_signing=True,
            msg_id_constructor=compute_msg_id,
            max_inbound_rpc_size=s.rpc_frame_bytes_max,
            seen_ttl=120,
            validation_timeout=5.0,
            allowed_topics=set(s.topics) if s.topics else None,
        )
        self._patch_pubsub()
        self._guard_pubsub_streams()
        self._host.get_network().register_notifee(_ConnNotifee(self))
        for protocol_id in self._handlers:
            self._register_handler(protocol_id)

    def _patch_pubsub(self) -> None:
        """Our verdicts, deliveries and subscription events in place of libp2p's."""
        ps = self._pubsub
        # The verdict mapping: our validate_msg replaces libp2p's (and its verdict cache, P14).
        ps.validate_msg = self._validate_msg
        ps.notify_subscriptions = self._notify_subscriptions
        handle_subscription = ps.handle_subscription

        def on_subscription(origin_id: ID, sub_message: rpc_pb2.RPC.SubOpts) -> None:
            handle_subscription(origin_id, sub_message)
            self._topics_changed.set()
            self._topics_changed = trio.Event()

        ps.handle_subscription = on_subscription
        scorer = self._router.scorer
        penalise = scorer.on_invalid_message

        def on_invalid_message(peer: ID, topic: str) -> None:
            if self._ignore_pending:  # IGNORE: dropped like a reject, but no penalty
                self._ignore_pending = False
                return
            penalise(peer, topic)

        scorer.on_invalid_message = on_invalid_message
        self._count_router_refusals()

    def _count_router_refusals(self) -> None:
        """GossipSub's own rate limits drop messages with only a log line: count them (P3)."""
        router = self._router
        checks = (
            ("_check_spam_protection", "rate_limited"),
            ("_check_iwant_rate_limit", "iwant_rate_limited"),
            ("_check_ihave_rate_limit", "ihave_rate_limited"),
        )
        for name, reason in checks:
            original = getattr(router, name)

            def counted(*args: Any, _original: Any = original, _reason: str = reason) -> bool:
                ok = bool(_original(*args))
                if not ok:
                    self.counters.drop(_reason)
                return ok

            setattr(router, name, counted)

    def _guard_pubsub_streams(self) -> None:
        """Two fixes on libp2p's pubsub streams (both measured in tests/p2p):

        1. Writers are serialised per stream. libp2p writes RPCs from its queue loop *and* from
           the pending/replay paths; yamux splits writes above 64 KiB into frames and yields
           between them, so two large RPCs could interleave and corrupt the stream.
        2. A frame that is not a valid RPC (DecodeError) drops that peer's pubsub stream and is
           counted. Unguarded it escaped the reader task and brought the whole host down.
        """
        ps = self._pubsub
        write_msg, read_stream = ps.write_msg, ps.continuously_read_stream
        locks: weakref.WeakKeyDictionary[INetStream, trio.Lock] = weakref.WeakKeyDictionary()

        async def locked_write_msg(stream: INetStream, rpc_msg: rpc_pb2.RPC) -> bool:
            lock = locks.setdefault(stream, trio.Lock())
            async with lock:
                return bool(await write_msg(stream, rpc_msg))

        async def guarded_read_stream(stream: INetStream) -> None:
            try:
                await read_stream(stream)
            except DecodeError:
                self.counters.drop("rpc_malformed")
                await _StreamAdapter(stream).reset()
                ps._handle_dead_peer(stream.muxed_conn.peer_id)

        ps.write_msg = locked_write_msg
        ps.continuously_read_stream = guarded_read_stream

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, start pubsub, report ready, keep bootstrap peers connected until cancelled."""
        self._build()
        try:
            # Pubsub runs before the host accepts or makes any connection (P9).
            async with (
                background_trio_service(self._pubsub),
                background_trio_service(self._router),
                self._host.run(listen_addrs=self._listen),
                trio.open_nursery() as nursery,
            ):
                self._require_listening()
                await self._pubsub.wait_until_ready()
                self._running = True
                for addr in self._bootstrap:
                    nursery.start_soon(self._keep_connected, addr)
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    self._running = False
                    with trio.CancelScope(shield=True):
                        await self._quiesce()
                    nursery.cancel_scope.cancel()
        except* ListenFailed as group:
            raise _first_leaf(group) from None
        except* RuntimeError as group:
            # P22: libp2p's reader can race its own closing nursery; count it, re-raise others.
            rest = group.subgroup(lambda e: "Nursery is closed" not in str(e))
            self.counters.drop("shutdown_race")
            if rest is not None:
                raise rest from None
        finally:
            self._running = False
            self._peers.clear()  # stopped: connected to nobody, whatever libp2p reported last
            self._deliveries.close()
            for sock in list(self._sockets):
                sock.socket.close()

    async def _quiesce(self) -> None:
        """Leave topics and disconnect peers before the services stop, so nothing is in flight."""
        with trio.move_on_after(self.settings.shutdown_timeout_s):
            for topic in list(self._pubsub.topic_ids):
                try:
                    await self._pubsub.unsubscribe(topic)
                except _STREAM_ERRORS:
                    self.counters.drop("shutdown_unsubscribe_error")
            for pid in list(self._host.get_connected_peers()):
                try:
                    await self._host.disconnect(pid)
                except _STREAM_ERRORS:
                    self.counters.drop("shutdown_disconnect_error")

    def _require_listening(self) -> None:
        """Every listen address is bound: libp2p's host would run on without one, unreachable."""
        bound = self._host.get_network().listeners
        for addr in map(str, self._listen):
            if addr not in bound:
                reason = _listen_failures.reasons.pop(addr, "not bound")
                raise ListenFailed(f"cannot listen on {addr}: {reason}")

    def _require_running(self) -> None:
        if not self._running:
            raise TransportNotRunning("the transport is not running")

    # -- peers ------------------------------------------------------------------------------

    def listen_addrs(self) -> tuple[str, ...]:
        """Dialable addresses: a wildcard listen (0.0.0.0) is expanded to this host's IPv4s."""
        if self._host is None:
            return ()
        out: list[str] = []
        for addr in (str(a) for a in self._host.get_addrs()):
            if addr.startswith("/ip4/0.0.0.0/"):
                rest = addr.removeprefix("/ip4/0.0.0.0/")
                out += [f"/ip4/{ip}/{rest}" for ip in _local_ipv4s()]
            else:
                out.append(addr)
        return tuple(dict.fromkeys(out))

    def connected_peers(self) -> tuple[PeerId, ...]:
        return tuple(sorted(self._peers))

    def _on_connection_change(self, network: INetwork, peer: ID) -> None:
        pid = PeerId(peer.to_base58())
        connected = bool(network.get_connections(peer))
        if connected == (pid in self._peers):
            return
        if connected:
            self._peers.add(pid)
        else:
            self._peers.discard(pid)
        self._deliveries.events.put(PeerEvent(pid, connected))
        self._peers_changed.set()
        self._peers_changed = trio.Event()

    async def connect(self, addr: str) -> PeerId:
        self._require_running()
        info = _parse_addr(addr)
        pid = PeerId(info.peer_id.to_base58())
        if pid == self._peer_id:
            raise InvalidAddress("refusing to dial our own peer id")
        with trio.move_on_after(self.settings.connect_timeout_s) as scope:
            try:
                await self._host.connect(info)
            except _STREAM_ERRORS as exc:
                raise DialFailed(f"dial {addr} failed: {type(exc).__name__}: {exc}") from None
        if scope.cancelled_caught:
            raise DialFailed(f"dial {addr} timed out after {self.settings.connect_timeout_s} s")
        return pid

    async def _keep_connected(self, addr: str) -> None:
        pid = PeerId(_parse_addr(addr).peer_id.to_base58())

        async def wait_peers_changed() -> None:
            await self._peers_changed.wait()

        await keep_connected(
            addr,
            self.connect,
            lambda: pid in self._peers,
            wait_peers_changed,
            self.settings,
            self.counters,
        )

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
        await self._pubsub.subscribe(topic)
        return receive

    def _topic_peers(self, topic: str) -> int:
        # Mesh peers, not merely subscribed ones: a publish before the GRAFT reaches nobody.
        mesh = self._router.mesh.get(topic, ())
        return sum(1 for pid in mesh if PeerId(pid.to_base58()) in self._peers)

    async def wait_topic_peers(self, topic: str, count: int, timeout_s: float) -> None:
        self._require_running()
        with trio.move_on_after(timeout_s):
            while self._topic_peers(topic) < count:
                # Subscriptions wake us at once; GRAFTs land on heartbeats without an event.
                with trio.move_on_after(0.1):
                    await self._topics_changed.wait()
            return
        raise WaitTimeout(f"{self._topic_peers(topic)} of {count} mesh peers on {topic}")

    async def publish(self, topic: str, data: bytes) -> None:
        self._require_running()
        if len(data) > self.settings.gossip_bytes_max:
            self.counters.drop("publish_oversize")
            raise MessageTooLarge(f"{len(data)} bytes > {self.settings.gossip_bytes_max}")
        if self.settings.topics and topic not in self.settings.topics:
            raise UnknownTopic(topic)
        await self._pubsub.publish(topic, data)
        self.counters.messages_out[topic] += 1

    async def _validate_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        # No await before the raise: push_msg's penalty runs right after in this same task,
        # which is what makes the `_ignore_pending` hand-off to the scorer safe.
        if msg_forwarder == self._id:
            return  # our own publish; checked in publish()
        if len(msg.topicIDs) != 1:
            self.counters.drop("multi_topic")
            raise ValidationError("one topic per message")
        topic = msg.topicIDs[0]
        forwarder = PeerId(msg_forwarder.to_base58())
        source = PeerId(ID(msg.from_id).to_base58())
        message = GossipMessage(topic, source, forwarder, msg.data, compute_msg_id(msg))
        limit = self.settings.gossip_bytes_max
        verdict = judge(self._validators.get(topic), message, limit, self.counters)
        if verdict is Verdict.ACCEPT:
            self._accepted = (message.msg_id, forwarder)
            return
        self._ignore_pending = verdict is Verdict.IGNORE
        # Seen, so later copies (IWANT replies, replays) are dropped before validation, as in
        # go-libp2p-pubsub; libp2p 0.8.1 marks only accepted messages and re-validates the rest.
        self._pubsub._mark_msg_seen(msg)
        raise ValidationError(verdict.value)

    def _notify_subscriptions(self, msg: rpc_pb2.Message) -> None:
        if msg.from_id == self._id.to_bytes():
            return  # own publishes are not delivered back to us (P6)
        source = PeerId(ID(msg.from_id).to_base58())
        msg_id = compute_msg_id(msg)
        forwarder = source
        if self._accepted is not None and self._accepted[0] == msg_id:
            forwarder = self._accepted[1]
        for topic in msg.topicIDs:
            self._deliveries.deliver(GossipMessage(topic, source, forwarder, msg.data, msg_id))

    # -- request/response -------------------------------------------------------------------

    def set_request_handler(self, protocol_id: str, handler: RequestHandler) -> None:
        self._handlers[protocol_id] = handler
        if self._host is not None:
            self._register_handler(protocol_id)

    def _register_handler(self, protocol_id: str) -> None:
        self._host.set_stream_handler(TProtocol(protocol_id), partial(self._serve, protocol_id))

    async def _serve(self, protocol_id: str, stream: INetStream) -> None:
        if self._inflight >= self.settings.requests_inflight_max:
            self.counters.drop("requests_busy")
            await _StreamAdapter(stream).reset()
            return
        self._inflight += 1
        try:
            peer = PeerId(stream.muxed_conn.peer_id.to_base58())
            handler = self._handlers[protocol_id]
            adapter = _StreamAdapter(stream)
            await serve_request(adapter, peer, protocol_id, handler, self.settings, self.counters)
        finally:
            self._inflight -= 1

    async def request(
        self, peer: PeerId, protocol_id: str, body: bytes, timeout_s: float | None = None
    ) -> bytes:
        self._require_running()
        s = self.settings
        frame = encode_frame(body, s.request_bytes_max)
        timeout = s.request_timeout_s if timeout_s is None else timeout_s
        try:
            target = ID.from_base58(peer)
        except ValueError:
            raise InvalidAddress(f"bad peer id {peer!r}") from None
        with trio.move_on_after(timeout):
            try:
                stream = await self._host.new_stream(target, [TProtocol(protocol_id)])
                response = await exchange_request(_StreamAdapter(stream), frame, s)
            except _STREAM_ERRORS as exc:
                self.counters.drop("request_out_failed")
                raise RequestFailed(f"{protocol_id} to {peer}: {type(exc).__name__}") from None
            except RequestFailed:
                self.counters.drop("request_out_failed")
                raise
            self.counters.requests_out[protocol_id] += 1
            return response
        self.counters.drop("request_out_timeout")
        raise RequestTimeout(f"{protocol_id} to {peer}: no response within {timeout} s")

    # -- statistics -------------------------------------------------------------------------

    def statistics(self) -> TransportStatistics:
        topics = self._deliveries.topics()
        depths = self._deliveries.depths()
        drops = dict(self.counters.drops)
        scores: dict[str, float] = {}
        mesh: dict[str, int] = {}
        if self._pubsub is not None:
            queues = list(self._pubsub.peer_queues.values())
            depths["outbound"] = sum(len(q) for q in queues)
            outbound_dropped = sum(getattr(q, "dropped", 0) for q in queues)
            if outbound_dropped:
                drops["outbound_queue_full"] = outbound_dropped
            mesh = {t: len(self._router.mesh.get(t, ())) for t in topics}
            scorer = self._router.scorer
            scores = {
                ID(pid.to_bytes()).to_base58(): round(scorer.score(pid, list(topics)), 3)
                for pid in self._pubsub.peers
            }
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
            drops=drops,
            peer_scores=scores,
        )


class _StreamAdapter:
    """A libp2p stream as a `p2p.reqresp.ByteStream`: EOF is b"", failures are RequestFailed."""

    def __init__(self, stream: INetStream) -> None:
        self._stream = stream

    async def read(self, n: int) -> bytes:
        try:
            return bytes(await self._stream.read(n))
        except StreamEOF:
            return b""
        except _STREAM_ERRORS as exc:
            raise RequestFailed(f"stream read failed: {type(exc).__name__}") from None

    async def write(self, data: bytes) -> None:
        try:
            await self._stream.write(data)
        except _STREAM_ERRORS as exc:
            raise RequestFailed(f"stream write failed: {type(exc).__name__}") from None

    async def close(self) -> None:
        try:
            await self._stream.close()
        except _STREAM_ERRORS:
            return

    async def reset(self) -> None:
        try:
            await self._stream.reset()
        except _STREAM_ERRORS:
            return
