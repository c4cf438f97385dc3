"""Market messages: job announcements (gossip `/dsperse/jobs/1`), bids (request/response
`/dsperse/bid/1.0.0`) and signed proof statements (gossip `/dsperse/proofs/1`).

Awards, claims, refunds and slashes are ledger entries (`/dsperse/ledger/1`), never messages of
their own: what settles must be in the ledger. Proof bytes and slice inputs are fetched by hash
(`/dsperse/proof-fetch/1.0.0`, `/dsperse/bundle-fetch/1.0.0`), never gossiped.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.wire.messages import MULTIADDR_LEN_MAX
from node.wire.registry import message
from node.wire.schema import Limits, limit

H32 = Limits(length_min=32, length_max=32)
TASKS_MAX = 512
SLICES_PER_BID_MAX = 512
AMOUNT_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class SliceTask:
    """One slice to prove: its input is known (the requester ran the quantised chain)."""

    index: int = limit(value_max=65_535)
    input_commitment: bytes = limit(length_min=32, length_max=32)
    input_hash: bytes = limit(length_min=32, length_max=32)  # sha256 of the input blob
    logrows: int = limit(value_min=1, value_max=32)
    memory_mb: int = limit(value_max=2**32)
    max_price: int = limit(value_max=AMOUNT_MAX)


@message("job_announce", 1)
@dataclass(frozen=True, slots=True)
class JobAnnounce:
    """A requester (the envelope's signer) asks for proofs of `tasks` of bundle `bundle_id`;
    the fee is escrowed by ledger entry `escrow_ref`. Bids go to the signer until
    `bid_until_ms`; the job must be done by `deadline_ms` (both wall-clock ms)."""

    job_id: bytes = limit(length_min=32, length_max=32)
    bundle_id: bytes = limit(length_min=32, length_max=32)
    escrow_ref: bytes = limit(length_min=32, length_max=32)
    round: int = limit(value_max=1024)  # 0, then one more per re-announcement
    bid_until_ms: int = limit(value_max=2**63 - 1)
    deadline_ms: int = limit(value_max=2**63 - 1)
    software_version: str = limit(length_min=1, length_max=32)
    ezkl_version: str = limit(length_max=32)
    tasks: tuple[SliceTask, ...] = limit(length_min=1, length_max=TASKS_MAX)
    addrs: tuple[str, ...] = limit(
        length_max=8, item=Limits(length_min=1, length_max=MULTIADDR_LEN_MAX)
    )


@message("bid", 1)
@dataclass(frozen=True, slots=True)
class Bid:
    """A prover (the signer) offers to prove up to `capacity` of `slices` of a job at `price`
    each, in about `expected_ms` each; its slots stay reserved for the job until `expires_ms`."""

    job_id: bytes = limit(length_min=32, length_max=32)
    round: int = limit(value_max=1024)
    slices: tuple[int, ...] = limit(
        length_min=1, length_max=SLICES_PER_BID_MAX, item=Limits(value_max=65_535)
    )
    capacity: int = limit(value_min=1, value_max=1024)
    price: int = limit(value_max=AMOUNT_MAX)
    expected_ms: int = limit(value_max=2**40)
    memory_mb: int = limit(value_max=2**32)
    max_logrows: int = limit(value_min=1, value_max=32)
    expires_ms: int = limit(value_max=2**63 - 1)


@message("bid_reply", 1)
@dataclass(frozen=True, slots=True)
class BidReply:
    """The requester took the bid into account (`ok`) or refused it, with the reason."""

    job_id: bytes = limit(length_min=32, length_max=32)
    ok: bool = limit()
    reason: str = limit(length_max=64)


@message("proof_statement", 1)
@dataclass(frozen=True, slots=True)
class ProofStatementMsg:
    """A prover's signed statement about one award (the ledger's `SignedStatement`, whose
    signer is the envelope's signer). The proof bytes are fetched by `blob` (their sha256) over
    proof-fetch, or taken from the prover's ledger claim entry `claim` (zero if it files none)."""

    award_ref: bytes = limit(length_min=32, length_max=32)
    bundle_id: bytes = limit(length_min=32, length_max=32)
    slice_index: int = limit(value_max=65_535)
    input_commitment: bytes = limit(length_min=32, length_max=32)
    output_commitment: bytes = limit(length_min=32, length_max=32)
    instances_hash: bytes = limit(length_min=32, length_max=32)
    proof_hash: bytes = limit(length_min=32, length_max=32)
    signature: bytes = limit(length_min=64, length_max=64)
    proof_bytes: int = limit(value_max=64 * 1024 * 1024)
    claim: bytes = limit(length_min=32, length_max=32)
    blob: bytes = limit(length_min=32, length_max=32)  # sha256 of the proof: its fetch key
