from __future__ import annotations

from collections.abc import Iterator

from ledger.containers import Bond, GenesisAllocation, Unbond, Withdraw
from ledger.errors import Reason
from tests.ledger.helpers import World, make_env
from tests.ledger.spec import Part, run_transition, spec_test


def unbonding() -> World:
    """alice: 100 bonded, then 40 unbonding (delay 4 heights in the minimal preset)."""
    w = World(make_env())
    w.do("genesis", GenesisAllocation(w.key("alice"), 100))
    w.do("alice", Bond(100))
    w.do("alice", Unbond(40))
    return w


@spec_test("withdraw")
def test_basic_after_delay() -> Iterator[Part]:
    w = unbonding()
    w.writer("alice").observe_height(w.writer("alice").height + w.env.config.unbond_delay_heights)
    post = yield from run_transition(w, w.make("alice", Withdraw()))
    assert post is not None
    acct = post.accounts[w.key("alice")]
    assert (acct.balance, acct.bonded, acct.unbonding) == (40, 60, [])


@spec_test("withdraw")
def test_only_matured_unbondings_are_released() -> Iterator[Part]:
    w = unbonding()
    w.writer("alice").observe_height(w.writer("alice").height + 2)
    w.do("alice", Unbond(10))  # matures 3 heights after the first one
    first_mature = w.state.accounts[w.key("alice")].unbonding[0][1]
    w.writer("alice").observe_height(first_mature - 1)
    post = yield from run_transition(w, w.make("alice", Withdraw()))
    assert post is not None
    acct = post.accounts[w.key("alice")]
    assert acct.balance == 40 and [a for a, _ in acct.unbonding] == [10]


@spec_test("withdraw")
def test_invalid_nothing_mature() -> Iterator[Part]:
    w = unbonding()
    yield from run_transition(w, w.make("alice", Withdraw()), Reason.NOTHING_MATURE)


@spec_test("withdraw")
def test_invalid_nothing_unbonding() -> Iterator[Part]:
    w = World(make_env())
    w.do("genesis", GenesisAllocation(w.key("alice"), 100))
    yield from run_transition(w, w.make("alice", Withdraw()), Reason.NOTHING_MATURE)
