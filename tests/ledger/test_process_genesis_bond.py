"""`GenesisBond`: the genesis key mints straight into an account's bonded stake."""

from __future__ import annotations

from collections.abc import Iterator

from ledger.accessors import is_conserved
from ledger.containers import (
    Award,
    Escrow,
    GenesisAllocation,
    GenesisBond,
    Unbond,
    Withdraw,
)
from ledger.errors import Reason
from ledger.lattice import EntryStatus
from tests.ledger.helpers import World, h32, make_env
from tests.ledger.spec import Part, run_transition, spec_test


@spec_test("genesis_bond")
def test_basic() -> Iterator[Part]:
    w = World(make_env())
    entry = w.make("genesis", GenesisBond(w.key("alice"), 500))
    post = yield from run_transition(w, entry)
    assert post is not None
    acct = post.accounts[w.key("alice")]
    assert (acct.balance, acct.bonded, post.supply) == (0, 500, 500)


@spec_test("genesis_bond")
def test_adds_to_an_allocation() -> Iterator[Part]:
    w = World(make_env())
    w.do("genesis", GenesisAllocation(w.key("alice"), 300))
    post = yield from run_transition(w, w.make("genesis", GenesisBond(w.key("alice"), 200)))
    assert post is not None
    acct = post.accounts[w.key("alice")]
    assert (acct.balance, acct.bonded, post.supply) == (300, 200, 500)


@spec_test("genesis_bond")
def test_invalid_not_genesis_authority() -> Iterator[Part]:
    w = World(make_env())
    entry = w.make("mallory", GenesisBond(w.key("mallory"), 500))
    yield from run_transition(w, entry, Reason.NOT_GENESIS_AUTHORITY)


@spec_test("genesis_bond")
def test_invalid_supply_cap_exceeded() -> Iterator[Part]:
    # Allocations and bonds share one cap.
    w = World(make_env(supply_max=1000))
    w.do("genesis", GenesisAllocation(w.key("alice"), 600))
    entry = w.make("genesis", GenesisBond(w.key("bob"), 401))
    yield from run_transition(w, entry, Reason.SUPPLY_CAP_EXCEEDED)


@spec_test("genesis_bond")
def test_supply_cap_reached_exactly() -> Iterator[Part]:
    w = World(make_env(supply_max=1000))
    w.do("genesis", GenesisBond(w.key("alice"), 600))
    entry = w.make("genesis", GenesisBond(w.key("bob"), 400))
    post = yield from run_transition(w, entry)
    assert post is not None and post.supply == 1000


def test_genesis_bonded_prover_can_be_awarded() -> None:
    w = World(make_env(award_bond_min=50))
    w.do("genesis", GenesisAllocation(w.key("requester"), 1000))
    w.do("genesis", GenesisBond(w.key("prover"), 50))
    w.do("requester", Escrow(h32("job"), h32("bundle"), 100))
    award = w.do("requester", Award(h32("job"), 0, 0, w.key("prover"), 30, h32("input")))
    assert w.lattice.get_status(award.hash) == (EntryStatus.APPLIED, None)
    assert is_conserved(w.state)


def test_genesis_bond_unbonds_and_withdraws_like_any_stake() -> None:
    w = World(make_env())
    w.do("genesis", GenesisBond(w.key("alice"), 100))
    w.do("alice", Unbond(100))
    w.writer("alice").observe_height(w.lattice.get_max_height() + w.env.config.unbond_delay_heights)
    withdraw = w.do("alice", Withdraw())
    assert w.lattice.get_status(withdraw.hash) == (EntryStatus.APPLIED, None)
    acct = w.state.accounts[w.key("alice")]
    assert (acct.balance, acct.bonded, acct.unbonding) == (100, 0, [])
    assert is_conserved(w.state)
