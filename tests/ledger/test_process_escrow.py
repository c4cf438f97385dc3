from __future__ import annotations

from collections.abc import Iterator

from ledger.containers import Escrow
from ledger.errors import Reason
from tests.ledger.helpers import h32
from tests.ledger.market import BUNDLE, JOB, market
from tests.ledger.spec import Part, run_transition, spec_test


@spec_test("escrow")
def test_basic() -> Iterator[Part]:
    w = market()
    job = h32("job", 2)
    post = yield from run_transition(w, w.make("requester", Escrow(job, BUNDLE, 200)))
    assert post is not None
    escrow = post.escrows[(w.key("requester"), job)]
    assert (escrow.available, escrow.reserved, escrow.bundle_id) == (200, 0, BUNDLE)
    assert post.accounts[w.key("requester")].balance == 1000 - 100 - 200


@spec_test("escrow")
def test_same_job_id_other_requester() -> Iterator[Part]:
    w = market()
    post = yield from run_transition(w, w.make("other", Escrow(JOB, BUNDLE, 10)))
    assert post is not None and (w.key("other"), JOB) in post.escrows


@spec_test("escrow")
def test_invalid_job_exists() -> Iterator[Part]:
    w = market()
    yield from run_transition(w, w.make("requester", Escrow(JOB, BUNDLE, 1)), Reason.JOB_EXISTS)


@spec_test("escrow")
def test_invalid_insufficient_balance() -> Iterator[Part]:
    w = market()
    entry = w.make("requester", Escrow(h32("job", 3), BUNDLE, 901))
    yield from run_transition(w, entry, Reason.INSUFFICIENT_BALANCE)
