"""Ledger replication messages: entries gossiped on `/dsperse/ledger/1`, and the anti-entropy
bodies of `/dsperse/ledger-sync/1.0.0` (the wire form of `ledger.sync`'s frozen bodies).

Entries travel as their canonical encoding (`ledger.encoding.encode_entry`); the ledger decodes
and checks them, the wire layer only bounds their count and size. A gossiped batch carries only
the publisher's own entries (anyone else's reach a replica by anti-entropy), so every gossiped
entry is attributable to the peer that published it.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.wire.registry import message
from node.wire.schema import Limits, limit

HASH_BYTES = 32
ENTRY_BYTES_MAX = 3 * 1024 * 1024  # a claim carries its proof; the ledger bounds proof size
GOSSIP_ENTRIES_MAX = 256
SYNC_ENTRIES_MAX = 512  # ledger.sync.ENTRIES_PER_RESPONSE_MAX
SYNC_FRONTIER_MAX = 4096  # ledger.sync.FRONTIER_ITEMS_MAX
SYNC_HASHES_MAX = 256  # ledger.sync.HASHES_PER_REQUEST_MAX
SYNC_RESPONSE_BYTES_MAX = 4 * 1024 * 1024  # an envelope around one sync response
_KEY = Limits(length_min=HASH_BYTES, length_max=HASH_BYTES)
_ENTRY = Limits(length_min=1, length_max=ENTRY_BYTES_MAX)


@message("ledger_entries", 1)
@dataclass(frozen=True, slots=True)
class LedgerEntries:
    """New entries of the publisher's own chain, in chain order (a batch)."""

    entries: tuple[bytes, ...] = limit(length_min=1, length_max=GOSSIP_ENTRIES_MAX, item=_ENTRY)


@message("sync_frontier_request", 1)
@dataclass(frozen=True, slots=True)
class SyncFrontierRequest:
    """One page of the responder's frontier (accounts after `after_account`). `digest` is the
    requester's own frontier digest: if the responder's is equal, it answers `same`."""

    after_account: bytes = limit(length_max=HASH_BYTES)
    items_max: int = limit(value_min=1, value_max=SYNC_FRONTIER_MAX)
    digest: bytes = limit(length_max=HASH_BYTES)


@dataclass(frozen=True, slots=True)
class SyncFrontierItem:
    account: bytes = limit(length_min=HASH_BYTES, length_max=HASH_BYTES)
    next_seq: int = limit(value_max=2**40)
    head: bytes = limit(length_min=HASH_BYTES, length_max=HASH_BYTES)


@message("sync_frontier_response", 1)
@dataclass(frozen=True, slots=True)
class SyncFrontierResponse:
    items: tuple[SyncFrontierItem, ...] = limit(length_max=SYNC_FRONTIER_MAX)
    more: bool = limit()
    same: bool = limit()  # the requester's digest equals ours: nothing to exchange


@message("sync_entries_request", 1)
@dataclass(frozen=True, slots=True)
class SyncEntriesRequest:
    account: bytes = limit(length_min=HASH_BYTES, length_max=HASH_BYTES)
    from_seq: int = limit(value_max=2**40)
    prev_hash: bytes = limit(length_min=HASH_BYTES, length_max=HASH_BYTES)
    entries_max: int = limit(value_min=1, value_max=SYNC_ENTRIES_MAX)


@message("sync_entries_response", 1)
@dataclass(frozen=True, slots=True)
class SyncEntriesResponse:
    account: bytes = limit(length_min=HASH_BYTES, length_max=HASH_BYTES)
    from_seq: int = limit(value_max=2**40)
    entries: tuple[bytes, ...] = limit(length_max=SYNC_ENTRIES_MAX, item=_ENTRY)
    more: bool = limit()


@message("sync_hashes_request", 1)
@dataclass(frozen=True, slots=True)
class SyncHashesRequest:
    hashes: tuple[bytes, ...] = limit(length_min=1, length_max=SYNC_HASHES_MAX, item=_KEY)


@message("sync_hashes_response", 1)
@dataclass(frozen=True, slots=True)
class SyncHashesResponse:
    entries: tuple[bytes, ...] = limit(length_max=SYNC_HASHES_MAX, item=_ENTRY)


@message("sync_refused", 1)
@dataclass(frozen=True, slots=True)
class SyncRefused:
    """The responder will not serve this request now (e.g. `rate_limited`); try later."""

    reason: str = limit(length_min=1, length_max=64)
    retry_after_ms: int = limit(value_max=3_600_000)


SYNC_REQUEST_TYPES = (SyncFrontierRequest, SyncEntriesRequest, SyncHashesRequest)
