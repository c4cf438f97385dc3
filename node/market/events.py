"""Events in and effects out of the market core (`node.market.core`): frozen dataclasses.

The trio runtime (`node.market.service`) turns network, ledger, prover and clock happenings into
events, and carries out the effects; the deterministic simulator can do the same with simulated
parts. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.containers import Operation, SignedStatement
from node.wire.market_messages import Bid, BidReply, JobAnnounce, ProofStatementMsg, SliceTask

# ---------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Submit:
    """A local user asks for a job (the runtime prepared the tasks: inputs stored as blobs)."""

    job_id: bytes
    bundle_id: bytes
    tasks: tuple[SliceTask, ...]
    deadline_ms: int
    bid_window_ms: int
    slice_deadline_ms: int = 0  # 0: the node's default (at least `deadline_min_ms`)


@dataclass(frozen=True, slots=True)
class LedgerDone:
    """A `LedgerSubmit` effect was carried out: the entry hash, or the refusal reason."""

    tag: tuple[Any, ...]
    entry_hash: bytes | None
    error: str = ""


@dataclass(frozen=True, slots=True)
class JobSeen:
    peer: str
    job: JobAnnounce


@dataclass(frozen=True, slots=True)
class BidIn:
    """A bid request arrived; the core answers with a `Respond` effect."""

    peer: str
    bid: Bid


@dataclass(frozen=True, slots=True)
class BidAnswered:
    job_id: bytes
    reply: BidReply | None  # None: the request failed (timeout, unreachable)


@dataclass(frozen=True, slots=True)
class AwardSeen:
    """An award entry was placed in our replica."""

    award_ref: bytes
    requester: bytes
    job_id: bytes
    slice_index: int
    round: int
    prover: bytes
    price: int
    input_commitment: bytes


@dataclass(frozen=True, slots=True)
class Prepared:
    """Bundle, SRS and slice input are local (or could not be had)."""

    award_ref: bytes
    ok: bool
    error: str = ""


@dataclass(frozen=True, slots=True)
class Proven:
    award_ref: bytes
    ok: bool
    signed: SignedStatement | None = None
    proof: bytes = b""
    prove_s: float = 0.0
    error: str = ""


@dataclass(frozen=True, slots=True)
class StatementIn:
    peer: str
    prover: bytes  # the envelope's signer
    statement: ProofStatementMsg


@dataclass(frozen=True, slots=True)
class ProofFetched:
    award_ref: bytes
    proof: bytes | None
    error: str = ""


@dataclass(frozen=True, slots=True)
class Checked:
    """The requester's check of one proof: "ok", or why it fails ("invalid_proof",
    "wrong_input", "statement_mismatch", "undecided")."""

    award_ref: bytes
    verdict: str


@dataclass(frozen=True, slots=True)
class ChainChecked:
    job_id: bytes
    ok: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Timer:
    key: tuple[Any, ...]


Event = (
    Submit
    | LedgerDone
    | JobSeen
    | BidIn
    | BidAnswered
    | AwardSeen
    | Prepared
    | Proven
    | StatementIn
    | ProofFetched
    | Checked
    | ChainChecked
    | Timer
)

# ---------------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    body: Any


@dataclass(frozen=True, slots=True)
class SendBid:
    peer: str
    addrs: tuple[str, ...]
    bid: Bid


@dataclass(frozen=True, slots=True)
class Respond:
    body: Any


@dataclass(frozen=True, slots=True)
class LedgerSubmit:
    tag: tuple[Any, ...]
    op: Operation


@dataclass(frozen=True, slots=True)
class Prepare:
    award_ref: bytes
    peer: str  # the requester: holds the bundle, SRS and the input blob
    addrs: tuple[str, ...]
    bundle_id: bytes
    input_hash: bytes
    input_commitment: bytes
    slice_index: int


@dataclass(frozen=True, slots=True)
class Prove:
    award_ref: bytes
    bundle_id: bytes
    slice_index: int
    input_hash: bytes


@dataclass(frozen=True, slots=True)
class CancelProve:
    award_ref: bytes


@dataclass(frozen=True, slots=True)
class FetchProof:
    award_ref: bytes
    peer: str
    proof_hash: bytes  # the ledger's hash of the proof (what the statement signs)
    blob: bytes  # sha256 of the proof bytes (the fetch key)
    claim: bytes  # the prover's claim entry (carries the proof), or zero


@dataclass(frozen=True, slots=True)
class CheckProof:
    award_ref: bytes
    bundle_id: bytes
    slice_index: int
    input_commitment: bytes  # what the award names
    signed: SignedStatement
    proof: bytes


@dataclass(frozen=True, slots=True)
class CheckChain:
    job_id: bytes


@dataclass(frozen=True, slots=True)
class FileEvidence:
    """File slash evidence about award `award_ref` (kind: invalid_proof, wrong_input,
    equivocation)."""

    kind: str
    award_ref: bytes
    signed: SignedStatement
    proof: bytes = b""
    other: SignedStatement | None = None


@dataclass(frozen=True, slots=True)
class FinishJob:
    job_id: bytes
    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class SetTimer:
    key: tuple[Any, ...]
    at_ms: int


@dataclass(frozen=True, slots=True)
class Log:
    event: str
    fields: tuple[tuple[str, Any], ...] = ()


Effect = (
    Publish
    | SendBid
    | Respond
    | LedgerSubmit
    | Prepare
    | Prove
    | CancelProve
    | FetchProof
    | CheckProof
    | CheckChain
    | FileEvidence
    | FinishJob
    | SetTimer
    | Log
)
