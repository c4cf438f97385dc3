"""The trio node shell: runs a transport, validates and consumes gossip, advertises capacity.

`NodeRuntime.run` starts the transport, subscribes to every protocol topic with its validator,
starts the control API, then publishes this node's signed `CapacityAdvert` every
`advert_interval_s` and logs peers joining and leaving and adverts arriving as structured events.
It stops when cancelled (the CLI cancels it on SIGINT/SIGTERM). It works with any `Transport`
(py-libp2p in production, `p2p.memory` in tests).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from ledger.store import LedgerStore
from node import __version__
from node.config import NodeConfig
from node.control import Routes, serve_control
from node.discovery import PeerDiscovery
from node.gossip import ContentCheck, GossipIgnore, ReplayFilter, TopicValidator
from node.identity import NodeIdentity
from node.ledger_sync import LedgerSync, SyncSettings
from node.logs import log_event
from node.replica import LedgerReplica

if TYPE_CHECKING:
    from node.market.service import MarketService
    from node.market.work import BundleWanter
from node.topics import (
    GOSSIP_TOPICS,
    PROTOCOL_BID,
    PROTOCOL_LEDGER_SYNC,
    PROTOCOL_STATUS,
    TOPIC_CAPACITY,
    TOPIC_LEDGER,
    TOPIC_RATE_PER_S,
)
from node.wire import Envelope, encode_envelope
from node.wire.ledger_messages import LedgerEntries
from node.wire.market_messages import JobAnnounce, ProofStatementMsg
from node.wire.messages import MULTIADDR_LEN_MAX, CapacityAdvert
from p2p.abc import GossipMessage, PeerId, Transport
from p2p.errors import P2PError

ADVERTS_KNOWN_MAX = 4096
ADVERT_ADDRS_MAX = 8
_log = logging.getLogger("node.runtime")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _ezkl_version() -> str:
    try:
        return importlib.metadata.version("ezkl")[:32]
    except importlib.metadata.PackageNotFoundError:
        return ""


class NodeRuntime:
    """One node: transport + validators + advert loop + control API."""

    def __init__(
        self,
        config: NodeConfig,
        identity: NodeIdentity,
        transport: Transport,
        *,
        now_ms: Callable[[], int] = wall_clock_ms,
        control: bool = True,
        store: LedgerStore | None = None,
        network_id: bytes = b"",
        writable: bool = True,
        rng: random.Random | None = None,
        control_token: str | None = None,
        faults: frozenset[str] = frozenset(),
        market: bool = True,
    ) -> None:
        self.config = config
        self.identity = identity
        self.transport = transport
        self._now_ms = now_ms
        self._control = control
        self._control_token = control_token
        self.control_addr = ""
        self.network_id = network_id
        self._rng = rng or random.Random()
        self.replica: LedgerReplica | None = None
        self.sync: LedgerSync | None = None
        if store is not None:
            self.replica = LedgerReplica(
                store, identity, transport, network_id, now_ms=now_ms, rng=self._rng,
                writable=writable, fork_own_chain="fork-own-chain" in faults,
            )  # fmt: skip
            ledger = config.ledger
            self.sync = LedgerSync(
                self.replica,
                identity,
                transport,
                now_ms=now_ms,
                rng=self._rng,
                settings=SyncSettings(
                    ledger.sync_interval_s, ledger.sync_requests_per_s, ledger.sync_bytes_per_s
                ),
            )
        self.faults = faults
        self._ezkl_version = _ezkl_version()
        self.market: MarketService | None = None
        self._wanter: BundleWanter | None = None
        if self.replica is not None and self.sync is not None and market:
            from node.market.build import build_market

            self.market, self._wanter = build_market(
                config, identity, transport, self.replica, self.sync, now_ms=now_ms,
                network_id=network_id, rng=self._rng, software_version=__version__,
                ezkl_version=self._ezkl_version, faults=faults,
            )  # fmt: skip
        self.validators = {
            t: TopicValidator(
                t,
                now_ms,
                network_id=network_id,
                content_check=self._check_of(t),
                rate_per_s=TOPIC_RATE_PER_S[t],
            )
            for t in GOSSIP_TOPICS
        }
        self._replays = ReplayFilter(now_ms, network_id)
        self.adverts: OrderedDict[str, tuple[CapacityAdvert, int]] = OrderedDict()
        self.adverts_published = 0
        self.adverts_received = 0
        self._started_ms = 0
        self._adverts_changed = trio.Event()
        self.discovery = PeerDiscovery(transport, config.network.peers_target)

    def _check_of(self, topic: str) -> ContentCheck | None:
        if topic != TOPIC_LEDGER or self.replica is None:
            return None
        if "drop-ledger-gossip" in self.faults:

            def drop(envelope: Envelope) -> None:
                raise GossipIgnore("fault_drop_ledger_gossip")

            return drop
        return self.replica.content_check

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.transport.run)
            for topic in GOSSIP_TOPICS:
                channel = await self.transport.subscribe(topic, self.validators[topic])
                nursery.start_soon(self._consume, channel)
            self.transport.set_request_handler(PROTOCOL_STATUS, self._serve_status)
            if self.replica is not None and self.sync is not None:
                await nursery.start(self.replica.run)
                await nursery.start(self.sync.run)
                self.transport.set_request_handler(PROTOCOL_LEDGER_SYNC, self.sync.handle_request)
            if self.market is not None and self._wanter is not None:
                await nursery.start(self.market.run)
                self.market.work.attach(nursery)
                self._wanter.attach()
                self.market.work.fetch.install()
                self.transport.set_request_handler(PROTOCOL_BID, self.market.handle_bid)
                self.market.core.addrs = tuple(
                    a for a in self.transport.listen_addrs() if len(a) <= MULTIADDR_LEN_MAX
                )[:ADVERT_ADDRS_MAX]
                assert self.replica is not None
                self.replica.on_placed.append(self.market.on_entry_placed)
            if self._control:
                self.control_addr = await nursery.start(
                    partial(serve_control, token=self._control_token),
                    self.config.control.listen,
                    self._routes(),
                )
            nursery.start_soon(self._log_peer_events)
            await nursery.start(self.discovery.run)
            nursery.start_soon(self._advertise)
            self._started_ms = self._now_ms()
            log_event(
                _log,
                "node_started",
                peer=self.identity.peer_id,
                listen=list(self.transport.listen_addrs()),
                control=self.control_addr,
                version=__version__,
            )
            task_status.started()

    # -- adverts ----------------------------------------------------------------------------

    def build_advert(self) -> CapacityAdvert:
        p = self.config.prover
        addrs = tuple(a for a in self.transport.listen_addrs() if len(a) <= MULTIADDR_LEN_MAX)
        free = p.slots if self.market is None else self.market.core.free_slots(self._now_ms())
        return CapacityAdvert(
            free_slots=min(free, max(p.slots, 1)),
            total_slots=max(p.slots, 1),
            price_per_slice=p.price_per_slice,
            max_logrows=p.max_logrows,
            memory_mb_max=p.memory_mb_max,
            software_version=__version__,
            ezkl_version=self._ezkl_version,
            listen_addrs=addrs[:ADVERT_ADDRS_MAX],
        )

    async def _advertise(self) -> None:
        interval = self.config.network.advert_interval_s
        while True:
            data = encode_envelope(
                self.build_advert(), self.identity, self._now_ms(), network_id=self.network_id
            )
            try:
                await self.transport.publish(TOPIC_CAPACITY, data)
                self.adverts_published += 1
                log_event(_log, "advert_published", logging.DEBUG, n=self.adverts_published)
            except P2PError as exc:
                log_event(_log, "advert_publish_failed", logging.WARNING, error=str(exc))
            await trio.sleep(interval)

    # -- inbound ----------------------------------------------------------------------------

    async def _consume(self, channel: trio.MemoryReceiveChannel[GossipMessage]) -> None:
        async for message in channel:
            envelope = self._replays.process(message)
            if envelope is None:
                continue
            if isinstance(envelope.body, CapacityAdvert):
                self._remember_advert(message.source, envelope.body)
            elif isinstance(envelope.body, LedgerEntries) and self.replica is not None:
                self.replica.on_gossip(envelope)
            elif self.market is not None and isinstance(
                envelope.body, JobAnnounce | ProofStatementMsg
            ):
                self.market.on_gossip(envelope.signer, envelope.body)

    def _remember_advert(self, peer: PeerId, advert: CapacityAdvert) -> None:
        self.adverts_received += 1
        previous = self.adverts.get(peer)
        is_new = previous is None
        changed = previous is None or previous[0] != advert  # e.g. a restarted peer, new addrs
        self.adverts[peer] = (advert, self._now_ms())
        self.adverts.move_to_end(peer)
        while len(self.adverts) > ADVERTS_KNOWN_MAX:
            self.adverts.popitem(last=False)
        self._adverts_changed.set()
        self._adverts_changed = trio.Event()
        self.discovery.offer(peer, advert.listen_addrs)
        log_event(
            _log,
            "advert_received",
            logging.INFO if changed else logging.DEBUG,
            peer=peer,
            new=is_new,
            changed=changed,
            free_slots=advert.free_slots,
            price=advert.price_per_slice,
            version=advert.software_version,
        )

    async def wait_providers(self, peers: set[str], timeout_s: float) -> None:
        """Wait until adverts from all of `peers` are known (raises trio.TooSlowError)."""
        with trio.fail_after(timeout_s):
            while not peers <= self.adverts.keys():
                await self._adverts_changed.wait()

    async def _log_peer_events(self) -> None:
        async for event in self.transport.peer_events():
            if event.connected:
                log_event(_log, "peer_connected", peer=event.peer_id)
                if self.sync is not None:
                    self.sync.on_peer_connected(event.peer_id)
            else:
                if self.adverts.pop(event.peer_id, None) is not None:
                    self._adverts_changed.set()
                    self._adverts_changed = trio.Event()
                log_event(_log, "peer_disconnected", peer=event.peer_id)

    async def _serve_status(self, peer: PeerId, body: bytes) -> bytes:
        await trio.lowlevel.checkpoint()
        return json.dumps(self._summary()).encode()

    # -- statistics -------------------------------------------------------------------------

    def _routes(self) -> Routes:
        routes: Routes = {
            "/status": self.statistics,
            "/health": self._health,
            "/metrics": self._metrics,
        }
        if self.replica is not None and self.sync is not None:
            from node.wallet_api import build_wallet_routes

            routes.update(build_wallet_routes(self.replica, self.sync))
        if self.market is not None:
            from node.market.api import build_market_routes

            routes.update(build_market_routes(self.market))
        return routes

    def _metrics(self) -> tuple[str, bytes]:
        from node.metrics import CONTENT_TYPE, render_metrics

        return CONTENT_TYPE, render_metrics(self.statistics)

    def _health(self) -> dict[str, Any]:
        return {
            "ok": True,
            "peer_id": self.identity.peer_id,
            "network_id": self.network_id.hex(),
        }

    def _summary(self) -> dict[str, Any]:
        return {
            "peer_id": self.identity.peer_id,
            "version": __version__,
            "uptime_s": round((self._now_ms() - self._started_ms) / 1000, 1),
            "adverts_published": self.adverts_published,
            "adverts_received": self.adverts_received,
            "replays_dropped": self._replays.replays,
            "expired_dropped": self._replays.expired,
            "network_id": self.network_id.hex(),
        }

    def statistics(self) -> dict[str, Any]:
        """JSON-ready snapshot: node summary, transport statistics, gossip verdict reasons."""
        return {
            "node": self._summary(),
            "control": self.control_addr,
            "transport": self.transport.statistics().to_dict(),
            "gossip": {t: dict(v.reasons) for t, v in self.validators.items() if v.reasons},
            "discovery": dataclasses.asdict(self.discovery.statistics()),
            "providers": {
                peer: {"free_slots": a.free_slots, "price": a.price_per_slice, "seen_ms": ts}
                for peer, (a, ts) in self.adverts.items()
            },
            "ledger": self._ledger_statistics(),
            "market": self.market.statistics() if self.market is not None else None,
        }

    def _ledger_statistics(self) -> dict[str, Any] | None:
        """The replica without per-account detail (that is `GET /ledger`)."""
        if self.replica is None or self.sync is None:
            return None
        summary = self.replica.summary(accounts_max=0)
        summary.pop("accounts")
        return {**summary, "sync": self.sync.statistics()}
