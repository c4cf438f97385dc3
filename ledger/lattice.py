"""The replica: a set of entries (a block-lattice of per-account chains) and the state it implies.

How the state is a function of the *set* of entries, whatever the arrival order:

1. Entry-only checks (`verify.py`) run once on arrival; a failure refuses the entry.
2. An entry whose predecessor (or, for a claim, the award it claims) is not here yet waits in a
   bounded pending pool and is placed when that dependency arrives. Placing checks the links:
   prev is the same account's entry at seq - 1, and the height is above prev's and the award's.
3. Each account's canonical chain is chosen from the placed entries alone: from seq 0, follow
   the child with the lowest hash. So a fork (two entries at one (account, seq)) resolves the same
   way everywhere; the losing branch stays in the set (it is slash evidence) but is not applied.
4. The canonical entries of all chains are applied in the canonical order, sorted by
   `compute_order_key`: (Lamport height, hash), with slash evidence placed right after the offence
   it proves. Heights rise along every chain and above every claimed award, so this order respects
   every dependency. An entry the state rejects where it sits is kept, has no effect, and its
   reason is recorded (like a failed transaction).

The common case (a new entry extends a chain and sorts after everything applied) is applied
incrementally. Anything else (a late entry, a fork that changes a canonical chain, evidence of an
old offence) marks the state dirty, and the next read re-applies the canonical order from the
newest snapshot before the earliest affected key (snapshots are taken every `snapshot_every`
applications). Either path computes the same fold, so replicas holding the same set agree.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum

from ledger.accessors import hash_state
from ledger.constants import DOMAIN_STATE
from ledger.containers import Award, Entry, ForkEvidence, LedgerState
from ledger.encoding import pack
from ledger.env import LedgerEnv
from ledger.errors import InvalidTransition, Reason, require
from ledger.transition import copy_state, process_entry
from ledger.verify import compute_order_key, compute_references, verify_entry

OrderKey = tuple[int, int, bytes]


class AddStatus(Enum):
    ADDED = "added"  # placed in the lattice (canonical or on a side branch)
    PENDING = "pending"  # waiting for a dependency
    DUPLICATE = "duplicate"  # already held


@dataclass(frozen=True, slots=True)
class AddResult:
    status: AddStatus
    placed: tuple[bytes, ...] = ()  # this entry and pending entries it released
    rejected: tuple[tuple[bytes, Reason], ...] = ()  # released entries that failed their links


class EntryStatus(Enum):
    APPLIED = "applied"
    SKIPPED = "skipped"  # canonical, but the state rejected it where it sits
    SIDE_BRANCH = "side_branch"  # lost a fork
    PENDING = "pending"
    UNKNOWN = "unknown"


class Lattice:
    """A replica's entries and state. Not thread-safe; one owner mutates it."""

    def __init__(self, env: LedgerEnv, snapshot_every: int = 4096) -> None:
        self.env = env
        self._snapshot_every = snapshot_every
        self._entries: dict[bytes, Entry] = {}
        self._keys: dict[bytes, OrderKey] = {}
        self._children: dict[bytes, list[bytes]] = {}  # prev hash -> placed children
        self._roots: dict[bytes, list[bytes]] = {}  # account -> placed seq-0 entries
        self._chains: dict[bytes, list[bytes]] = {}  # account -> canonical chain
        self._by_slot: dict[tuple[bytes, int], list[bytes]] = {}
        self._pending: dict[bytes, Entry] = {}
        self._waiting: dict[bytes, list[bytes]] = {}  # missing hash -> pending entries
        self._state = LedgerState()
        self._outcomes: dict[bytes, Reason | None] = {}
        self._last_key: OrderKey | None = None
        self._applied_count = 0
        self._snapshots: list[tuple[OrderKey, LedgerState, int]] = []
        self._dirty_from: OrderKey | None = None
        self._max_height = 0

    # ------------------------------------------------------------------ adding entries

    def add(self, entry: Entry, *, verified: bool = False) -> AddResult:
        """Add one entry. Raises `InvalidTransition` (and holds nothing new) if it is invalid;
        `verified=True` skips the entry-only checks (for entries re-read from our own store)."""
        h = entry.hash
        known = self._entries.get(h) or self._pending.get(h)
        if known is not None:
            # Same entry; a different signature on it must still be a valid one (else: a forgery).
            if not verified and known.header.signature != entry.header.signature:
                require(
                    self.env.is_valid_signature(entry.header.account, h, entry.header.signature),
                    Reason.BAD_SIGNATURE,
                )
            return AddResult(AddStatus.DUPLICATE)
        if not verified:
            verify_entry(entry, self.env)
        missing = self._first_missing(entry)
        if missing is not None:
            # The pending pool is bounded: a flood of orphans cannot exhaust memory.
            require(len(self._pending) < self.env.config.pending_max, Reason.PENDING_POOL_FULL)
            self._pending[h] = entry
            self._waiting.setdefault(missing, []).append(h)
            return AddResult(AddStatus.PENDING)
        self._check_links(entry)
        self._place(entry)
        placed, rejected = self._release(h)
        return AddResult(AddStatus.ADDED, (h, *placed), rejected)

    def add_many(self, entries: Iterable[Entry], *, verified: bool = False) -> list[AddResult]:
        """`add` each in turn; stops at (raises) the first invalid one."""
        return [self.add(e, verified=verified) for e in entries]

    def _first_missing(self, entry: Entry) -> bytes | None:
        for ref in compute_references(entry):
            if ref not in self._entries:
                return ref
        return None

    def _check_links(self, entry: Entry) -> None:
        header = entry.header
        if header.seq > 0:
            prev = self._entries[header.prev].header
            # prev is this account's entry at seq - 1 ...
            require(prev.account == header.account and prev.seq == header.seq - 1, Reason.BAD_PREV)
            # ... and heights rise along a chain.
            require(header.height > prev.height, Reason.HEIGHT_NOT_INCREASING)
        refs = compute_references(entry)[1 if header.seq > 0 else 0 :]
        for ref in refs:
            referenced = self._entries[ref]
            # A claim names an award entry ...
            require(isinstance(referenced.op, Award), Reason.REFERENCE_NOT_AN_AWARD)
            # ... and sorts after it.
            require(header.height > referenced.header.height, Reason.HEIGHT_NOT_ABOVE_REFERENCE)

    def _release(self, placed_hash: bytes) -> tuple[list[bytes], tuple[tuple[bytes, Reason], ...]]:
        placed: list[bytes] = []
        rejected: list[tuple[bytes, Reason]] = []
        stack = [placed_hash]
        while stack:
            for waiting_hash in self._waiting.pop(stack.pop(), []):
                entry = self._pending.pop(waiting_hash)
                missing = self._first_missing(entry)
                if missing is not None:
                    self._pending[waiting_hash] = entry
                    self._waiting.setdefault(missing, []).append(waiting_hash)
                    continue
                try:
                    self._check_links(entry)
                except InvalidTransition as exc:
                    rejected.append((waiting_hash, exc.reason))
                    rejected.extend(self._drop_waiting_on(waiting_hash))
                    continue
                self._place(entry)
                placed.append(waiting_hash)
                stack.append(waiting_hash)
        return placed, tuple(rejected)

    def _drop_waiting_on(self, refused: bytes) -> list[tuple[bytes, Reason]]:
        """Entries that wait on a refused entry can never be placed: drop them too."""
        dropped: list[tuple[bytes, Reason]] = []
        stack = [refused]
        while stack:
            for waiting_hash in self._waiting.pop(stack.pop(), []):
                if self._pending.pop(waiting_hash, None) is not None:
                    dropped.append((waiting_hash, Reason.BAD_PREV))
                    stack.append(waiting_hash)
        return dropped

    def _place(self, entry: Entry) -> None:
        h, header = entry.hash, entry.header
        self._entries[h] = entry
        self._max_height = max(self._max_height, header.height)
        key = self._keys[h] = compute_order_key(entry)
        self._by_slot.setdefault((header.account, header.seq), []).append(h)
        if header.seq == 0:
            self._roots.setdefault(header.account, []).append(h)
        else:
            self._children.setdefault(header.prev, []).append(h)
        chain = self._chains.setdefault(header.account, [])
        n = header.seq
        if n > len(chain) or (n > 0 and chain[n - 1] != header.prev):
            return  # its branch is not canonical
        if n == len(chain):
            chain.append(h)
            if self._dirty_from is None and (self._last_key is None or key > self._last_key):
                self._apply(h, key)
            else:
                self._mark_dirty(key)
        elif h < chain[n]:
            # A fork with a lower hash takes over this chain from seq n.
            removed = chain[n:]
            chain[n:] = [h]
            self._extend(chain)
            self._mark_dirty(min(self._keys[x] for x in (*removed, *chain[n:])))

    def _extend(self, chain: list[bytes]) -> None:
        while children := self._children.get(chain[-1]):
            chain.append(min(children))

    # ------------------------------------------------------------------ applying

    def _mark_dirty(self, key: OrderKey) -> None:
        if self._dirty_from is None or key < self._dirty_from:
            self._dirty_from = key

    def _apply(self, h: bytes, key: OrderKey) -> None:
        try:
            process_entry(self._state, self._entries[h], self.env)
            self._outcomes[h] = None
        except InvalidTransition as exc:
            self._outcomes[h] = exc.reason
        self._last_key = key
        self._applied_count += 1
        if self._applied_count % self._snapshot_every == 0:
            self._snapshots.append((key, copy_state(self._state), self._applied_count))
            del self._snapshots[:-4]

    def _recompute(self) -> None:
        dirty_from = self._dirty_from
        assert dirty_from is not None
        canonical = sorted((self._keys[h], h) for chain in self._chains.values() for h in chain)
        while self._snapshots and self._snapshots[-1][0] >= dirty_from:
            self._snapshots.pop()
        if self._snapshots:
            start_key, snapshot, count = self._snapshots[-1]
            self._state, self._applied_count = copy_state(snapshot), count
            start = bisect.bisect_right(canonical, (start_key, b"\xff" * 33))
            self._last_key = start_key
        else:
            self._state, self._applied_count, start, self._last_key = LedgerState(), 0, 0, None
        for key, h in canonical[start:]:
            self._apply(h, key)
        self._dirty_from = None

    @property
    def state(self) -> LedgerState:
        """The state implied by the current set (do not mutate it)."""
        if self._dirty_from is not None:
            self._recompute()
        return self._state

    # ------------------------------------------------------------------ reading

    def compute_root(self) -> bytes:
        """One hash of the state and of every canonical chain head: equal sets, equal roots."""
        state_hash = hash_state(self.state)
        frontier = [[a, len(c), c[-1]] for a, c in sorted(self._chains.items()) if c]
        frontier_hash = hashlib.sha256(pack(frontier)).digest()
        return hashlib.sha256(DOMAIN_STATE + state_hash + frontier_hash).digest()

    def get_status(self, h: bytes) -> tuple[EntryStatus, Reason | None]:
        if h in self._pending:
            return EntryStatus.PENDING, None
        entry = self._entries.get(h)
        if entry is None:
            return EntryStatus.UNKNOWN, None
        chain = self._chains.get(entry.header.account, [])
        if entry.header.seq >= len(chain) or chain[entry.header.seq] != h:
            return EntryStatus.SIDE_BRANCH, None
        self.state  # noqa: B018 (brings outcomes up to date)
        reason = self._outcomes.get(h)
        return (EntryStatus.APPLIED, None) if reason is None else (EntryStatus.SKIPPED, reason)

    def get_entry(self, h: bytes) -> Entry | None:
        return self._entries.get(h) or self._pending.get(h)

    def get_chain(self, account: bytes, from_seq: int = 0, limit: int | None = None) -> list[Entry]:
        chain = self._chains.get(account, [])
        end = len(chain) if limit is None else min(len(chain), from_seq + limit)
        return [self._entries[h] for h in chain[from_seq:end]]

    def get_head(self, account: bytes) -> tuple[int, bytes, int] | None:
        """(next seq, head hash, head height) of an account's canonical chain."""
        chain = self._chains.get(account)
        if not chain:
            return None
        return len(chain), chain[-1], self._entries[chain[-1]].header.height

    def get_missing(self, limit: int = 256) -> list[bytes]:
        """Hashes that pending entries wait for (to ask peers for them by hash)."""
        return sorted(self._waiting)[:limit]

    def get_accounts(self) -> list[bytes]:
        return sorted(a for a, c in self._chains.items() if c)

    def get_max_height(self) -> int:
        """The highest Lamport height of a placed entry (0 if none)."""
        return self._max_height

    def get_slot(self, account: bytes, seq: int) -> list[bytes]:
        """Hashes of the placed entries at (account, seq): more than one is a fork."""
        return list(self._by_slot.get((account, seq), ()))

    def iter_entries(self) -> Iterator[Entry]:
        """Every entry held, placed or pending."""
        yield from self._entries.values()
        yield from self._pending.values()

    def compute_fork_evidence(self) -> list[ForkEvidence]:
        """One piece of evidence per forked (account, seq) this replica has seen."""
        found = []
        for (_, _), hashes in sorted(self._by_slot.items()):
            if len(hashes) > 1:
                first, second = sorted(hashes)[:2]
                found.append(
                    ForkEvidence(self._entries[first].header, self._entries[second].header)
                )
        return found

    def statistics(self) -> LatticeStatistics:
        return LatticeStatistics(
            entries=len(self._entries),
            pending=len(self._pending),
            accounts=len(self._chains),
            canonical=sum(len(c) for c in self._chains.values()),
        )


@dataclass(frozen=True, slots=True)
class LatticeStatistics:
    entries: int  # placed
    pending: int
    accounts: int
    canonical: int
