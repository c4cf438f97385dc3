"""Checks that depend on an entry alone, never on the state: signatures, claim proofs, evidence.

They run once, when an entry first reaches a replica (`verify_entry`); an entry that fails one is
refused and never enters the set. Because they read no state, their verdict is the same on every
replica and in every order, which is what lets evidence be "checkable by anyone alone".
Chain structure that needs another entry (prev, heights) is checked by `ledger.lattice`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.constants import ZERO_HASH
from ledger.containers import (
    AwardRecord,
    Claim,
    Entry,
    EntryHeader,
    EquivocationEvidence,
    Evidence,
    ForkEvidence,
    GenesisAllocation,
    GenesisBond,
    InvalidProofEvidence,
    LinkageEvidence,
    ProofStatement,
    SignedStatement,
    Slash,
    Transfer,
)
from ledger.encoding import (
    compute_body_hash,
    compute_header_hash,
    compute_offence_id,
    compute_proof_hash,
    compute_statement_digest,
    pack,
)
from ledger.env import LedgerEnv
from ledger.errors import Reason, require


@dataclass(frozen=True, slots=True)
class Offence:
    """What a piece of evidence proves: who offended, the offence id, and where it sits in the
    canonical order (the height of the award it concerns, or of the forked entries)."""

    offender: bytes
    offence_id: bytes
    height: int


def compute_offence(evidence: Evidence) -> Offence:
    """The offence a piece of evidence describes (no checks: see `verify_evidence`)."""
    if isinstance(evidence, ForkEvidence):
        first, second = evidence.first, evidence.second
        offence_id = compute_offence_id(evidence.KIND, first.account, pack(first.seq))
        return Offence(first.account, offence_id, min(first.height, second.height))
    if isinstance(evidence, EquivocationEvidence):
        prover = evidence.first.prover
    else:
        prover = evidence.statement.prover
    award_ref = compute_header_hash(evidence.award.header)
    offence_id = compute_offence_id(evidence.KIND, prover, award_ref)
    return Offence(prover, offence_id, evidence.award.header.height)


def compute_order_key(entry: Entry) -> tuple[int, int, bytes]:
    """Position in the canonical order: (height, 0, hash); evidence sits just after the offence
    it proves, whenever it arrives, so a cheater cannot outrun it by unbonding and withdrawing."""
    op = entry.op
    if isinstance(op, Slash):
        return (compute_offence(op.evidence).height, 1, entry.hash)
    return (entry.header.height, 0, entry.hash)


def compute_references(entry: Entry) -> tuple[bytes, ...]:
    """Entries that must be present (and lower) before this one can be placed."""
    refs: tuple[bytes, ...] = () if entry.header.seq == 0 else (entry.header.prev,)
    if isinstance(entry.op, Claim):
        refs += (entry.op.statement.statement.award_ref,)
    return refs


def is_valid_header_signature(header: EntryHeader, env: LedgerEnv) -> bool:
    return env.is_valid_signature(header.account, compute_header_hash(header), header.signature)


def is_valid_statement_signature(signed: SignedStatement, env: LedgerEnv) -> bool:
    digest = compute_statement_digest(signed.statement, signed.proof_hash)
    return env.is_valid_signature(signed.prover, digest, signed.signature)


def is_valid_proof(statement: ProofStatement, proof: bytes, env: LedgerEnv) -> bool:
    """The verifier's verdict; raises PROOF_UNDECIDED (changing nothing) if it has none yet."""
    verdict = env.verifier.verify(statement, proof)
    require(verdict is not None, Reason.PROOF_UNDECIDED, "retry when the bundle is available")
    return bool(verdict)


def verify_award_record(record: AwardRecord, env: LedgerEnv) -> bytes:
    """Check a carried award entry; returns its hash (the award ref)."""
    # The award body is the one the requester's header commits to.
    require(
        record.header.body_hash == compute_body_hash(record.award),
        Reason.EVIDENCE_AWARD_MISMATCH,
        "award body does not match its header",
    )
    # The requester signed the award entry.
    require(is_valid_header_signature(record.header, env), Reason.EVIDENCE_BAD_SIGNATURE, "award")
    return compute_header_hash(record.header)


def verify_statement_for_award(
    signed: SignedStatement, record: AwardRecord, award_ref: bytes, env: LedgerEnv
) -> None:
    # The statement names this award as its slot ...
    require(signed.statement.award_ref == award_ref, Reason.EVIDENCE_AWARD_MISMATCH, "award ref")
    # ... and the award names the statement's signer as its prover.
    require(record.award.prover == signed.prover, Reason.EVIDENCE_AWARD_MISMATCH, "prover")
    # The prover signed the statement.
    require(is_valid_statement_signature(signed, env), Reason.EVIDENCE_BAD_SIGNATURE, "statement")


