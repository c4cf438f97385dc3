from __future__ import annotations

from collections.abc import Iterator

from ledger.constants import UNBONDINGS_MAX
from ledger.containers import Bond, GenesisAllocation, Unbond
from ledger.errors import Reason
from tests.ledger.helpers import World, make_env
from tests.ledger.spec import Part, run_transition, spec_test


def bonded(amount: int = 100) -> World:
    w = World(make_env())
    w.do("genesis", GenesisAllocation(w.key("alice"), amount))
    w.do("alice", Bond(amount))
    return w


@spec_test("unbond")
def test_basic() -> Iterator[Part]:
    w = bonded()
    entry = w.make("alice", Unbond(40))
    post = yield from run_transition(w, entry)
    assert post is not None
    acct = post.accounts[w.key("alice")]
    delay = w.env.config.unbond_delay_heights
    assert acct.bonded == 60
    assert acct.unbonding == [(40, entry.header.height + delay)]


@spec_test("unbond")
def test_invalid_insufficient_bond() -> Iterator[Part]:
    w = bonded()
    yield from run_transition(w, w.make("alice", Unbond(101)), Reason.INSUFFICIENT_BOND)


@spec_test("unbond")
def test_invalid_too_many_unbondings() -> Iterator[Part]:
    w = bonded(UNBONDINGS_MAX + 1)
    for _ in range(UNBONDINGS_MAX):
        w.do("alice", Unbond(1))
    yield from run_transition(w, w.make("alice", Unbond(1)), Reason.TOO_MANY_UNBONDINGS)
