"""State transition: one `process_*` step per operation, applied to the state in place.

Each step first checks every rule (one commented `require` per rule) and only then mutates, so an
invalid entry raises `InvalidTransition` and changes nothing. The checks here are the ones that
depend on the state; the entry-only checks (signatures, proofs, evidence) are in `verify.py` and
chain structure is in `lattice.py`. `state_transition` is the spec-style pure wrapper.
"""

from __future__ import annotations

from ledger.constants import UNBONDINGS_MAX
from ledger.containers import (
    AccountState,
    Award,
    AwardState,
    Bond,
    Claim,
    Entry,
    Escrow,
    EscrowState,
    GenesisAllocation,
    GenesisBond,
    LedgerState,
    OffenceState,
    Refund,
    Slash,
    Transfer,
    Unbond,
    Withdraw,
)
from ledger.env import LedgerEnv
from ledger.errors import Reason, require
from ledger.verify import compute_offence, verify_entry

_EMPTY = AccountState()


def get_account(state: LedgerState, account: bytes) -> AccountState:
    """Read-only view (an empty account if unknown); never creates one."""
    return state.accounts.get(account, _EMPTY)


def get_account_for_update(state: LedgerState, account: bytes) -> AccountState:
    acct = state.accounts.get(account)
    if acct is None:
        acct = state.accounts[account] = AccountState()
    return acct


def increase_balance(state: LedgerState, account: bytes, amount: int) -> None:
    if amount:
        get_account_for_update(state, account).balance += amount


def process_genesis(
    state: LedgerState, entry: Entry, op: GenesisAllocation, env: LedgerEnv
) -> None:
    # Allocations never exceed the network's supply cap.
    require(state.supply + op.amount <= env.config.supply_max, Reason.SUPPLY_CAP_EXCEEDED)
    state.supply += op.amount
    increase_balance(state, op.recipient, op.amount)


def process_genesis_bond(state: LedgerState, entry: Entry, op: GenesisBond, env: LedgerEnv) -> None:
    # Genesis bonds count against the same supply cap as allocations.
    require(state.supply + op.amount <= env.config.supply_max, Reason.SUPPLY_CAP_EXCEEDED)
    state.supply += op.amount
    get_account_for_update(state, op.recipient).bonded += op.amount


def process_transfer(state: LedgerState, entry: Entry, op: Transfer) -> None:
    sender = get_account(state, entry.header.account)
    # The sender holds the amount.
    require(sender.balance >= op.amount, Reason.INSUFFICIENT_BALANCE)
    sender.balance -= op.amount
    increase_balance(state, op.recipient, op.amount)


def process_bond(state: LedgerState, entry: Entry, op: Bond) -> None:
    acct = get_account(state, entry.header.account)
    # Stake comes from the balance.
    require(acct.balance >= op.amount, Reason.INSUFFICIENT_BALANCE)
    acct.balance -= op.amount
    acct.bonded += op.amount


def process_unbond(state: LedgerState, entry: Entry, op: Unbond, env: LedgerEnv) -> None:
    acct = get_account(state, entry.header.account)
    # Only bonded stake can unbond.
    require(acct.bonded >= op.amount, Reason.INSUFFICIENT_BOND)
    # Unbondings are bounded so slashing and withdrawing stay cheap.
    require(len(acct.unbonding) < UNBONDINGS_MAX, Reason.TOO_MANY_UNBONDINGS)
    acct.bonded -= op.amount
    acct.unbonding.append((op.amount, entry.header.height + env.config.unbond_delay_heights))


def process_withdraw(state: LedgerState, entry: Entry, op: Withdraw) -> None:
    acct = get_account(state, entry.header.account)
    height = entry.header.height
    matured = sum(amount for amount, mature in acct.unbonding if mature <= height)
    # Something has finished its unbonding delay at this entry's height.
    require(matured > 0, Reason.NOTHING_MATURE)
    acct.unbonding = [(amount, mature) for amount, mature in acct.unbonding if mature > height]
    acct.balance += matured


