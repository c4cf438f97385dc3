"""A small market scenario shared by the escrow/award/claim/refund/slash tests."""

from __future__ import annotations

from ledger.containers import Award, Bond, Entry, Escrow, GenesisAllocation
from tests.ledger.helpers import World, h32, make_env

JOB = h32("job")
BUNDLE = h32("bundle")
INPUT = h32("input", 0)


def market(*, signatures: bool = True, escrow: int = 100) -> World:
    """requester: 1000 and an escrow of `escrow` for JOB; prover/other: 1000 each, 500 bonded."""
    w = World(make_env(signatures=signatures))
    for name in ("requester", "prover", "other", "reporter"):
        w.do("genesis", GenesisAllocation(w.key(name), 1000))
    w.do("prover", Bond(500))
    w.do("other", Bond(500))
    w.do("requester", Escrow(JOB, BUNDLE, escrow))
    return w


def award_op(
    w: World, prover: str = "prover", *, price: int = 30, round: int = 0, slice_index: int = 0
) -> Award:
    return Award(JOB, slice_index, round, w.key(prover), price, h32("input", slice_index))


def awarded(w: World, prover: str = "prover", price: int = 30) -> Entry:
    return w.do("requester", award_op(w, prover, price=price))
