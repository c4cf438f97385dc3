"""Anti-entropy between replicas: frontiers, "entries of account A from seq n", message bodies.

A replica's frontier is, per account, the length and head hash of its canonical chain. A peer
that compares frontiers asks for what it lacks with `EntriesRequest(account, from_seq,
prev_hash)`; the responder serves from `from_seq` when its chain agrees with `prev_hash` there
and from seq 0 otherwise (the chains diverge earlier: a fork), so one exchange always makes
progress. Entries that wait for a dependency off every canonical chain (a claim of an award that
lost a fork) are fetched by hash (`EntriesByHashRequest`). Everything here is a pure function
of a `Lattice`; node/ carries the bodies over the network (wrapping them in its own signed
envelopes) and `pull_from` runs the loop in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ledger.constants import ZERO_HASH
from ledger.encoding import decode_entry, encode_entry
from ledger.errors import InvalidTransition
from ledger.lattice import AddStatus, Lattice

FRONTIER_ITEMS_MAX = 4096  # per FrontierResponse page
ENTRIES_PER_RESPONSE_MAX = 512
RESPONSE_BYTES_MAX = 768 * 1024  # at least one entry is always served
HASHES_PER_REQUEST_MAX = 256


@dataclass(frozen=True, slots=True)
class FrontierItem:
    account: bytes
    next_seq: int  # length of the canonical chain
    head: bytes  # hash of its last entry


@dataclass(frozen=True, slots=True)
class FrontierRequest:
    after_account: bytes = b""  # page: accounts sorting after this one
    limit: int = FRONTIER_ITEMS_MAX


@dataclass(frozen=True, slots=True)
class FrontierResponse:
    items: tuple[FrontierItem, ...]
    more: bool  # another page follows (ask again after the last account)


@dataclass(frozen=True, slots=True)
class EntriesRequest:
    account: bytes
    from_seq: int
    prev_hash: bytes  # the requester's hash at from_seq - 1 (ZERO_HASH when from_seq == 0)
    limit: int = ENTRIES_PER_RESPONSE_MAX


@dataclass(frozen=True, slots=True)
class EntriesResponse:
    account: bytes
    from_seq: int  # where `entries` start (0 if the requester's prev_hash was not ours)
    entries: tuple[bytes, ...]  # encoded entries, in chain order
    more: bool


@dataclass(frozen=True, slots=True)
class EntriesByHashRequest:
    hashes: tuple[bytes, ...]  # at most HASHES_PER_REQUEST_MAX


@dataclass(frozen=True, slots=True)
class EntriesByHashResponse:
    entries: tuple[bytes, ...]  # encoded; the hashes we hold, in request order


def compute_missing_request(lattice: Lattice) -> EntriesByHashRequest | None:
    """Ask for what our pending entries wait for, or None if nothing waits."""
    missing = lattice.get_missing(HASHES_PER_REQUEST_MAX)
    return EntriesByHashRequest(tuple(missing)) if missing else None


def compute_entries_by_hash_response(
    lattice: Lattice, request: EntriesByHashRequest
) -> EntriesByHashResponse:
    encoded: list[bytes] = []
    size = 0
    for h in request.hashes[:HASHES_PER_REQUEST_MAX]:
        entry = lattice.get_entry(h)
        if entry is None:
            continue
        data = encode_entry(entry)
        if encoded and size + len(data) > RESPONSE_BYTES_MAX:
            break
        encoded.append(data)
        size += len(data)
    return EntriesByHashResponse(tuple(encoded))


def compute_frontier(lattice: Lattice, request: FrontierRequest | None = None) -> FrontierResponse:
    request = request or FrontierRequest()
    limit = max(1, min(request.limit, FRONTIER_ITEMS_MAX))
    accounts = [a for a in lattice.get_accounts() if a > request.after_account]
    items = []
    for account in accounts[:limit]:
        head = lattice.get_head(account)
        assert head is not None
        items.append(FrontierItem(account, head[0], head[1]))
    return FrontierResponse(tuple(items), more=len(accounts) > limit)


def compute_entry_requests(
    local: Lattice, remote: Sequence[FrontierItem], limit: int = ENTRIES_PER_RESPONSE_MAX
) -> list[EntriesRequest]:
    """What to ask a peer for, given one page of its frontier."""
    requests = []
    for item in remote:
        head = local.get_head(item.account)
        if head is None:
            requests.append(EntriesRequest(item.account, 0, ZERO_HASH, limit))
            continue
        next_seq, head_hash, _ = head
        if item.next_seq > next_seq:
            requests.append(EntriesRequest(item.account, next_seq, head_hash, limit))
            continue
        ours = local.get_chain(item.account, item.next_seq - 1, 1)
        if not ours or ours[0].hash != item.head:
            # Their chain is not a prefix of ours: they hold a fork we lack; fetch theirs.
            requests.append(EntriesRequest(item.account, 0, ZERO_HASH, limit))
    return requests


def compute_entries_response(lattice: Lattice, request: EntriesRequest) -> EntriesResponse:
    from_seq = request.from_seq
    if from_seq > 0:
        agreed = lattice.get_chain(request.account, from_seq - 1, 1)
        if not agreed or agreed[0].hash != request.prev_hash:
            from_seq = 0
    limit = max(1, min(request.limit, ENTRIES_PER_RESPONSE_MAX))
    chain = lattice.get_chain(request.account, from_seq, limit + 1)
    encoded: list[bytes] = []
    size = 0
    for entry in chain[:limit]:
        data = encode_entry(entry)
        if encoded and size + len(data) > RESPONSE_BYTES_MAX:
            break
        encoded.append(data)
        size += len(data)
    return EntriesResponse(
        request.account, from_seq, tuple(encoded), more=len(chain) > len(encoded)
    )


@dataclass(frozen=True, slots=True)
class PullReport:
    rounds: int
    received: int
    added: int
    refused: int


def pull_from(local: Lattice, remote: Lattice, rounds_max: int = 1000) -> PullReport:
    """Bring `local` up to date with `remote` using only the message bodies above (in memory)."""
    received = added = refused = rounds = 0
    after = b""
    pass_progress = False
    while rounds < rounds_max:
        rounds += 1
        page = compute_frontier(remote, FrontierRequest(after_account=after))
        requests = compute_entry_requests(local, page.items)
        while requests and rounds < rounds_max:
            rounds += 1
            next_requests = []
            for request in requests:
                response = compute_entries_response(remote, request)
                received += len(response.entries)
                got = _add_all(local, response.entries)
                added, refused = added + got[0], refused + got[1]
                pass_progress = pass_progress or got[0] > 0
                if response.more and response.entries:
                    last = decode_entry(response.entries[-1], local.env.config.proof_bytes_max)
                    next_seq = response.from_seq + len(response.entries)
                    next_requests.append(
                        EntriesRequest(request.account, next_seq, last.hash, request.limit)
                    )
            requests = next_requests
        if page.more and page.items:
            after = page.items[-1].account
            continue
        while (missing := compute_missing_request(local)) is not None and rounds < rounds_max:
            rounds += 1
            response_by_hash = compute_entries_by_hash_response(remote, missing)
            received += len(response_by_hash.entries)
            got = _add_all(local, response_by_hash.entries)
            added, refused = added + got[0], refused + got[1]
            if not got[0]:
                break
            pass_progress = True
        if not pass_progress:
            break
        after, pass_progress = b"", False
    return PullReport(rounds, received, added, refused)


def _add_all(local: Lattice, encoded: Sequence[bytes]) -> tuple[int, int]:
    """(added, refused) after adding every encoded entry to `local`."""
    added = refused = 0
    for data in encoded:
        try:
            status = local.add(decode_entry(data, local.env.config.proof_bytes_max)).status
        except InvalidTransition:
            refused += 1
            continue
        added += status is not AddStatus.DUPLICATE
    return added, refused