def process_escrow(state: LedgerState, entry: Entry, op: Escrow) -> None:
    requester = entry.header.account
    acct = get_account(state, requester)
    # One escrow per job id and requester.
    require((requester, op.job_id) not in state.escrows, Reason.JOB_EXISTS)
    # The fee comes from the balance.
    require(acct.balance >= op.amount, Reason.INSUFFICIENT_BALANCE)
    acct.balance -= op.amount
    state.escrows[(requester, op.job_id)] = EscrowState(
        op.bundle_id, locked=op.amount, available=op.amount
    )


def process_award(state: LedgerState, entry: Entry, op: Award, env: LedgerEnv) -> None:
    requester = entry.header.account
    escrow = state.escrows.get((requester, op.job_id))
    # Awards draw on an escrow of the requester's job.
    require(escrow is not None, Reason.JOB_UNKNOWN)
    assert escrow is not None
    slot = (requester, op.job_id, op.slice_index)
    current_ref = state.slots.get(slot)
    current = state.awards[current_ref] if current_ref is not None else None
    # A slice is paid at most once: a paid slice is never re-awarded.
    require(current is None or not current.paid, Reason.SLICE_ALREADY_PAID)
    # Rounds go 0, 1, 2, ...: round r+1 replaces an unpaid round r (a re-award).
    require(op.round == (0 if current is None else current.round + 1), Reason.ROUND_NOT_NEXT)
    # Only a prover with stake at risk can be awarded.
    require(
        get_account(state, op.prover).bonded >= env.config.award_bond_min,
        Reason.PROVER_NOT_BONDED,
    )
    freed = current.price if current is not None else 0
    # The escrow covers the price (counting what the replaced award releases).
    require(escrow.available + freed >= op.price, Reason.ESCROW_INSUFFICIENT)
    if current is not None:
        current.revoked = True
        escrow.reserved -= freed
        escrow.available += freed
    escrow.available -= op.price
    escrow.reserved += op.price
    state.awards[entry.hash] = AwardState(
        requester, op.job_id, op.slice_index, op.round, op.prover, op.price, op.input_commitment
    )
    state.slots[slot] = entry.hash


def process_claim(state: LedgerState, entry: Entry, op: Claim) -> None:
    statement = op.statement.statement
    award = state.awards.get(statement.award_ref)
    # The award exists where the claim sits in the canonical order.
    require(award is not None, Reason.AWARD_UNKNOWN)
    assert award is not None
    # Only the named prover is paid ...
    require(award.prover == entry.header.account, Reason.AWARD_NOT_FOR_ACCOUNT)
    # ... for an award that was not replaced by a re-award ...
    require(not award.revoked, Reason.AWARD_REVOKED)
    # ... and at most once.
    require(not award.paid, Reason.AWARD_ALREADY_PAID)
    escrow = state.escrows[(award.requester, award.job_id)]
    # The proof is of the task the requester awarded.
    require(
        statement.slice_index == award.slice_index
        and statement.input_commitment == award.input_commitment
        and statement.bundle_id == escrow.bundle_id,
        Reason.STATEMENT_MISMATCH,
    )
    award.paid = True
    escrow.reserved -= award.price
    escrow.paid += award.price
    increase_balance(state, entry.header.account, award.price)


def process_refund(state: LedgerState, entry: Entry, op: Refund) -> None:
    escrow = state.escrows.get((entry.header.account, op.job_id))
    # The requester refunds only its own job's escrow ...
    require(escrow is not None, Reason.JOB_UNKNOWN)
    assert escrow is not None
    # ... and only what no award has reserved.
    require(escrow.available > 0, Reason.NOTHING_TO_REFUND)
    amount, escrow.available = escrow.available, 0
    escrow.refunded += amount
    increase_balance(state, entry.header.account, amount)


