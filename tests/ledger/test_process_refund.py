from __future__ import annotations

from collections.abc import Iterator

from ledger.containers import Refund
from ledger.errors import Reason
from tests.ledger.helpers import h32
from tests.ledger.market import JOB, awarded, market
from tests.ledger.spec import Part, run_transition, spec_test


@spec_test("refund")
def test_basic_returns_only_unreserved() -> Iterator[Part]:
    w = market()
    awarded(w, price=30)
    post = yield from run_transition(w, w.make("requester", Refund(JOB)))
    assert post is not None
    escrow = post.escrows[(w.key("requester"), JOB)]
    assert (escrow.available, escrow.reserved, escrow.refunded) == (0, 30, 70)
    assert post.accounts[w.key("requester")].balance == 900 + 70


@spec_test("refund")
def test_invalid_job_unknown() -> Iterator[Part]:
    w = market()
    yield from run_transition(w, w.make("requester", Refund(h32("nojob"))), Reason.JOB_UNKNOWN)


@spec_test("refund")
def test_invalid_not_own_job() -> Iterator[Part]:
    w = market()
    yield from run_transition(w, w.make("other", Refund(JOB)), Reason.JOB_UNKNOWN)


@spec_test("refund")
def test_invalid_nothing_to_refund() -> Iterator[Part]:
    w = market()
    w.do("requester", Refund(JOB))
    yield from run_transition(w, w.make("requester", Refund(JOB)), Reason.NOTHING_TO_REFUND)
