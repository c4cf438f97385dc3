from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from ledger.builders import build_entry, sign_statement
from ledger.containers import (
    EntryHeader,
    EquivocationEvidence,
    ForkEvidence,
    InvalidProofEvidence,
    LinkageEvidence,
    Slash,
    Transfer,
    Unbond,
)
from ledger.errors import Reason
from tests.ledger.helpers import World, award_record, h32, identity
from tests.ledger.market import award_op, awarded, market
from tests.ledger.spec import Part, run_transition, spec_test


def fork(w: World, name: str) -> tuple[EntryHeader, EntryHeader]:
    """Two signed entries of `name` at its next seq (the account does not publish them)."""
    writer = w.writer(name)
    signer = identity(name)
    a = build_entry(signer, writer.seq, writer.head, writer.height + 1, Transfer(w.key("x"), 1))
    b = build_entry(signer, writer.seq, writer.head, writer.height + 2, Transfer(w.key("y"), 1))
    return a.header, b.header


def check_slashed(w: World, post: object, offender: str, stake: int) -> None:
    from ledger.containers import LedgerState

    assert isinstance(post, LedgerState)
    penalty, reward = stake // 2, stake // 2 // 4
    pre = w.state
    acct = post.accounts[w.key(offender)]
    assert acct.slashed == penalty
    assert acct.bonded + sum(a for a, _ in acct.unbonding) == stake - penalty
    assert (
        post.accounts[w.key("reporter")].balance == pre.accounts[w.key("reporter")].balance + reward
    )
    assert post.burned == pre.burned + penalty - reward
    assert len(post.offences) == len(pre.offences) + 1


@spec_test("slash")
def test_basic_fork() -> Iterator[Part]:
    w = market()
    first, second = fork(w, "prover")
    post = yield from run_transition(w, w.make("reporter", Slash(ForkEvidence(first, second))))
    check_slashed(w, post, "prover", 500)


@spec_test("slash")
def test_basic_equivocation() -> Iterator[Part]:
    w = market()
    award = awarded(w)
    s1, _ = w.statement("prover", award, output=b"one")
    s2, _ = w.statement("prover", award, output=b"two")
    evidence = EquivocationEvidence(award_record(award), s1, s2)
    post = yield from run_transition(w, w.make("reporter", Slash(evidence)))
    check_slashed(w, post, "prover", 500)


@spec_test("slash")
def test_basic_invalid_proof() -> Iterator[Part]:
    w = market()
    award = awarded(w)
    good, _ = w.statement("prover", award)
    bad = sign_statement(identity("prover"), good.statement, b"garbage proof")
    evidence = InvalidProofEvidence(award_record(award), bad, b"garbage proof")
    post = yield from run_transition(w, w.make("reporter", Slash(evidence)))
    check_slashed(w, post, "prover", 500)


@spec_test("slash")
def test_basic_linkage() -> Iterator[Part]:
    w = market()
    award = awarded(w)
    tampered, _ = w.statement("prover", award, input_commitment=h32("tampered"))
    evidence = LinkageEvidence(award_record(award), tampered)
    post = yield from run_transition(w, w.make("reporter", Slash(evidence)))
    check_slashed(w, post, "prover", 500)


@spec_test("slash")
def test_unbonding_stake_stays_slashable() -> Iterator[Part]:
    w = market()
    w.do("prover", Unbond(400))
    first, second = fork(w, "prover")
    post = yield from run_transition(w, w.make("reporter", Slash(ForkEvidence(first, second))))
    check_slashed(w, post, "prover", 500)
    assert post is not None
    acct = post.accounts[w.key("prover")]
    assert acct.bonded == 0 and [a for a, _ in acct.unbonding] == [250]


@spec_test("slash")
def test_offender_without_stake_is_recorded_once() -> Iterator[Part]:
    w = market()
    first, second = fork(w, "requester")
    post = yield from run_transition(w, w.make("reporter", Slash(ForkEvidence(first, second))))
    assert post is not None and len(post.offences) == 1 and post.burned == 0


@spec_test("slash")
def test_invalid_already_slashed() -> Iterator[Part]:
    w = market()
    first, second = fork(w, "prover")
    w.do("reporter", Slash(ForkEvidence(first, second)))
    # Another reporter, the headers swapped: still the same offence.
    entry = w.make("other", Slash(ForkEvidence(second, first)))
    yield from run_transition(w, entry, Reason.ALREADY_SLASHED)


@spec_test("slash")
def test_invalid_self_report() -> Iterator[Part]:
    w = market()
    first, second = fork(w, "prover")
    entry = w.make("prover", Slash(ForkEvidence(first, second)))
    yield from run_transition(w, entry, Reason.SELF_REPORT)


@spec_test("slash")
def test_invalid_fork_bad_signature() -> Iterator[Part]:
    w = market()
    first, second = fork(w, "prover")
    forged = dataclasses.replace(second, signature=bytes(64))
    entry = w.make("reporter", Slash(ForkEvidence(first, forged)))
    yield from run_transition(w, entry, Reason.EVIDENCE_BAD_SIGNATURE)


@spec_test("slash")
def test_invalid_fork_same_entry() -> Iterator[Part]:
    w = market()
    first, _ = fork(w, "prover")
    entry = w.make("reporter", Slash(ForkEvidence(first, first)))
    yield from run_transition(w, entry, Reason.EVIDENCE_NOT_A_FORK)


@spec_test("slash")
def test_invalid_fork_consecutive_entries() -> Iterator[Part]:
    w = market()
    a = w.do("prover", Transfer(w.key("x"), 1))
    b = w.do("prover", Transfer(w.key("x"), 1))
    entry = w.make("reporter", Slash(ForkEvidence(a.header, b.header)))
    yield from run_transition(w, entry, Reason.EVIDENCE_NOT_A_FORK)