def compute_slash_amounts(stake: int, env: LedgerEnv) -> tuple[int, int]:
    """(penalty, reporter reward) for an offender with `stake` at risk; integer arithmetic."""
    cfg = env.config
    penalty = stake * cfg.slash_numerator // cfg.slash_denominator
    return penalty, penalty * cfg.reporter_numerator // cfg.reporter_denominator


def slash_stake(acct: AccountState, penalty: int) -> None:
    """Take `penalty` from bonded stake first, then from unbondings oldest first."""
    take = min(acct.bonded, penalty)
    acct.bonded -= take
    rest = penalty - take
    unbonding = []
    for amount, mature in acct.unbonding:
        cut = min(amount, rest)
        rest -= cut
        if amount - cut:
            unbonding.append((amount - cut, mature))
    acct.unbonding = unbonding
    acct.slashed += penalty


def process_slash(state: LedgerState, entry: Entry, op: Slash, env: LedgerEnv) -> None:
    offence = compute_offence(op.evidence)
    # An offence is punished once, whoever reports it and however often.
    require(offence.offence_id not in state.offences, Reason.ALREADY_SLASHED)
    offender = state.accounts.get(offence.offender)
    stake = offender.bonded + offender.unbonding_total() if offender is not None else 0
    penalty, reward = compute_slash_amounts(stake, env)
    if offender is not None and penalty:
        slash_stake(offender, penalty)
    reporter = entry.header.account
    increase_balance(state, reporter, reward)
    state.burned += penalty - reward
    state.offences[offence.offence_id] = OffenceState(offence.offender, reporter, penalty, reward)


def process_entry(state: LedgerState, entry: Entry, env: LedgerEnv) -> None:
    """Apply one entry whose entry-only checks passed; raises (changing nothing) if invalid."""
    op = entry.op
    if isinstance(op, Transfer):
        process_transfer(state, entry, op)
    elif isinstance(op, Claim):
        process_claim(state, entry, op)
    elif isinstance(op, Award):
        process_award(state, entry, op, env)
    elif isinstance(op, Escrow):
        process_escrow(state, entry, op)
    elif isinstance(op, Bond):
        process_bond(state, entry, op)
    elif isinstance(op, Unbond):
        process_unbond(state, entry, op, env)
    elif isinstance(op, Withdraw):
        process_withdraw(state, entry, op)
    elif isinstance(op, Refund):
        process_refund(state, entry, op)
    elif isinstance(op, Slash):
        process_slash(state, entry, op, env)
    elif isinstance(op, GenesisBond):
        process_genesis_bond(state, entry, op, env)
    else:
        process_genesis(state, entry, op, env)


def copy_state(state: LedgerState) -> LedgerState:
    return LedgerState(
        accounts={
            k: AccountState(a.balance, a.bonded, list(a.unbonding), a.slashed)
            for k, a in state.accounts.items()
        },
        escrows={
            k: EscrowState(e.bundle_id, e.locked, e.available, e.reserved, e.paid, e.refunded)
            for k, e in state.escrows.items()
        },
        awards={
            k: AwardState(
                a.requester,
                a.job_id,
                a.slice_index,
                a.round,
                a.prover,
                a.price,
                a.input_commitment,
                a.paid,
                a.revoked,
            )
            for k, a in state.awards.items()
        },
        slots=dict(state.slots),
        offences={
            k: OffenceState(o.offender, o.reporter, o.penalty, o.reward)
            for k, o in state.offences.items()
        },
        supply=state.supply,
        burned=state.burned,
    )


def state_transition(state: LedgerState, entry: Entry, env: LedgerEnv) -> LedgerState:
    """The spec's pure transition: a new state, or `InvalidTransition` and no change at all.
    (Chain order, prev links and heights are the lattice's job: see `ledger.lattice`.)"""
    verify_entry(entry, env)
    post = copy_state(state)
    process_entry(post, entry, env)
    return post
