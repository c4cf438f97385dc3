"""Errors raised by ledger/: one root (`LedgerError`), a typed invalid-transition error, and
store errors.

Validity is checked with `require(condition, Reason.X)`, never with `assert` (which `python -O`
strips). Every way an entry can be invalid has its own `Reason`, so callers, tests and the CLI can
say exactly why an entry was refused.
"""

from __future__ import annotations

from enum import Enum


class LedgerError(Exception):
    """Root of every error raised by ledger/."""


class Reason(Enum):
    """Why an entry (or a piece of evidence inside one) is invalid."""

    # Encoding and shape: checkable from the bytes alone.
    MALFORMED = "malformed"
    NOT_CANONICAL = "not_canonical"
    TOO_LARGE = "too_large"
    AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
    # Authorship and chain structure.
    BAD_SIGNATURE = "bad_signature"
    BAD_PREV = "bad_prev"
    HEIGHT_NOT_INCREASING = "height_not_increasing"
    HEIGHT_NOT_ABOVE_REFERENCE = "height_not_above_reference"
    REFERENCE_NOT_AN_AWARD = "reference_not_an_award"
    NOT_GENESIS_AUTHORITY = "not_genesis_authority"
    PENDING_POOL_FULL = "pending_pool_full"
    SELF_TRANSFER = "self_transfer"
    # Claims: checkable from the entry alone (signatures, proof).
    STATEMENT_NOT_BY_ACCOUNT = "statement_not_by_account"
    STATEMENT_BAD_SIGNATURE = "statement_bad_signature"
    PROOF_HASH_MISMATCH = "proof_hash_mismatch"
    PROOF_INVALID = "proof_invalid"
    # Not a verdict: the verifier cannot decide yet (IGNORE and retry later, never REJECT).
    PROOF_UNDECIDED = "proof_undecided"
    # Evidence: checkable by anyone alone.
    SELF_REPORT = "self_report"
    EVIDENCE_BAD_SIGNATURE = "evidence_bad_signature"
    EVIDENCE_NOT_A_FORK = "evidence_not_a_fork"
    EVIDENCE_SIGNERS_DIFFER = "evidence_signers_differ"
    EVIDENCE_AWARD_MISMATCH = "evidence_award_mismatch"
    EVIDENCE_NOT_CONFLICTING = "evidence_not_conflicting"
    EVIDENCE_PROOF_VALID = "evidence_proof_valid"
    EVIDENCE_COMMITMENT_MATCHES = "evidence_commitment_matches"
    # State-dependent: the entry is in the set but has no effect where the canonical order puts it.
    SUPPLY_CAP_EXCEEDED = "supply_cap_exceeded"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    INSUFFICIENT_BOND = "insufficient_bond"
    NOTHING_MATURE = "nothing_mature"
    JOB_EXISTS = "job_exists"
    JOB_UNKNOWN = "job_unknown"
    ESCROW_INSUFFICIENT = "escrow_insufficient"
    NOTHING_TO_REFUND = "nothing_to_refund"
    ROUND_NOT_NEXT = "round_not_next"
    SLICE_ALREADY_PAID = "slice_already_paid"
    PROVER_NOT_BONDED = "prover_not_bonded"
    AWARD_UNKNOWN = "award_unknown"
    AWARD_NOT_FOR_ACCOUNT = "award_not_for_account"
    AWARD_REVOKED = "award_revoked"
    AWARD_ALREADY_PAID = "award_already_paid"
    STATEMENT_MISMATCH = "statement_mismatch"
    ALREADY_SLASHED = "already_slashed"
    TOO_MANY_UNBONDINGS = "too_many_unbondings"


# Refusals that say nothing bad about the sender (gossip: IGNORE, not REJECT; retry later).
IGNORE_REASONS = frozenset({Reason.PROOF_UNDECIDED, Reason.PENDING_POOL_FULL})


def is_ignorable(reason: Reason) -> bool:
    """True if an entry refused for `reason` may be valid after all (do not penalise the peer)."""
    return reason in IGNORE_REASONS


class InvalidTransition(LedgerError):
    """An entry that cannot be applied; `reason` says which rule it breaks. Nothing was changed."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


def require(condition: bool, reason: Reason, detail: str = "") -> None:
    """Raise `InvalidTransition(reason)` unless `condition` holds (one rule per call)."""
    if not condition:
        raise InvalidTransition(reason, detail)


class StoreError(LedgerError):
    """The ledger database cannot be opened, read or written."""


class StoreCorrupted(StoreError):
    """The ledger database fails its integrity check (rows, hashes, chains or state root)."""
