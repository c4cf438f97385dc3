from __future__ import annotations

from collections.abc import Iterator

from ledger.containers import GenesisAllocation
from ledger.errors import Reason
from tests.ledger.helpers import World, make_env
from tests.ledger.spec import Part, run_transition, spec_test


@spec_test("genesis")
def test_basic() -> Iterator[Part]:
    w = World(make_env())
    entry = w.make("genesis", GenesisAllocation(w.key("alice"), 500))
    post = yield from run_transition(w, entry)
    assert post is not None
    assert post.accounts[w.key("alice")].balance == 500 and post.supply == 500


@spec_test("genesis")
def test_invalid_not_genesis_authority() -> Iterator[Part]:
    w = World(make_env())
    entry = w.make("mallory", GenesisAllocation(w.key("mallory"), 500))
    yield from run_transition(w, entry, Reason.NOT_GENESIS_AUTHORITY)


@spec_test("genesis")
def test_invalid_supply_cap_exceeded() -> Iterator[Part]:
    w = World(make_env(supply_max=1000))
    w.do("genesis", GenesisAllocation(w.key("alice"), 600))
    entry = w.make("genesis", GenesisAllocation(w.key("bob"), 401))
    yield from run_transition(w, entry, Reason.SUPPLY_CAP_EXCEEDED)


@spec_test("genesis")
def test_supply_cap_reached_exactly() -> Iterator[Part]:
    w = World(make_env(supply_max=1000))
    w.do("genesis", GenesisAllocation(w.key("alice"), 600))
    entry = w.make("genesis", GenesisAllocation(w.key("bob"), 400))
    post = yield from run_transition(w, entry)
    assert post is not None and post.supply == 1000
