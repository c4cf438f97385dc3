from __future__ import annotations

from collections.abc import Iterator

from ledger.containers import Bond, GenesisAllocation
from ledger.errors import Reason
from tests.ledger.helpers import World, make_env
from tests.ledger.spec import Part, run_transition, spec_test


def funded() -> World:
    w = World(make_env())
    w.do("genesis", GenesisAllocation(w.key("alice"), 100))
    return w


@spec_test("bond")
def test_basic() -> Iterator[Part]:
    w = funded()
    post = yield from run_transition(w, w.make("alice", Bond(60)))
    assert post is not None
    acct = post.accounts[w.key("alice")]
    assert (acct.balance, acct.bonded) == (40, 60)


@spec_test("bond")
def test_invalid_insufficient_balance() -> Iterator[Part]:
    w = funded()
    yield from run_transition(w, w.make("alice", Bond(101)), Reason.INSUFFICIENT_BALANCE)
