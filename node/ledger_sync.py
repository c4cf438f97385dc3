"""Anti-entropy over `/dsperse/ledger-sync/1.0.0`: a replica that was offline or partitioned
catches up from any peer without gossip.

A session with a peer compares frontiers (one page at a time, or nothing at all when the two
frontier digests are equal), asks for the entries of every chain where the peer is ahead or
forked (`ledger.sync.compute_entry_requests`), follows `more` pages, then asks by hash for what
pending entries still wait on. Sessions run on every new connection and every
`sync_interval_s` with a random peer, one at a time, each under a timeout and a request budget.

Serving is bounded per peer: a token bucket of requests per second and one of response bytes
per second; over either, the answer is `sync_refused` (`rate_limited`) and the asker backs off.
Every request is a signed envelope of this network (wrong-network, replayed, malformed or
wrongly signed requests are refused and counted by reason).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import trio

from ledger.encoding import decode_entry
from ledger.errors import InvalidTransition
from ledger.sync import (
    EntriesByHashRequest,
    EntriesRequest,
    FrontierItem,
    FrontierRequest,
    compute_entries_by_hash_response,
    compute_entries_response,
    compute_entry_requests,
    compute_frontier,
)
from node.identity import NodeIdentity, compute_peer_id
from node.logs import log_event
from node.ratelimit import PEERS_TRACKED_MAX, PeerLimits
from node.replica import LedgerReplica
from node.topics import PROTOCOL_LEDGER_SYNC
from node.wire import ReplayGuard, WireError, decode_envelope, encode_envelope
from node.wire.ledger_messages import (
    SYNC_ENTRIES_MAX,
    SYNC_FRONTIER_MAX,
    SYNC_HASHES_MAX,
    SYNC_RESPONSE_BYTES_MAX,
    SyncEntriesRequest,
    SyncEntriesResponse,
    SyncFrontierItem,
    SyncFrontierRequest,
    SyncFrontierResponse,
    SyncHashesRequest,
    SyncHashesResponse,
    SyncRefused,
)
from p2p.abc import PeerId, Transport
from p2p.errors import P2PError

REQUEST_BYTES_MAX = 64 * 1024
SESSION_TIMEOUT_S = 60.0
SESSION_REQUESTS_MAX = 4000
REQUEST_TIMEOUT_S = 4.0  # a slow peer must not stall syncing for long: the next round tries another
QUEUE_MAX = 256
_log = logging.getLogger("node.ledger_sync")


class SyncFailed(Exception):
    """A session could not go on with this peer (timeout, refusal, bad answer)."""


@dataclass(frozen=True, slots=True)
class SyncSettings:
    interval_s: float = 2.0
    requests_per_s: float = 50.0
    bytes_per_s: int = 8 * 1024 * 1024


@dataclass(slots=True)
class PeerSync:
    """What we know of one peer's replica, from our last session with it."""

    last_sync_ms: int = 0
    behind: int = 0  # entries the peer had that we lacked (at the session's start)
    ahead: int = 0  # entries we had that the peer lacked
    received: int = 0  # entries we added from it, ever
    sessions: int = 0
    failures: int = 0


