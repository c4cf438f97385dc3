"""The node's live ledger replica: its SQLite store, its own chain, gossip in and out, wallet.

Rules it keeps (docs/ledger-in-the-node.md has the reasoning):
- **Store, then publish.** An entry this node signs is stored (fsync) before it is queued for
  gossip, and the chain writer is rebuilt from the store on restart, so a crash never makes the
  node sign a second entry at a seq it already published (a fork, which is slashed).
- **Check before forwarding.** `content_check` runs inside the gossip validator: every entry of a
  `ledger_entries` batch must decode, be the publisher's own and pass the ledger's entry-only
  checks (signature, body, proof). A batch we already hold is ignored (not forwarded again).
  After delivery the entries are added without repeating those checks; the lattice places them
  or keeps them in its bounded pending pool until their dependency arrives.
- **Dry run before signing.** A wallet operation is applied to a copy of the current state
  first; a refused one (insufficient balance, below the minimum stake) writes nothing.
- **Anyone reports a fork.** A replica that holds two entries at one (account, seq) files the
  fork as slash evidence after a random delay, unless the offence is already punished: the
  ledger punishes it once, whoever reports.
Anti-entropy (`node.ledger_sync`) fills in whatever gossip missed.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from ledger.accessors import is_conserved, is_non_negative
from ledger.builders import build_entry
from ledger.constants import HEIGHT_MAX, ZERO_HASH
from ledger.containers import (
    Bond,
    Claim,
    Entry,
    ForkEvidence,
    InvalidProofEvidence,
    Operation,
    ProofStatement,
    Slash,
    Transfer,
    Unbond,
    Withdraw,
)
from ledger.encoding import decode_entry, encode_entry
from ledger.errors import InvalidTransition, Reason
from ledger.lattice import AddResult, AddStatus
from ledger.store import LedgerStore
from ledger.transition import get_account, state_transition
from ledger.verify import compute_offence, verify_entry
from node.errors import NodeError
from node.gossip import GossipIgnore, GossipReject
from node.identity import NodeIdentity, compute_peer_id
from node.logs import log_event
from node.topics import TOPIC_LEDGER
from node.wire import Envelope, WireError, encode_envelope
from node.wire.ledger_messages import GOSSIP_ENTRIES_MAX, LedgerEntries
from p2p.abc import Transport
from p2p.errors import P2PError

OUTBOX_MAX = 10_000
# Our next entry sorts after what we have seen, but never follows a height more than this far
# above the lower median of the funded chains' heads: one peer signing an entry near HEIGHT_MAX
# would otherwise exhaust every replica's heights for good (docs/ledger-in-the-node.md).
HEIGHT_STEP_MAX = 1 << 20
CHECKED_KEPT_MAX = 32  # accepted batches decoded by the validator, awaiting delivery
CHAIN_PAGE = 64
GOSSIP_BATCH_BYTES_MAX = 400 * 1024  # leaves room for the envelope under 512 KiB
REPORTS_PENDING_MAX = 64
_log = logging.getLogger("node.replica")


class WalletRefusal(NodeError):
    """A wallet operation the ledger would refuse; nothing was signed or stored."""


@dataclass(frozen=True, slots=True)
class ReplicaSettings:
    publish_batch_window_s: float = 0.05  # own entries gathered this long into one gossip batch
    # At most one gossip batch per this many seconds: a few Python processes carry only a few
    # gossip messages per second network-wide, so a busy writer sends bigger batches, not more.
    publish_interval_s_min: float = 0.5
    report_delay_s_max: float = 2.0  # fork reports wait a random delay up to this


def describe_account(account: bytes) -> str:
    return compute_peer_id(account)


def proof_of(entry: Entry) -> tuple[ProofStatement, bytes] | None:
    """The (statement, proof) an entry's check must verify, if it carries a proof."""
    op = entry.op
    if isinstance(op, Claim):
        return op.statement.statement, op.proof
    if isinstance(op, Slash) and isinstance(op.evidence, InvalidProofEvidence):
        return op.evidence.statement.statement, op.evidence.proof
    return None


def carries_proof(entry: Entry) -> bool:
    return proof_of(entry) is not None