def is_equivocation(first: SignedStatement, second: SignedStatement) -> bool:
    """Same prover, same award, different statements (signatures not checked here): what
    `EquivocationEvidence` needs. Two proofs of one statement are not equivocation."""
    return (
        first.prover == second.prover
        and first.statement.award_ref == second.statement.award_ref
        and first.statement != second.statement
    )


def verify_evidence(evidence: Evidence, reporter: bytes, env: LedgerEnv) -> Offence:
    """Check evidence on its own; returns the offence it proves or raises with the reason."""
    offence = compute_offence(evidence)
    # Reporting yourself would pay you a share of your own penalty.
    require(offence.offender != reporter, Reason.SELF_REPORT)
    if isinstance(evidence, ForkEvidence):
        first, second = evidence.first, evidence.second
        # Both headers are from one account ...
        require(first.account == second.account, Reason.EVIDENCE_SIGNERS_DIFFER)
        # ... at one sequence number, and differ.
        require(first.seq == second.seq, Reason.EVIDENCE_NOT_A_FORK, "different seq")
        require(
            compute_header_hash(first) != compute_header_hash(second),
            Reason.EVIDENCE_NOT_A_FORK,
            "same entry",
        )
        # The account signed both.
        require(is_valid_header_signature(first, env), Reason.EVIDENCE_BAD_SIGNATURE, "first")
        require(is_valid_header_signature(second, env), Reason.EVIDENCE_BAD_SIGNATURE, "second")
        return offence
    award_ref = verify_award_record(evidence.award, env)
    if isinstance(evidence, EquivocationEvidence):
        # Two statements by one prover ...
        require(evidence.first.prover == evidence.second.prover, Reason.EVIDENCE_SIGNERS_DIFFER)
        # ... for one award, that say different things (proof bytes may differ honestly).
        require(
            evidence.first.statement != evidence.second.statement, Reason.EVIDENCE_NOT_CONFLICTING
        )
        verify_statement_for_award(evidence.first, evidence.award, award_ref, env)
        verify_statement_for_award(evidence.second, evidence.award, award_ref, env)
    elif isinstance(evidence, InvalidProofEvidence):
        verify_statement_for_award(evidence.statement, evidence.award, award_ref, env)
        # The proof is the one the prover signed for ...
        require(
            compute_proof_hash(evidence.proof) == evidence.statement.proof_hash,
            Reason.PROOF_HASH_MISMATCH,
        )
        # ... and it does not prove the statement.
        require(
            not env.verify_proofs
            or is_valid_proof(evidence.statement.statement, evidence.proof, env) is False,
            Reason.EVIDENCE_PROOF_VALID,
        )
    else:
        assert isinstance(evidence, LinkageEvidence)
        verify_statement_for_award(evidence.statement, evidence.award, award_ref, env)
        statement, award = evidence.statement.statement, evidence.award.award
        # The statement's task contradicts the task the requester signed.
        require(
            statement.input_commitment != award.input_commitment
            or statement.slice_index != award.slice_index,
            Reason.EVIDENCE_COMMITMENT_MATCHES,
        )
    return offence


def verify_claim(claim: Claim, account: bytes, env: LedgerEnv) -> None:
    signed = claim.statement
    # A prover claims only with its own statement.
    require(signed.prover == account, Reason.STATEMENT_NOT_BY_ACCOUNT)
    # The statement is signed by the prover.
    require(is_valid_statement_signature(signed, env), Reason.STATEMENT_BAD_SIGNATURE)
    # The proof carried is the one the statement names.
    require(compute_proof_hash(claim.proof) == signed.proof_hash, Reason.PROOF_HASH_MISMATCH)
    # The proof proves the statement.
    require(
        not env.verify_proofs or is_valid_proof(signed.statement, claim.proof, env),
        Reason.PROOF_INVALID,
    )


def verify_entry(entry: Entry, env: LedgerEnv) -> None:
    """Every check on `entry` that needs no other entry and no state."""
    header, op = entry.header, entry.op
    # The first entry of a chain has no predecessor; every other entry has one.
    require((header.seq == 0) == (header.prev == ZERO_HASH), Reason.BAD_PREV)
    # The account signed this exact entry.
    require(
        env.is_valid_signature(header.account, entry.hash, header.signature), Reason.BAD_SIGNATURE
    )
    if isinstance(op, GenesisAllocation | GenesisBond):
        # Only the network's genesis key mints (into a balance or straight into a bond).
        require(header.account == env.config.genesis_account, Reason.NOT_GENESIS_AUTHORITY)
    elif isinstance(op, Transfer):
        # A transfer to oneself is a no-op that would still cost every replica work.
        require(op.recipient != header.account, Reason.SELF_TRANSFER)
    elif isinstance(op, Claim):
        verify_claim(op, header.account, env)
    elif isinstance(op, Slash):
        verify_evidence(op.evidence, header.account, env)
