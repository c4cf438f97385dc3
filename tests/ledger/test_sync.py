"""Anti-entropy: frontiers, entry ranges and the in-memory pull loop make replicas converge."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.builders import build_entry
from ledger.constants import ZERO_HASH
from ledger.containers import GenesisAllocation, Transfer
from ledger.encoding import decode_entry
from ledger.lattice import Lattice
from ledger.sync import (
    EntriesRequest,
    FrontierRequest,
    compute_entries_response,
    compute_entry_requests,
    compute_frontier,
    pull_from,
)
from tests.ledger.helpers import World, identity, make_env
from tests.ledger.histories import build_history

ENV = make_env(signatures=False)


def lattice_of(entries: list) -> Lattice:  # type: ignore[type-arg]
    lattice = Lattice(ENV)
    for e in entries:
        lattice.add(e)
    return lattice


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(5, 120), keep=st.floats(0.0, 1.0))
def test_two_replicas_converge(seed: int, n: int, keep: float) -> None:
    hist = build_history(ENV, seed, n)
    rng = random.Random(seed)
    a = lattice_of(hist.entries)
    b = lattice_of([e for e in hist.entries if rng.random() < keep])
    pull_from(b, a)
    pull_from(a, b)
    assert a.compute_root() == b.compute_root()
    assert b.statistics().pending == 0


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(5, 120))
def test_disjoint_halves_converge_both_ways(seed: int, n: int) -> None:
    hist = build_history(ENV, seed, n)
    rng = random.Random(seed)
    halves: tuple[list, list] = ([], [])  # type: ignore[type-arg]
    for e in hist.entries:
        halves[rng.randrange(2)].append(e)
    a, b = lattice_of(halves[0]), lattice_of(halves[1])
    for _ in range(2):
        pull_from(a, b)
        pull_from(b, a)
    assert a.compute_root() == b.compute_root() == lattice_of(hist.entries).compute_root()


def test_forked_chains_converge_to_the_lowest_hash() -> None:
    w = World(ENV)
    g = w.make("genesis", GenesisAllocation(w.key("a"), 100))
    signer = identity("a")
    x = build_entry(signer, 0, ZERO_HASH, 5, Transfer(w.key("b"), 1))
    x1 = build_entry(signer, 1, x.hash, 6, Transfer(w.key("b"), 1))
    y = build_entry(signer, 0, ZERO_HASH, 5, Transfer(w.key("c"), 1))
    a, b = lattice_of([g, x, x1]), lattice_of([g, y])
    pull_from(a, b)
    pull_from(b, a)
    assert a.compute_root() == b.compute_root()
    assert a.get_head(w.key("a")) == b.get_head(w.key("a"))
    assert len(a.compute_fork_evidence()) == 1


def test_frontier_pages() -> None:
    w = World(ENV)
    entries = [w.make("genesis", GenesisAllocation(w.key(f"n{i}"), 1)) for i in range(3)]
    entries += [w.make(f"n{i}", Transfer(w.key("sink"), 1)) for i in range(3)]
    lattice = lattice_of(entries)
    first = compute_frontier(lattice, FrontierRequest(limit=2))
    assert len(first.items) == 2 and first.more
    rest = compute_frontier(lattice, FrontierRequest(after_account=first.items[-1].account))
    assert not rest.more
    accounts = [i.account for i in first.items + rest.items]
    assert accounts == sorted(accounts) == lattice.get_accounts()


def test_entries_response_ranges() -> None:
    w = World(ENV)
    entries = [w.make("genesis", GenesisAllocation(w.key("a"), 100))]
    entries += [w.make("a", Transfer(w.key("b"), 1)) for _ in range(10)]
    lattice = lattice_of(entries)
    chain = lattice.get_chain(w.key("a"))
    response = compute_entries_response(lattice, EntriesRequest(w.key("a"), 4, chain[3].hash, 3))
    assert response.from_seq == 4 and response.more
    assert [decode_entry(d, ENV.config.proof_bytes_max) for d in response.entries] == chain[4:7]
    # A prev hash we do not share means the chains diverge: serve from the start.
    response = compute_entries_response(lattice, EntriesRequest(w.key("a"), 4, b"\x09" * 32, 3))
    assert response.from_seq == 0
    # Nothing to ask of a replica that is behind us.
    behind = lattice_of(entries[:3])
    assert compute_entry_requests(lattice, compute_frontier(behind).items) == []
    requests = compute_entry_requests(behind, compute_frontier(lattice).items)
    assert [(r.account, r.from_seq) for r in requests] == [(w.key("a"), 2)]
