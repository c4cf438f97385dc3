from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from ledger.containers import GenesisAllocation, Transfer
from ledger.errors import Reason
from tests.ledger.helpers import World, make_env
from tests.ledger.spec import Part, run_transition, spec_test


def funded() -> World:
    w = World(make_env())
    w.do("genesis", GenesisAllocation(w.key("alice"), 100))
    return w


@spec_test("transfer")
def test_basic() -> Iterator[Part]:
    w = funded()
    post = yield from run_transition(w, w.make("alice", Transfer(w.key("bob"), 30)))
    assert post is not None
    assert post.accounts[w.key("alice")].balance == 70
    assert post.accounts[w.key("bob")].balance == 30


@spec_test("transfer")
def test_whole_balance() -> Iterator[Part]:
    w = funded()
    post = yield from run_transition(w, w.make("alice", Transfer(w.key("bob"), 100)))
    assert post is not None and post.accounts[w.key("alice")].balance == 0


@spec_test("transfer")
def test_invalid_insufficient_balance() -> Iterator[Part]:
    w = funded()
    yield from run_transition(
        w, w.make("alice", Transfer(w.key("bob"), 101)), Reason.INSUFFICIENT_BALANCE
    )


@spec_test("transfer")
def test_invalid_unknown_sender() -> Iterator[Part]:
    w = funded()
    yield from run_transition(
        w, w.make("carol", Transfer(w.key("bob"), 1)), Reason.INSUFFICIENT_BALANCE
    )


@spec_test("transfer")
def test_invalid_self_transfer() -> Iterator[Part]:
    w = funded()
    yield from run_transition(w, w.make("alice", Transfer(w.key("alice"), 1)), Reason.SELF_TRANSFER)


@spec_test("transfer")
def test_invalid_bad_signature() -> Iterator[Part]:
    w = funded()
    entry = w.make("alice", Transfer(w.key("bob"), 1))
    forged = dataclasses.replace(
        entry, header=dataclasses.replace(entry.header, signature=bytes(64))
    )
    yield from run_transition(w, forged, Reason.BAD_SIGNATURE)


@spec_test("transfer")
def test_invalid_signed_by_another_key() -> Iterator[Part]:
    w = funded()
    entry = w.make("alice", Transfer(w.key("bob"), 1))
    other = w.make("bob", Transfer(w.key("alice"), 1))
    forged = dataclasses.replace(
        entry, header=dataclasses.replace(entry.header, signature=other.header.signature)
    )
    yield from run_transition(w, forged, Reason.BAD_SIGNATURE)