class LedgerReplica:
    """Owns the node's replica. Not thread-safe: used only from the node's trio loop."""

    def __init__(
        self,
        store: LedgerStore,
        identity: NodeIdentity,
        transport: Transport,
        network_id: bytes,
        *,
        now_ms: Callable[[], int],
        rng: random.Random,
        settings: ReplicaSettings | None = None,
        writable: bool = True,
        fork_own_chain: bool = False,
    ) -> None:
        self.store = store
        self.lattice = store.lattice
        self.env = store.lattice.env
        self.identity = identity
        self.transport = transport
        self.network_id = network_id
        self._now_ms = now_ms
        self._rng = rng
        self.settings = settings or ReplicaSettings()
        # False after `run --resync` until our own chain came back from a peer (never fork it).
        self.writable = writable
        # Fault injection (`run --fault fork-own-chain`): the next own transfer or bond is signed
        # twice at one seq, as a byzantine node would; honest replicas must slash it once.
        self.fork_own_chain = fork_own_chain
        head = self.lattice.get_head(identity.public_key)
        self._seq, self._head, self._height = head if head is not None else (0, ZERO_HASH, 0)
        self._outbox: list[Entry] = []
        self._outbox_changed = trio.Event()
        self._added = trio.Event()
        self._reports: dict[bytes, ForkEvidence] = {}  # offence id -> evidence (scheduled)
        self._nursery: trio.Nursery | None = None
        self.counters: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.on_placed: list[Callable[[Entry], None]] = []  # e.g. the market watching awards
        self._root_cache: tuple[int, bytes] | None = None
        self._checked: OrderedDict[bytes, list[Entry]] = OrderedDict()  # envelope -> entries
        self.pending_from: list[Callable[[bytes], None]] = []  # told who sent an orphan

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._publish_loop)
            task_status.started()

    # -- gossip in ---------------------------------------------------------------------------

    def content_check(self, envelope: Envelope) -> None:
        """Inside the ledger topic's validator: raise GossipReject / GossipIgnore, else pass."""
        if not isinstance(envelope.body, LedgerEntries):
            raise GossipReject("wrong_type")
        entries = self._decode(envelope.body.entries)
        for entry in entries:
            # [REJECT] a gossiped batch carries only the publisher's own entries
            if entry.header.account != envelope.signer:
                raise GossipReject("entry_not_publishers")
            # [REJECT] entries carrying proofs travel by request (anti-entropy), never by gossip:
            # checking one costs an EZKL verification, which must not run in a validator
            if carries_proof(entry):
                raise GossipReject("entry_carries_proof")
        # [IGNORE] every entry is one we already hold (do not forward it again)
        if all(self.lattice.get_entry(e.hash) is not None for e in entries):
            raise GossipIgnore("duplicate")
        for entry in entries:
            try:
                verify_entry(entry, self.env)
            except InvalidTransition as exc:
                if exc.reason is Reason.PROOF_UNDECIDED:
                    raise GossipIgnore("entry_proof_undecided") from None
                raise GossipReject(f"entry_{exc.reason.value}") from None
        # Delivery follows at once: keep the decoded entries for `on_gossip` (bounded).
        self._checked[envelope.digest] = entries
        while len(self._checked) > CHECKED_KEPT_MAX:
            self._checked.popitem(last=False)

    def _decode(self, encoded: tuple[bytes, ...]) -> list[Entry]:
        proof_max = self.env.config.proof_bytes_max
        try:
            return [decode_entry(data, proof_max) for data in encoded]
        except InvalidTransition as exc:
            raise GossipReject(f"entry_{exc.reason.value}") from None

    def on_gossip(self, envelope: Envelope) -> None:
        """A delivered (validator-accepted) batch: add its entries, checks already done."""
        if not isinstance(envelope.body, LedgerEntries):
            return
        entries = self._checked.pop(envelope.digest, None)
        if entries is None:  # not decoded by our validator just now (or evicted meanwhile)
            try:
                entries = self._decode(envelope.body.entries)
            except GossipReject:  # cannot happen for an accepted message; count, never crash
                self.refused["undecodable_after_accept"] += 1
                return
        before = self.lattice.statistics().pending
        self.add_entries(entries, verified=True, source="gossip")
        if self.lattice.statistics().pending > before:
            # A gap (a lost batch): ask the publisher for what is missing now, rather than
            # waiting for the next anti-entropy round.
            for callback in self.pending_from:
                callback(envelope.signer)

    def add_entries(self, entries: list[Entry], *, verified: bool, source: str) -> int:
        """Add entries from a peer; returns how many were new. Counts every outcome."""
        if not entries:
            return 0
        results = self.store.add_many(entries, verified=verified)
        new = 0
        for _, result in results:
            if isinstance(result, InvalidTransition):
                self.refused[result.reason.value] += 1
                continue
            self._count_result(result, source)
            if result.status is not AddStatus.DUPLICATE:
                new += 1
            for placed in result.placed:
                self._check_fork(placed)
                self._notify(placed)
        if new:
            self._added.set()
            self._added = trio.Event()
        return new

    def _notify(self, h: bytes) -> None:
        entry = self.lattice.get_entry(h)
        if entry is not None:
            for callback in self.on_placed:
                callback(entry)

    async def prewarm(self, entries: list[Entry]) -> None:
        """Run the proof verifications these entries need in a thread first (verdicts are
        cached), so adding them does not block the event loop on EZKL."""
        for entry in entries:
            view = proof_of(entry)
            if view is not None:
                await trio.to_thread.run_sync(self.env.verifier.verify, *view)

    def _count_result(self, result: AddResult, source: str) -> None:
        self.counters[f"{result.status.value}_{source}"] += 1
        self.counters[result.status.value] += 1
        self.counters["released"] += max(0, len(result.placed) - 1)
        for _, reason in result.rejected:
            self.refused[reason.value] += 1

    async def wait_added(self) -> None:
        await self._added.wait()

    # -- forks -------------------------------------------------------------------------------

    def _check_fork(self, h: bytes) -> None:
        entry = self.lattice.get_entry(h)
        if entry is None or entry.header.account == self.identity.public_key:
            return
        hashes = sorted(self.lattice.get_slot(entry.header.account, entry.header.seq))
        if len(hashes) < 2:
            return
        first, second = (self.lattice.get_entry(x) for x in hashes[:2])
        assert first is not None and second is not None
        evidence = ForkEvidence(first.header, second.header)
        offence_id = compute_offence(evidence).offence_id
        if offence_id in self._reports or len(self._reports) >= REPORTS_PENDING_MAX:
            return
        self._reports[offence_id] = evidence
        account = describe_account(entry.header.account)
        log_event(_log, "fork_seen", logging.WARNING, account=account, seq=entry.header.seq)
        if self._nursery is not None:
            delay = self._rng.uniform(0, self.settings.report_delay_s_max)
            self._nursery.start_soon(self._report_later, offence_id, delay)

    async def _report_later(self, offence_id: bytes, delay_s: float) -> None:
        await trio.sleep(delay_s)
        evidence = self._reports.pop(offence_id)
        if offence_id in self.lattice.state.offences:
            self.counters["fork_reports_skipped"] += 1  # somebody else reported it first
            return
        try:
            result = self.submit(Slash(evidence))
        except WalletRefusal as exc:
            log_event(_log, "fork_report_failed", logging.WARNING, error=str(exc))
            return
        self.counters["fork_reports_filed"] += 1
        log_event(_log, "fork_reported", logging.WARNING, entry=result["hash"])

    # -- own entries -------------------------------------------------------------------------

    def submit(self, op: Operation) -> dict[str, Any]:
        """Sign, check, store (fsync) and queue for gossip one entry of our own chain."""
        if not self.writable:
            raise WalletRefusal(
                "this replica is being rebuilt from peers (run --resync); it signs nothing until "
                "its own chain is back: retry after the next sync"
            )
        height = self.compute_next_height()
        self._precheck(op, height)
        if height > HEIGHT_MAX:
            raise WalletRefusal("the ledger's heights are exhausted on this replica")
        entry = build_entry(self.identity, self._seq, self._head, height, op)
        try:
            state_transition(self.lattice.state, entry, self.env)  # dry run: changes nothing
        except InvalidTransition as exc:
            raise WalletRefusal(f"the ledger refuses it: {exc.reason.value}") from None
        self.store.add(entry)  # durable from here on: only now may anyone see it
        self._seq, self._head, self._height = self._seq + 1, entry.hash, height
        self.counters["own_entries"] += 1
        self._queue_publish(entry)
        self._notify(entry.hash)
        if self.fork_own_chain and isinstance(op, Transfer | Bond):
            self._sign_fork(entry, op)
        self._added.set()
        self._added = trio.Event()
        return {"hash": entry.hash.hex(), "seq": entry.header.seq, "height": height,
                "kind": type(op).__name__.lower()}  # fmt: skip

    def _sign_fork(self, entry: Entry, op: Transfer | Bond) -> None:
        """The fault: a second, conflicting entry at the same seq (slashable equivocation)."""
        twin_op: Operation = Bond(op.amount + 1)
        if isinstance(op, Transfer):
            twin_op = Transfer(op.recipient, op.amount + 1)
        h = entry.header
        twin = build_entry(self.identity, h.seq, h.prev, h.height, twin_op)
        self.store.add(twin)
        head = self.lattice.get_head(self.identity.public_key)
        assert head is not None
        self._head = head[1]  # the fork resolves to the lower hash; keep writing on it
        self.counters["own_forks_signed"] += 1
        self.fork_own_chain = False  # one offence per start: the rest of its chain is honest
        self._queue_publish(twin)

    def compute_next_height(self) -> int:
        """Lamport: above our own chain and every plausible head (see HEIGHT_STEP_MAX)."""
        lattice = self.lattice
        state = lattice.state
        anchors, heights = [], []
        for account in lattice.get_accounts():
            head = lattice.get_head(account)
            assert head is not None
            heights.append(head[2])
            acct = state.accounts.get(account)
            funded = acct is not None and (acct.balance > 0 or acct.bonded > 0)
            if funded or account in (self.env.config.genesis_account, self.identity.public_key):
                anchors.append(head[2])
        anchors.sort()
        cap = (anchors[(len(anchors) - 1) // 2] if anchors else 0) + HEIGHT_STEP_MAX
        plausible = max((h for h in heights if h <= cap), default=0)
        return max(self._height, plausible) + 1

    def _credits_above(self, height: int) -> int:
        """Transfers to us from entries that will sort after an entry of ours at `height`:
        not spendable by it (only implausibly high entries can be there)."""
        me, total = self.identity.public_key, 0
        for account in self.lattice.get_accounts():
            head = self.lattice.get_head(account)
            assert head is not None
            end = head[0] if head[2] >= height else 0
            while end > 0:  # heights rise along a chain: walk back from its head
                start = max(0, end - CHAIN_PAGE)
                page = self.lattice.get_chain(account, start, end - start)
                above = [e for e in page if e.header.height >= height]
                total += sum(
                    e.op.amount
                    for e in above
                    if isinstance(e.op, Transfer) and e.op.recipient == me
                )
                end = start if len(above) == len(page) else 0
        return total

    def _precheck(self, op: Operation, height: int) -> None:
        """Friendly reasons for the refusals a wallet user meets (the dry run catches all)."""
        state = self.lattice.state
        me = get_account(state, self.identity.public_key)
        bond_min = self.env.config.award_bond_min
        balance = me.balance - self._credits_above(height)
        if isinstance(op, Transfer | Bond) and op.amount > balance:
            raise WalletRefusal(f"insufficient balance: {balance} available, {op.amount} asked")
        if isinstance(op, Transfer) and op.recipient == self.identity.public_key:
            raise WalletRefusal("cannot transfer to yourself")
        if isinstance(op, Bond) and me.bonded + op.amount < bond_min:
            raise WalletRefusal(
                f"stake {me.bonded + op.amount} would be below the network minimum {bond_min}"
            )
        if isinstance(op, Unbond):
            if op.amount > me.bonded:
                raise WalletRefusal(f"insufficient bond: {me.bonded} bonded, {op.amount} asked")
            rest = me.bonded - op.amount
            if 0 < rest < bond_min:
                raise WalletRefusal(
                    f"stake left ({rest}) would be below the network minimum {bond_min}: "
                    f"unbond all {me.bonded} or keep at least {bond_min}"
                )
        if isinstance(op, Withdraw) and not any(m <= height for _, m in me.unbonding):
            pending = ", ".join(f"{a} at height {m}" for a, m in me.unbonding) or "none"
            raise WalletRefusal(f"nothing has matured yet at height {height} ({pending})")

    def _queue_publish(self, entry: Entry) -> None:
        if carries_proof(entry):
            self.counters["not_gossiped_proof"] += 1  # peers fetch it (statements announce it)
            return
        if len(self._outbox) >= OUTBOX_MAX:
            self.counters["outbox_full"] += 1  # stored: anti-entropy will carry it
            return
        self._outbox.append(entry)
        self._outbox_changed.set()

    async def _publish_loop(self) -> None:
        last = -1e9
        while True:
            await self._outbox_changed.wait()
            pace = last + self.settings.publish_interval_s_min - trio.current_time()
            await trio.sleep(max(self.settings.publish_batch_window_s, pace))
            last = trio.current_time()
            while self._outbox:
                batch: list[bytes] = []
                size = 0
                while self._outbox and len(batch) < GOSSIP_ENTRIES_MAX:
                    data = encode_entry(self._outbox[0])
                    if batch and size + len(data) > GOSSIP_BATCH_BYTES_MAX:
                        break
                    batch.append(data)
                    size += len(data)
                    self._outbox.pop(0)
                await self._publish(tuple(batch))
            self._outbox_changed = trio.Event()

    async def _publish(self, batch: tuple[bytes, ...]) -> None:
        try:
            data = encode_envelope(
                LedgerEntries(batch), self.identity, self._now_ms(), network_id=self.network_id
            )
        except WireError as exc:  # one entry too big for gossip: anti-entropy carries it
            self.counters["publish_too_large"] += 1
            log_event(_log, "ledger_publish_skipped", logging.WARNING, error=str(exc))
            return
        try:
            await self.transport.publish(TOPIC_LEDGER, data)
            self.counters["published_batches"] += 1
            self.counters["published_entries"] += len(batch)
        except P2PError as exc:
            self.counters["publish_failed"] += 1
            log_event(_log, "ledger_publish_failed", logging.DEBUG, error=str(exc))

    # -- reading -----------------------------------------------------------------------------

    def wallet(self) -> dict[str, Any]:
        acct = get_account(self.lattice.state, self.identity.public_key)
        return {
            "account": self.identity.peer_id,
            "balance": acct.balance,
            "bonded": acct.bonded,
            "unbonding": [[a, m] for a, m in acct.unbonding],
            "slashed": acct.slashed,
            "height": self.compute_next_height() - 1,
            "seq": self._seq,
        }

    def compute_root(self) -> bytes:
        """The state root, cached until an entry is placed (it costs a full state hash)."""
        key = self.lattice.statistics().entries
        if self._root_cache is None or self._root_cache[0] != key:
            self._root_cache = (key, self.lattice.compute_root())
        return self._root_cache[1]

    def has_entry(self, h: bytes) -> bool:
        return self.lattice.get_entry(h) is not None

    def own_chain_length(self) -> int:
        return self._seq

    def recover_own_chain(self) -> None:
        """After a resync: pick up our own chain as peers returned it, then allow writing."""
        head = self.lattice.get_head(self.identity.public_key)
        if head is not None:
            self._seq, self._head, self._height = head
        self.writable = True
        log_event(_log, "replica_writable", seq=self._seq)

    def summary(self, accounts_max: int = 1000) -> dict[str, Any]:
        lattice = self.lattice
        stats = lattice.statistics()
        state = lattice.state
        accounts = {
            compute_peer_id(a): {
                "balance": s.balance,
                "bonded": s.bonded,
                "unbonding": sum(x for x, _ in s.unbonding),
                "slashed": s.slashed,
            }
            for a, s in sorted(state.accounts.items())[:accounts_max]
        }
        offences = [
            {
                "offender": compute_peer_id(o.offender),
                "reporter": compute_peer_id(o.reporter),
                "penalty": o.penalty,
                "reward": o.reward,
            }
            for _, o in sorted(state.offences.items())
        ]
        return {
            "network_id": self.network_id.hex(),
            "state_root": self.compute_root().hex(),
            "entries": self.store.count,
            "placed": stats.entries,
            "canonical": stats.canonical,
            "pending": stats.pending,
            "accounts_count": len(state.accounts),
            "supply": state.supply,
            "burned": state.burned,
            "escrow": sum(e.available + e.reserved for e in state.escrows.values()),
            "conserved": is_conserved(state) and is_non_negative(state),
            "writable": self.writable,
            "own_seq": self._seq,
            "counters": dict(self.counters),
            "refused": dict(self.refused),
            "accounts": accounts,
            "offences": offences,
        }
