from __future__ import annotations

from collections.abc import Iterator

from ledger.containers import Award, Claim
from ledger.errors import Reason
from tests.ledger.helpers import h32
from tests.ledger.market import JOB, award_op, awarded, market
from tests.ledger.spec import Part, run_transition, spec_test


@spec_test("award")
def test_basic() -> Iterator[Part]:
    w = market()
    entry = w.make("requester", award_op(w, price=30))
    post = yield from run_transition(w, entry)
    assert post is not None
    escrow = post.escrows[(w.key("requester"), JOB)]
    assert (escrow.available, escrow.reserved) == (70, 30)
    award = post.awards[entry.hash]
    assert award.prover == w.key("prover") and not award.paid and not award.revoked


@spec_test("award")
def test_reaward_revokes_unpaid_round() -> Iterator[Part]:
    w = market()
    first = awarded(w, price=30)
    post = yield from run_transition(
        w, w.make("requester", award_op(w, "other", price=50, round=1))
    )
    assert post is not None
    assert post.awards[first.hash].revoked
    escrow = post.escrows[(w.key("requester"), JOB)]
    assert (escrow.available, escrow.reserved) == (50, 50)


@spec_test("award")
def test_reaward_can_use_released_reservation() -> Iterator[Part]:
    w = market(escrow=30)
    awarded(w, price=30)
    post = yield from run_transition(
        w, w.make("requester", award_op(w, "other", price=30, round=1))
    )
    assert post is not None


@spec_test("award")
def test_invalid_job_unknown() -> Iterator[Part]:
    w = market()
    op = Award(h32("nojob"), 0, 0, w.key("prover"), 1, h32("input", 0))
    yield from run_transition(w, w.make("requester", op), Reason.JOB_UNKNOWN)


@spec_test("award")
def test_invalid_job_of_another_requester() -> Iterator[Part]:
    w = market()
    yield from run_transition(w, w.make("other", award_op(w)), Reason.JOB_UNKNOWN)


@spec_test("award")
def test_invalid_first_round_not_zero() -> Iterator[Part]:
    w = market()
    yield from run_transition(w, w.make("requester", award_op(w, round=1)), Reason.ROUND_NOT_NEXT)


@spec_test("award")
def test_invalid_same_round_twice() -> Iterator[Part]:
    w = market()
    awarded(w)
    entry = w.make("requester", award_op(w, "other"))
    yield from run_transition(w, entry, Reason.ROUND_NOT_NEXT)


@spec_test("award")
def test_invalid_prover_not_bonded() -> Iterator[Part]:
    w = market()
    entry = w.make("requester", award_op(w, "reporter"))
    yield from run_transition(w, entry, Reason.PROVER_NOT_BONDED)


@spec_test("award")
def test_invalid_escrow_insufficient() -> Iterator[Part]:
    w = market()
    entry = w.make("requester", award_op(w, price=101))
    yield from run_transition(w, entry, Reason.ESCROW_INSUFFICIENT)


@spec_test("award")
def test_invalid_slice_already_paid() -> Iterator[Part]:
    w = market()
    award = awarded(w)
    statement, proof = w.statement("prover", award)
    w.do("prover", Claim(statement, proof))
    entry = w.make("requester", award_op(w, "other", round=1))
    yield from run_transition(w, entry, Reason.SLICE_ALREADY_PAID)
