from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from ledger.builders import sign_statement
from ledger.containers import Claim
from ledger.errors import Reason
from tests.ledger.helpers import fake_proof, h32, identity
from tests.ledger.market import JOB, award_op, awarded, market
from tests.ledger.spec import Part, run_transition, spec_test


@spec_test("claim")
def test_basic() -> Iterator[Part]:
    w = market()
    award = awarded(w, price=30)
    statement, proof = w.statement("prover", award)
    post = yield from run_transition(w, w.make("prover", Claim(statement, proof)))
    assert post is not None
    assert post.awards[award.hash].paid
    assert post.accounts[w.key("prover")].balance == 500 + 30
    escrow = post.escrows[(w.key("requester"), JOB)]
    assert (escrow.available, escrow.reserved, escrow.paid) == (70, 0, 30)


@spec_test("claim")
def test_invalid_award_unknown() -> Iterator[Part]:
    w = market()
    award = w.make("requester", award_op(w))  # made but never applied
    statement, proof = w.statement("prover", award)
    yield from run_transition(w, w.make("prover", Claim(statement, proof)), Reason.AWARD_UNKNOWN)


@spec_test("claim")
def test_invalid_award_not_for_account() -> Iterator[Part]:
    w = market()
    award = awarded(w)
    statement, proof = w.statement("other", award)
    entry = w.make("other", Claim(statement, proof))
    yield from run_transition(w, entry, Reason.AWARD_NOT_FOR_ACCOUNT)


@spec_test("claim")
def test_invalid_award_revoked() -> Iterator[Part]:
    w = market()
    award = awarded(w)
    w.do("requester", award_op(w, "other", round=1))
    statement, proof = w.statement("prover", award)
    yield from run_transition(w, w.make("prover", Claim(statement, proof)), Reason.AWARD_REVOKED)


@spec_test("claim")
def test_invalid_award_already_paid() -> Iterator[Part]:
    w = market()
    award = awarded(w)
    statement, proof = w.statement("prover", award)
    w.do("prover", Claim(statement, proof))
    again, proof2 = w.statement("prover", award)
    entry = w.make("prover", Claim(again, proof2))
    yield from run_transition(w, entry, Reason.AWARD_ALREADY_PAID)


@spec_test("claim")
def test_invalid_statement_mismatch_input() -> Iterator[Part]:
    w = market()
    award = awarded(w)
    statement, proof = w.statement("prover", award, input_commitment=h32("tampered"))
    entry = w.make("prover", Claim(statement, proof))
    yield from run_transition(w, entry, Reason.STATEMENT_MISMATCH)


@spec_test("claim")
def test_invalid_statement_mismatch_bundle() -> Iterator[Part]:
    w = market()
    award = awarded(w)
    statement, proof = w.statement("prover", award, bundle=h32("other bundle"))
    entry = w.make("prover", Claim(statement, proof))
    yield from run_transition(w, entry, Reason.STATEMENT_MISMATCH)


@spec_test("claim")
def test_invalid_statement_not_by_account() -> Iterator[Part]:
    w = market()
    award = awarded(w)
    statement, proof = w.statement("other", award)
    entry = w.make("prover", Claim(statement, proof))
    yield from run_transition(w, entry, Reason.STATEMENT_NOT_BY_ACCOUNT)


@spec_test("claim")
def test_invalid_statement_bad_signature() -> Iterator[Part]:
    w = market()
    award = awarded(w)
    statement, proof = w.statement("prover", award)
    forged = dataclasses.replace(statement, signature=bytes(64))
    entry = w.make("prover", Claim(forged, proof))
    yield from run_transition(w, entry, Reason.STATEMENT_BAD_SIGNATURE)


@spec_test("claim")
def test_invalid_proof_hash_mismatch() -> Iterator[Part]:
    w = market()
    award = awarded(w)
    statement, proof = w.statement("prover", award)
    entry = w.make("prover", Claim(statement, proof + b"x"))
    yield from run_transition(w, entry, Reason.PROOF_HASH_MISMATCH)


@spec_test("claim")
def test_invalid_proof_invalid() -> Iterator[Part]:
    w = market()
    award = awarded(w)
    statement, _ = w.statement("prover", award)
    bad = b"not a proof"
    signed = sign_statement(identity("prover"), statement.statement, bad)
    assert fake_proof(statement.statement) != bad
    entry = w.make("prover", Claim(signed, bad))
    yield from run_transition(w, entry, Reason.PROOF_INVALID)