@spec_test("slash")
def test_invalid_fork_signers_differ() -> Iterator[Part]:
    w = market()
    first, _ = fork(w, "prover")
    _, other = fork(w, "other")
    entry = w.make("reporter", Slash(ForkEvidence(first, other)))
    yield from run_transition(w, entry, Reason.EVIDENCE_SIGNERS_DIFFER)


@spec_test("slash")
def test_invalid_equivocation_not_conflicting() -> Iterator[Part]:
    """Proving the same statement twice (proofs differ) is honest, not equivocation."""
    w = market()
    award = awarded(w)
    s1, _ = w.statement("prover", award)
    s2 = sign_statement(identity("prover"), s1.statement, b"another valid-looking proof")
    evidence = EquivocationEvidence(award_record(award), s1, s2)
    entry = w.make("reporter", Slash(evidence))
    yield from run_transition(w, entry, Reason.EVIDENCE_NOT_CONFLICTING)


@spec_test("slash")
def test_invalid_equivocation_signers_differ() -> Iterator[Part]:
    w = market()
    award = awarded(w)
    s1, _ = w.statement("prover", award, output=b"one")
    s2, _ = w.statement("other", award, output=b"two")
    evidence = EquivocationEvidence(award_record(award), s1, s2)
    entry = w.make("reporter", Slash(evidence))
    yield from run_transition(w, entry, Reason.EVIDENCE_SIGNERS_DIFFER)


@spec_test("slash")
def test_invalid_equivocation_forged_statement() -> Iterator[Part]:
    w = market()
    award = awarded(w)
    s1, _ = w.statement("prover", award, output=b"one")
    s2, _ = w.statement("prover", award, output=b"two")
    evidence = EquivocationEvidence(
        award_record(award), s1, dataclasses.replace(s2, signature=s1.signature)
    )
    entry = w.make("reporter", Slash(evidence))
    yield from run_transition(w, entry, Reason.EVIDENCE_BAD_SIGNATURE)


@spec_test("slash")
def test_invalid_award_body_does_not_match_header() -> Iterator[Part]:
    w = market()
    award = awarded(w)
    tampered, _ = w.statement("prover", award, input_commitment=h32("tampered"))
    record = award_record(award)
    record = dataclasses.replace(
        record, award=dataclasses.replace(record.award, input_commitment=h32("x"))
    )
    entry = w.make("reporter", Slash(LinkageEvidence(record, tampered)))
    yield from run_transition(w, entry, Reason.EVIDENCE_AWARD_MISMATCH)


@spec_test("slash")
def test_invalid_award_not_signed_by_requester() -> Iterator[Part]:
    w = market()
    award = awarded(w)
    tampered, _ = w.statement("prover", award, input_commitment=h32("tampered"))
    record = award_record(award)
    record = dataclasses.replace(
        record, header=dataclasses.replace(record.header, signature=bytes(64))
    )
    entry = w.make("reporter", Slash(LinkageEvidence(record, tampered)))
    yield from run_transition(w, entry, Reason.EVIDENCE_BAD_SIGNATURE)


@spec_test("slash")
def test_invalid_statement_for_another_award() -> Iterator[Part]:
    w = market()
    award = awarded(w)
    other_award = w.do("requester", award_op(w, slice_index=1))
    tampered, _ = w.statement("prover", other_award, input_commitment=h32("tampered"))
    entry = w.make("reporter", Slash(LinkageEvidence(award_record(award), tampered)))
    yield from run_transition(w, entry, Reason.EVIDENCE_AWARD_MISMATCH)


@spec_test("slash")
def test_invalid_award_names_another_prover() -> Iterator[Part]:
    """A statement by a key the award did not name is not that key's offence on this award."""
    w = market()
    award = awarded(w, "other")
    tampered, _ = w.statement("prover", award, input_commitment=h32("tampered"))
    entry = w.make("reporter", Slash(LinkageEvidence(award_record(award), tampered)))
    yield from run_transition(w, entry, Reason.EVIDENCE_AWARD_MISMATCH)


@spec_test("slash")
def test_invalid_proof_actually_valid() -> Iterator[Part]:
    w = market()
    award = awarded(w)
    good, proof = w.statement("prover", award)
    entry = w.make("reporter", Slash(InvalidProofEvidence(award_record(award), good, proof)))
    yield from run_transition(w, entry, Reason.EVIDENCE_PROOF_VALID)


@spec_test("slash")
def test_invalid_proof_not_the_signed_one() -> Iterator[Part]:
    w = market()
    award = awarded(w)
    good, _ = w.statement("prover", award)
    entry = w.make("reporter", Slash(InvalidProofEvidence(award_record(award), good, b"other")))
    yield from run_transition(w, entry, Reason.PROOF_HASH_MISMATCH)


@spec_test("slash")
def test_invalid_linkage_commitment_matches() -> Iterator[Part]:
    w = market()
    award = awarded(w)
    honest, _ = w.statement("prover", award)
    entry = w.make("reporter", Slash(LinkageEvidence(award_record(award), honest)))
    yield from run_transition(w, entry, Reason.EVIDENCE_COMMITMENT_MATCHES)


def test_is_equivocation_and_ignorable_reasons() -> None:
    from ledger.errors import is_ignorable
    from ledger.verify import is_equivocation

    w = market()
    award = awarded(w)
    s1, _ = w.statement("prover", award, output=b"one")
    s2, _ = w.statement("prover", award, output=b"two")
    again = sign_statement(identity("prover"), s1.statement, b"another proof")
    assert is_equivocation(s1, s2) and not is_equivocation(s1, again)
    assert is_ignorable(Reason.PROOF_UNDECIDED) and not is_ignorable(Reason.BAD_SIGNATURE)