class LedgerSync:
    def __init__(
        self,
        replica: LedgerReplica,
        identity: NodeIdentity,
        transport: Transport,
        *,
        now_ms: Callable[[], int],
        rng: random.Random,
        settings: SyncSettings | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.replica = replica
        self.identity = identity
        self.transport = transport
        self.settings = settings or SyncSettings()
        self._now_ms = now_ms
        self._rng = rng
        self._clock = clock
        self._guard = ReplayGuard(entries_max=50_000)
        self._limits = PeerLimits(self.settings.requests_per_s, self.settings.bytes_per_s)
        self._send, self._receive = trio.open_memory_channel[PeerId](QUEUE_MAX)
        self._frontier_cache: tuple[tuple[int, int], bytes] | None = None
        self.peers: OrderedDict[str, PeerSync] = OrderedDict()
        self.counters: Counter[str] = Counter()
        self.refused_in: Counter[str] = Counter()
        self._synced = trio.Event()
        self._last_ts = 0
        self._nursery: trio.Nursery | None = None
        self._gaps: set[bytes] = set()

    # -- client ------------------------------------------------------------------------------

    def on_peer_connected(self, peer: PeerId) -> None:
        try:
            self._send.send_nowait(peer)
        except trio.WouldBlock:
            self.counters["queue_full"] += 1

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.replica.pending_from.append(self.fill_gap_from)
            task_status.started()
            await self._sessions()

    async def _sessions(self) -> None:
        while True:
            peer: PeerId | None = None
            with trio.move_on_after(self.settings.interval_s * self._rng.uniform(0.5, 1.5)):
                peer = await self._receive.receive()
            if peer is None:
                peers = self.transport.connected_peers()
                if not peers:
                    continue
                peer = self._rng.choice(sorted(peers))
            await self.sync_with(peer)

    async def sync_with(self, peer: PeerId) -> bool:
        """One session; True if it completed. Never raises for the peer's faults."""
        info = self._peer(peer)
        self.counters["sessions"] += 1
        try:
            with trio.fail_after(SESSION_TIMEOUT_S):
                await _Session(self, peer, info).run()
        except (SyncFailed, trio.TooSlowError, P2PError) as exc:
            info.failures += 1
            self.counters["sessions_failed"] += 1
            log_event(_log, "ledger_sync_failed", logging.DEBUG, peer=peer, error=str(exc))
            return False
        info.sessions += 1
        info.last_sync_ms = self._now_ms()
        self.counters["sessions_ok"] += 1
        if not self.replica.writable:
            self.replica.recover_own_chain()
        self._synced.set()
        self._synced = trio.Event()
        return True

    async def wait_synced(self) -> None:
        await self._synced.wait()

    async def wait_peers(self, h: bytes, count: int, timeout_s: float) -> dict[str, Any]:
        """Ask connected peers whether they hold entry `h` until `count` do, or the timeout."""
        holders: set[str] = set()
        with trio.move_on_after(timeout_s):
            while len(holders) < count:
                for peer in sorted(set(self.transport.connected_peers()) - holders):
                    try:
                        r = await self.request(peer, SyncHashesRequest((h,)), SyncHashesResponse)
                    except (SyncFailed, P2PError):
                        continue
                    if r.entries:
                        holders.add(peer)
                if len(holders) < count:
                    # Poll again shortly, or at once when something new reached our replica.
                    with trio.move_on_after(0.2):
                        await self.replica.wait_added()
        return {"peers": sorted(holders), "ok": len(holders) >= count}

    def fill_gap_from(self, signer: bytes) -> None:
        """Entries from `signer` wait on a missing one: fetch what is missing from it now."""
        if self._nursery is None or signer in self._gaps:
            return
        missing = tuple(self.replica.lattice.get_missing(SYNC_HASHES_MAX))
        if missing:
            self._gaps.add(signer)
            self._nursery.start_soon(self._fill_gap, signer, missing)

    async def _fill_gap(self, signer: bytes, missing: tuple[bytes, ...]) -> None:
        try:
            self.counters["gap_fetches"] += 1
            await self.fetch_entries(PeerId(compute_peer_id(signer)), missing)
        finally:
            self._gaps.discard(signer)

    async def fetch_entries(self, peer: PeerId, hashes: tuple[bytes, ...]) -> int:
        """Fetch entries by hash from one peer now (e.g. a claim its prover announced)."""
        try:
            r = await self.request(peer, SyncHashesRequest(hashes[:SYNC_HASHES_MAX]),
                                   SyncHashesResponse)  # fmt: skip
            session = _Session(self, peer, self._peer(peer))
            return await session.add(session.decode(r.entries))
        except (SyncFailed, P2PError) as exc:
            log_event(_log, "ledger_fetch_failed", logging.DEBUG, peer=peer, error=str(exc))
            return 0

    def _peer(self, peer: str) -> PeerSync:
        info = self.peers.get(peer)
        if info is None:
            info = self.peers[peer] = PeerSync()
            while len(self.peers) > PEERS_TRACKED_MAX:
                self.peers.popitem(last=False)
        return info

    def _stamp(self) -> int:
        # Strictly increasing: two equal requests in one millisecond would be equal envelopes
        # (ed25519 is deterministic), and the responder's replay guard would refuse the second.
        self._last_ts = max(self._now_ms(), self._last_ts + 1)
        return self._last_ts

    async def request(self, peer: PeerId, body: Any, expect: type) -> Any:
        network_id = self.replica.network_id
        data = encode_envelope(body, self.identity, self._stamp(), network_id=network_id)
        self.counters["requests_out"] += 1
        self.counters["bytes_out"] += len(data)
        raw = await self.transport.request(peer, PROTOCOL_LEDGER_SYNC, data, REQUEST_TIMEOUT_S)
        self.counters["bytes_in"] += len(raw)
        try:
            envelope = decode_envelope(
                raw,
                self._now_ms(),
                bytes_max=SYNC_RESPONSE_BYTES_MAX,
                network_id=self.replica.network_id,
            )
        except WireError as exc:
            raise SyncFailed(f"bad response: {exc}") from None
        if compute_peer_id(envelope.signer) != peer:
            raise SyncFailed("response not signed by the peer")
        if isinstance(envelope.body, SyncRefused):
            self.counters[f"refused_by_peer:{envelope.body.reason}"] += 1
            raise SyncFailed(f"peer refused: {envelope.body.reason}")
        if not isinstance(envelope.body, expect):
            raise SyncFailed(f"unexpected response {envelope.type}")
        return envelope.body

    def frontier_digest(self) -> bytes:
        """A digest of our whole frontier (cached until the lattice changes)."""
        stats = self.replica.lattice.statistics()
        key = (stats.entries, stats.canonical)
        if self._frontier_cache is not None and self._frontier_cache[0] == key:
            return self._frontier_cache[1]
        lattice = self.replica.lattice
        items = []
        for account in lattice.get_accounts():
            head = lattice.get_head(account)
            assert head is not None
            items.append([account, head[0], head[1]])
        digest = hashlib.sha256(msgpack.packb(items, use_bin_type=True)).digest()
        self._frontier_cache = (key, digest)
        return digest

    # -- server ------------------------------------------------------------------------------

    async def handle_request(self, peer: PeerId, data: bytes) -> bytes:
        await trio.lowlevel.checkpoint()
        self.counters["requests_in"] += 1
        now = self._clock()
        if not self._limits.admit(peer, now):
            return self._refuse("rate_limited", 1000)
        try:
            envelope = decode_envelope(
                data,
                self._now_ms(),
                bytes_max=REQUEST_BYTES_MAX,
                network_id=self.replica.network_id,
            )
            if compute_peer_id(envelope.signer) != peer:
                return self._refuse("signer_mismatch", 0)
            # Remembered only once it is known to be the asking peer's own request, so
            # requests signed by throwaway keys cannot push real ones out of the guard.
            self._guard.check_and_remember(envelope, self._now_ms())
        except WireError as exc:
            return self._refuse(exc.reason.value, 0)
        response = self._serve(envelope.body)
        if response is None:
            return self._refuse("wrong_type", 0)
        out = encode_envelope(
            response,
            self.identity,
            self._now_ms(),
            network_id=self.replica.network_id,
            bytes_max=SYNC_RESPONSE_BYTES_MAX,
        )
        self._limits.get(peer, now)[1].charge(len(out), now)  # in full: debt is paid by waiting
        self.counters["served"] += 1
        self.counters["bytes_served"] += len(out)
        return out

    def _serve(self, body: Any) -> Any:
        lattice = self.replica.lattice
        if isinstance(body, SyncFrontierRequest):
            if body.digest and body.digest == self.frontier_digest():
                return SyncFrontierResponse((), more=False, same=True)
            page = compute_frontier(lattice, FrontierRequest(body.after_account, body.items_max))
            items = tuple(SyncFrontierItem(i.account, i.next_seq, i.head) for i in page.items)
            return SyncFrontierResponse(items, more=page.more, same=False)
        if isinstance(body, SyncEntriesRequest):
            request = EntriesRequest(body.account, body.from_seq, body.prev_hash, body.entries_max)
            r = compute_entries_response(lattice, request)
            return SyncEntriesResponse(r.account, r.from_seq, r.entries, r.more)
        if isinstance(body, SyncHashesRequest):
            by_hash = compute_entries_by_hash_response(lattice, EntriesByHashRequest(body.hashes))
            return SyncHashesResponse(by_hash.entries)
        return None

    def _refuse(self, reason: str, retry_after_ms: int) -> bytes:
        self.refused_in[reason] += 1
        return encode_envelope(
            SyncRefused(reason[:64], retry_after_ms),
            self.identity,
            self._now_ms(),
            network_id=self.replica.network_id,
        )

    def statistics(self) -> dict[str, Any]:
        now = self._now_ms()
        return {
            "counters": dict(self.counters),
            "refused_in": dict(self.refused_in),
            "peers": {
                p: {
                    "behind": i.behind,
                    "ahead": i.ahead,
                    "received": i.received,
                    "sessions": i.sessions,
                    "failures": i.failures,
                    "last_sync_age_s": round((now - i.last_sync_ms) / 1000, 1)
                    if i.last_sync_ms
                    else None,
                }
                for p, i in self.peers.items()
            },
        }


class _Session:
    """One anti-entropy session with one peer (bounded by SESSION_REQUESTS_MAX requests)."""

    def __init__(self, sync: LedgerSync, peer: PeerId, info: PeerSync) -> None:
        self.sync, self.peer, self.info = sync, peer, info
        self.replica = sync.replica
        self.requests = 0

    async def ask(self, body: Any, expect: type) -> Any:
        self.requests += 1
        if self.requests > SESSION_REQUESTS_MAX:
            raise SyncFailed("session request budget spent")
        return await self.sync.request(self.peer, body, expect)

    async def run(self) -> None:
        self.sync.counters["rounds"] += 1
        lattice = self.replica.lattice
        digest = self.sync.frontier_digest()
        after, behind, ahead, first = b"", 0, 0, True
        while True:
            page: SyncFrontierResponse = await self.ask(
                SyncFrontierRequest(after, SYNC_FRONTIER_MAX, digest if first else b""),
                SyncFrontierResponse,
            )
            first = False
            if page.same:
                break
            items = [FrontierItem(i.account, i.next_seq, i.head) for i in page.items]
            for item in items:
                head = lattice.get_head(item.account)
                ours = head[0] if head else 0
                behind += max(0, item.next_seq - ours)
                ahead += max(0, ours - item.next_seq)
            for request in compute_entry_requests(lattice, items, SYNC_ENTRIES_MAX):
                await self.fetch_chain(request)
            if not (page.more and page.items):
                break
            after = page.items[-1].account
        await self.fetch_missing()
        self.info.behind, self.info.ahead = behind, ahead

    async def fetch_chain(self, request: EntriesRequest) -> None:
        body = SyncEntriesRequest(
            request.account, request.from_seq, request.prev_hash, SYNC_ENTRIES_MAX
        )
        while True:
            r: SyncEntriesResponse = await self.ask(body, SyncEntriesResponse)
            if r.account != body.account:
                raise SyncFailed("entries of another account")
            entries = self.decode(r.entries)
            await self.add(entries)
            if not (r.more and entries):
                return
            body = SyncEntriesRequest(
                body.account, r.from_seq + len(entries), entries[-1].hash, SYNC_ENTRIES_MAX
            )

    async def fetch_missing(self) -> None:
        for _ in range(64):
            missing = self.replica.lattice.get_missing(SYNC_HASHES_MAX)
            if not missing:
                return
            r: SyncHashesResponse = await self.ask(
                SyncHashesRequest(tuple(missing)), SyncHashesResponse
            )
            if not await self.add(self.decode(r.entries)):
                return

    def decode(self, encoded: tuple[bytes, ...]) -> list[Any]:
        proof_max = self.replica.env.config.proof_bytes_max
        out = []
        for data in encoded:
            try:
                out.append(decode_entry(data, proof_max))
            except InvalidTransition as exc:
                self.replica.refused[exc.reason.value] += 1
                raise SyncFailed(f"undecodable entry: {exc.reason.value}") from None
        return out

    async def add(self, entries: list[Any]) -> int:
        await self.replica.prewarm(entries)
        new = self.replica.add_entries(entries, verified=False, source="sync")
        self.info.received += new
        self.sync.counters["entries_received"] += new
        return new
