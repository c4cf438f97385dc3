"""The ledger's data: entry operations, signed entries, proof statements, evidence, and the state.

Everything an entry carries is a frozen slotted dataclass; `LedgerState` is a slotted mutable
dataclass that only `transition.py` mutates. Ids are raw bytes (32-byte hashes and ed25519 public
keys); amounts and heights are plain ints (the smallest ledger unit; Lamport heights).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, NewType

Account = NewType("Account", bytes)  # a 32-byte ed25519 public key
Hash = NewType("Hash", bytes)  # 32-byte sha256 digest
JobId = NewType("JobId", bytes)  # 32 bytes chosen by the requester
Amount = int
Height = int


# ---------------------------------------------------------------------------- proof statements


@dataclass(frozen=True, slots=True)
class ProofStatement:
    """What a prover asserts about one award: the proof of `slice_index` of `bundle_id` takes an
    input committing to `input_commitment` to an output committing to `output_commitment`.
    Equivocation compares statements; the proof bytes (randomized) are bound by `proof_hash`."""

    award_ref: bytes  # hash of the award entry being fulfilled (the slot)
    bundle_id: bytes
    slice_index: int
    input_commitment: bytes
    output_commitment: bytes
    instances_hash: bytes


@dataclass(frozen=True, slots=True)
class SignedStatement:
    statement: ProofStatement
    proof_hash: bytes  # compute_proof_hash(proof bytes)
    prover: bytes
    signature: bytes  # by `prover` over compute_statement_digest(statement, proof_hash)


# ---------------------------------------------------------------------------- entry headers


@dataclass(frozen=True, slots=True)
class EntryHeader:
    """The signed part of an entry; the operation is bound by `body_hash`."""

    account: bytes
    seq: int  # 0 for an account's first entry
    prev: bytes  # hash of the entry at seq - 1 (ZERO_HASH at seq 0)
    height: int  # Lamport height: above prev's and above every referenced entry's
    body_hash: bytes
    signature: bytes  # by `account` over the entry hash


# ---------------------------------------------------------------------------- operations


@dataclass(frozen=True, slots=True)
class GenesisAllocation:
    KIND: ClassVar[int] = 0
    recipient: bytes
    amount: int


@dataclass(frozen=True, slots=True)
class Transfer:
    KIND: ClassVar[int] = 1
    recipient: bytes
    amount: int


@dataclass(frozen=True, slots=True)
class Bond:
    KIND: ClassVar[int] = 2
    amount: int


@dataclass(frozen=True, slots=True)
class Unbond:
    KIND: ClassVar[int] = 3
    amount: int


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Move every matured unbonding back to the balance."""

    KIND: ClassVar[int] = 4


@dataclass(frozen=True, slots=True)
class Escrow:
    """Lock up to `amount` for the slices of job `job_id` over bundle `bundle_id`."""

    KIND: ClassVar[int] = 5
    job_id: bytes
    bundle_id: bytes
    amount: int


@dataclass(frozen=True, slots=True)
class Award:
    """Name the prover of one slice at a price; round r+1 revokes an unpaid round r."""

    KIND: ClassVar[int] = 6
    job_id: bytes
    slice_index: int
    round: int
    prover: bytes
    price: int
    input_commitment: bytes


@dataclass(frozen=True, slots=True)
class Claim:
    KIND: ClassVar[int] = 7
    statement: SignedStatement
    proof: bytes


@dataclass(frozen=True, slots=True)
class Refund:
    """Return the unreserved part of a job's escrow to the requester."""

    KIND: ClassVar[int] = 8
    job_id: bytes


@dataclass(frozen=True, slots=True)
class AwardRecord:
    """A complete signed award entry, so evidence about it can be checked alone."""

    header: EntryHeader
    award: Award


@dataclass(frozen=True, slots=True)
class ForkEvidence:
    KIND: ClassVar[int] = 0
    first: EntryHeader
    second: EntryHeader


@dataclass(frozen=True, slots=True)
class EquivocationEvidence:
    KIND: ClassVar[int] = 1
    award: AwardRecord
    first: SignedStatement
    second: SignedStatement


@dataclass(frozen=True, slots=True)
class InvalidProofEvidence:
    KIND: ClassVar[int] = 2
    award: AwardRecord
    statement: SignedStatement
    proof: bytes


@dataclass(frozen=True, slots=True)
class LinkageEvidence:
    KIND: ClassVar[int] = 3
    award: AwardRecord
    statement: SignedStatement


Evidence = ForkEvidence | EquivocationEvidence | InvalidProofEvidence | LinkageEvidence


@dataclass(frozen=True, slots=True)
class Slash:
    KIND: ClassVar[int] = 9
    evidence: Evidence


@dataclass(frozen=True, slots=True)
class GenesisBond:
    """Mint `amount` straight into `recipient`'s bonded stake (genesis only): a new network's
    first provers can be awarded before anyone has signed a `Bond`."""

    KIND: ClassVar[int] = 10
    recipient: bytes
    amount: int


Operation = (
    GenesisAllocation
    | Transfer
    | Bond
    | Unbond
    | Withdraw
    | Escrow
    | Award
    | Claim
    | Refund
    | Slash
    | GenesisBond
)


@dataclass(frozen=True, slots=True)
class Entry:
    """A signed operation in its account's chain. `hash` is computed from the header on build
    and on decode (never trusted from the wire)."""

    header: EntryHeader
    op: Operation
    hash: bytes


# ---------------------------------------------------------------------------- state


@dataclass(slots=True)
class AccountState:
    balance: int = 0
    bonded: int = 0
    unbonding: list[tuple[int, int]] = field(default_factory=list)  # (amount, mature height)
    slashed: int = 0  # total ever taken from this account's stake

    def unbonding_total(self) -> int:
        return sum(amount for amount, _ in self.unbonding)


@dataclass(slots=True)
class EscrowState:
    """Invariant: available + reserved + paid + refunded == locked (never pays more)."""

    bundle_id: bytes
    locked: int  # what the requester escrowed
    available: int  # free to award or refund
    reserved: int = 0  # promised to current awards
    paid: int = 0
    refunded: int = 0


@dataclass(slots=True)
class AwardState:
    requester: bytes
    job_id: bytes
    slice_index: int
    round: int
    prover: bytes
    price: int
    input_commitment: bytes
    paid: bool = False
    revoked: bool = False


@dataclass(slots=True)
class OffenceState:
    offender: bytes
    reporter: bytes
    penalty: int
    reward: int


@dataclass(slots=True)
class LedgerState:
    """Everything the entries determine. Keys are bytes or tuples of bytes and ints."""

    accounts: dict[bytes, AccountState] = field(default_factory=dict)
    escrows: dict[tuple[bytes, bytes], EscrowState] = field(default_factory=dict)
    awards: dict[bytes, AwardState] = field(default_factory=dict)  # by award entry hash
    slots: dict[tuple[bytes, bytes, int], bytes] = field(default_factory=dict)  # -> award ref
    offences: dict[bytes, OffenceState] = field(default_factory=dict)  # by offence id
    supply: int = 0  # sum of applied genesis allocations and genesis bonds
    burned: int = 0
