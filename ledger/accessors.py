"""Read-only views of a `LedgerState`: totals, invariants and the canonical state hash.

`hash_state` encodes every field in sorted key order (never iterating a set or an unsorted dict
into the hash), skips accounts that hold nothing, and hashes the result with a domain tag.
"""

from __future__ import annotations

import hashlib

import msgpack

from ledger.constants import DOMAIN_STATE
from ledger.containers import LedgerState


def get_total_balances(state: LedgerState) -> int:
    return sum(a.balance for a in state.accounts.values())


def get_total_stake(state: LedgerState) -> int:
    return sum(a.bonded + a.unbonding_total() for a in state.accounts.values())


def get_total_escrow(state: LedgerState) -> int:
    return sum(e.available + e.reserved for e in state.escrows.values())


def is_conserved(state: LedgerState) -> bool:
    """balances + stakes + escrow + burned == supply (the sum of genesis allocations)."""
    held = get_total_balances(state) + get_total_stake(state) + get_total_escrow(state)
    return held + state.burned == state.supply


def is_non_negative(state: LedgerState) -> bool:
    accounts_ok = all(
        a.balance >= 0 and a.bonded >= 0 and a.slashed >= 0 and all(u > 0 for u, _ in a.unbonding)
        for a in state.accounts.values()
    )
    escrows_ok = all(
        min(e.available, e.reserved, e.paid, e.refunded) >= 0 for e in state.escrows.values()
    )
    return accounts_ok and escrows_ok and state.burned >= 0 and state.supply >= 0


def is_escrow_sound(state: LedgerState) -> bool:
    """No escrow pays or refunds more than it holds: its four parts add up to what was locked."""
    return all(
        e.available + e.reserved + e.paid + e.refunded == e.locked for e in state.escrows.values()
    )


def is_award_consistent(state: LedgerState) -> bool:
    """Each escrow's reservation is exactly the prices of its live (unpaid, unrevoked) awards,
    and what it paid is exactly the prices of its paid awards."""
    reserved: dict[tuple[bytes, bytes], int] = {}
    paid: dict[tuple[bytes, bytes], int] = {}
    for award in state.awards.values():
        key = (award.requester, award.job_id)
        if award.paid:
            paid[key] = paid.get(key, 0) + award.price
        elif not award.revoked:
            reserved[key] = reserved.get(key, 0) + award.price
    return all(
        e.reserved == reserved.get(k, 0) and e.paid == paid.get(k, 0)
        for k, e in state.escrows.items()
    )


def compute_state_array(state: LedgerState) -> list[object]:
    """The canonical plain-value form of the state (what `hash_state` hashes)."""
    accounts = [
        [k, a.balance, a.bonded, [list(u) for u in a.unbonding], a.slashed]
        for k, a in sorted(state.accounts.items())
        if a.balance or a.bonded or a.unbonding or a.slashed
    ]
    escrows = [
        [k[0], k[1], e.bundle_id, e.locked, e.available, e.reserved, e.paid, e.refunded]
        for k, e in sorted(state.escrows.items())
    ]
    awards = [
        [
            k,
            a.requester,
            a.job_id,
            a.slice_index,
            a.round,
            a.prover,
            a.price,
            a.input_commitment,
            a.paid,
            a.revoked,
        ]
        for k, a in sorted(state.awards.items())
    ]
    offences = [
        [k, o.offender, o.reporter, o.penalty, o.reward] for k, o in sorted(state.offences.items())
    ]
    # `slots` is derived from `awards` (the unrevoked award of each slice), so it adds nothing.
    return [accounts, escrows, awards, offences, state.supply, state.burned]


def hash_state(state: LedgerState) -> bytes:
    packed: bytes = msgpack.packb(compute_state_array(state), use_bin_type=True)
    return hashlib.sha256(DOMAIN_STATE + packed).digest()


def state_from_array(array: list[object]) -> LedgerState:
    """Inverse of `compute_state_array` (test vectors, tools). Trusts its input's types."""
    from ledger.containers import AccountState, AwardState, EscrowState, OffenceState

    accounts_a, escrows_a, awards_a, offences_a, supply, burned = array
    state = LedgerState(supply=supply, burned=burned)  # type: ignore[arg-type]
    for k, balance, bonded, unbonding, slashed in accounts_a:  # type: ignore[attr-defined]
        state.accounts[k] = AccountState(balance, bonded, [(a, m) for a, m in unbonding], slashed)
    for requester, job, *fields in escrows_a:  # type: ignore[attr-defined]
        state.escrows[(requester, job)] = EscrowState(*fields)
    for k, *fields in awards_a:  # type: ignore[attr-defined]
        award = state.awards[k] = AwardState(*fields)
        slot = (award.requester, award.job_id, award.slice_index)
        current = state.slots.get(slot)
        if current is None or state.awards[current].round < award.round:
            state.slots[slot] = k
    for k, offender, reporter, penalty, reward in offences_a:  # type: ignore[attr-defined]
        state.offences[k] = OffenceState(offender, reporter, penalty, reward)
    return state
