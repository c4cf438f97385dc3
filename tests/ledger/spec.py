"""Spec-style tests: a case is a generator yielding ("config", config), ("pre", state),
("entry", entry), ("post", state | None). Under pytest the decorator just runs it (its checks
are the test); `python -m tests.vectors` runs the same generators and writes what they yield.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from ledger.accessors import (
    hash_state,
    is_award_consistent,
    is_conserved,
    is_escrow_sound,
    is_non_negative,
)
from ledger.containers import Entry, LedgerState
from ledger.errors import InvalidTransition, Reason
from ledger.transition import copy_state, state_transition
from tests.ledger.helpers import World

Part = tuple[str, Any]
CaseFn = Callable[[], Iterator[Part]]
SPEC_CASES: dict[str, list[CaseFn]] = {}


def spec_test(op: str) -> Callable[[CaseFn], Callable[[], None]]:
    """Register a case generator under `op` and turn it into a plain pytest test."""

    def decorate(fn: CaseFn) -> Callable[[], None]:
        SPEC_CASES.setdefault(op, []).append(fn)

        @functools.wraps(fn)
        def test() -> None:
            for _ in fn():
                pass

        return test

    return decorate


def run_transition(
    world: World, entry: Entry, reason: Reason | None = None
) -> Generator[Part, None, LedgerState | None]:
    """Yield pre/entry/post for `entry` applied to the world's state; check the outcome."""
    pre = copy_state(world.state)
    before = hash_state(pre)
    yield "config", world.env.config
    yield "pre", pre
    yield "entry", entry
    if reason is None:
        post = state_transition(pre, entry, world.env)
        # The transition is pure: the pre-state is untouched.
        assert hash_state(pre) == before
        assert is_conserved(post) and is_non_negative(post)
        assert is_escrow_sound(post) and is_award_consistent(post)
        yield "post", post
        return post
    with pytest.raises(InvalidTransition) as info:
        state_transition(pre, entry, world.env)
    assert info.value.reason is reason, info.value
    assert hash_state(pre) == before  # an invalid entry changes nothing
    yield "post", None
    return None
