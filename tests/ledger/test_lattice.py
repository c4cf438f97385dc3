"""Chain structure, the pending pool, fork choice and the canonical order (ledger.lattice)."""

from __future__ import annotations

import pytest

from ledger.builders import build_entry, sign_statement
from ledger.containers import (
    Bond,
    Claim,
    GenesisAllocation,
    InvalidProofEvidence,
    Slash,
    Transfer,
    Unbond,
    Withdraw,
)
from ledger.errors import InvalidTransition, Reason
from ledger.lattice import AddStatus, EntryStatus, Lattice
from tests.ledger.helpers import World, award_record, identity, make_env
from tests.ledger.market import awarded, market


def replay(env_world: World, entries: list, **kw: int) -> Lattice:  # type: ignore[type-arg]
    lattice = Lattice(env_world.env, **kw)
    for e in entries:
        lattice.add(e)
    return lattice


def test_out_of_order_entries_wait_then_apply() -> None:
    w = World(make_env())
    entries = [
        w.make("genesis", GenesisAllocation(w.key("a"), 100)),
        w.make("a", Transfer(w.key("b"), 10)),
        w.make("a", Bond(50)),
        w.make("b", Transfer(w.key("a"), 5)),
    ]
    lattice = Lattice(w.env)
    assert lattice.add(entries[2]).status is AddStatus.PENDING
    assert lattice.add(entries[1]).status is AddStatus.ADDED  # seq 0 of a: no prev needed
    assert lattice.get_status(entries[2].hash)[0] is EntryStatus.SKIPPED  # placed, no funds yet
    assert lattice.add(entries[3]).status is AddStatus.ADDED
    # b's transfer and a's are applied before genesis arrives, so they are skipped for now ...
    assert lattice.get_status(entries[1].hash) == (EntryStatus.SKIPPED, Reason.INSUFFICIENT_BALANCE)
    assert lattice.add(entries[0]).status is AddStatus.ADDED
    # ... and the late genesis entry (lowest height) re-orders everything after it.
    assert lattice.get_status(entries[1].hash) == (EntryStatus.APPLIED, None)
    assert lattice.compute_root() == replay(w, entries).compute_root()
    assert lattice.state.accounts[w.key("a")].balance == 100 - 10 - 50 + 5


def test_pending_entry_placed_when_its_prev_arrives() -> None:
    w = World(make_env())
    g = w.make("genesis", GenesisAllocation(w.key("a"), 100))
    a0 = w.make("a", Transfer(w.key("b"), 1))
    a1 = w.make("a", Transfer(w.key("b"), 1))
    lattice = Lattice(w.env)
    assert lattice.add(a1).status is AddStatus.PENDING
    assert lattice.get_status(a1.hash)[0] is EntryStatus.PENDING
    lattice.add(g)
    result = lattice.add(a0)
    assert result.placed == (a0.hash, a1.hash)
    assert lattice.state.accounts[w.key("b")].balance == 2


def test_duplicates_are_ignored() -> None:
    w = World(make_env())
    g = w.make("genesis", GenesisAllocation(w.key("a"), 100))
    lattice = Lattice(w.env)
    lattice.add(g)
    root = lattice.compute_root()
    assert lattice.add(g).status is AddStatus.DUPLICATE
    assert lattice.compute_root() == root


def test_fork_lowest_hash_wins_in_any_order() -> None:
    w = World(make_env())
    g = w.make("genesis", GenesisAllocation(w.key("a"), 100))
    signer = identity("a")
    x = build_entry(signer, 0, bytes(32), g.header.height + 1, Transfer(w.key("b"), 60))
    y = build_entry(signer, 0, bytes(32), g.header.height + 1, Transfer(w.key("c"), 60))
    x_child = build_entry(signer, 1, x.hash, g.header.height + 2, Transfer(w.key("b"), 1))
    winner, loser = sorted([x, y], key=lambda e: e.hash)
    roots = set()
    for order in ([g, x, y, x_child], [x_child, y, x, g], [g, y, x_child, x]):
        lattice = replay(w, order)
        roots.add(lattice.compute_root())
        assert lattice.get_status(winner.hash)[0] is EntryStatus.APPLIED
        assert lattice.get_status(loser.hash)[0] is EntryStatus.SIDE_BRANCH
        [evidence] = lattice.compute_fork_evidence()
        assert {evidence.first.body_hash, evidence.second.body_hash} == {
            x.header.body_hash,
            y.header.body_hash,
        }
    assert len(roots) == 1


def test_invalid_prev_of_another_account() -> None:
    w = World(make_env())
    g = w.make("genesis", GenesisAllocation(w.key("a"), 100))
    bad = build_entry(identity("a"), 1, g.hash, 99, Transfer(w.key("b"), 1))
    lattice = replay(w, [g])
    with pytest.raises(InvalidTransition) as info:
        lattice.add(bad)
    assert info.value.reason is Reason.BAD_PREV


def test_invalid_seq_gap() -> None:
    w = World(make_env())
    a0 = w.make("a", Transfer(w.key("b"), 1))
    bad = build_entry(identity("a"), 2, a0.hash, 99, Transfer(w.key("b"), 1))
    lattice = replay(w, [a0])
    with pytest.raises(InvalidTransition) as info:
        lattice.add(bad)
    assert info.value.reason is Reason.BAD_PREV


def test_invalid_first_entry_with_prev() -> None:
    w = World(make_env())
    bad = build_entry(identity("a"), 0, b"\x01" * 32, 1, Transfer(w.key("b"), 1))
    with pytest.raises(InvalidTransition) as info:
        Lattice(w.env).add(bad)
    assert info.value.reason is Reason.BAD_PREV


def test_invalid_height_not_increasing_is_rejected_when_placed() -> None:
    w = World(make_env())
    a0 = w.make("a", Transfer(w.key("b"), 1))
    bad = build_entry(identity("a"), 1, a0.hash, a0.header.height, Transfer(w.key("b"), 1))
    child = build_entry(identity("a"), 2, bad.hash, 99, Transfer(w.key("b"), 1))
    lattice = Lattice(w.env)
    assert lattice.add(child).status is AddStatus.PENDING
    assert lattice.add(bad).status is AddStatus.PENDING
    result = lattice.add(a0)
    assert result.rejected == (
        (bad.hash, Reason.HEIGHT_NOT_INCREASING),
        (child.hash, Reason.BAD_PREV),  # waited on a refused entry
    )
    assert lattice.get_status(bad.hash)[0] is EntryStatus.UNKNOWN
    assert lattice.statistics().pending == 0


def test_invalid_claim_of_a_non_award() -> None:
    w = market()
    award = awarded(w)
    statement, proof = w.statement("prover", award)
    not_award = w.lattice.get_chain(w.key("requester"))[0]
    forged_statement = sign_statement(
        identity("prover"),
        type(statement.statement)(not_award.hash, *list(_fields(statement.statement))[1:]),
        proof,
    )
    from tests.ledger.helpers import fake_proof

    entry = w.make("prover", Claim(forged_statement, fake_proof(forged_statement.statement)))
    with pytest.raises(InvalidTransition) as info:
        w.lattice.add(entry)
    assert info.value.reason is Reason.REFERENCE_NOT_AN_AWARD


def _fields(obj: object) -> list[object]:
    return [getattr(obj, f) for f in obj.__slots__]  # type: ignore[attr-defined]


def test_invalid_claim_not_above_its_award() -> None:
    w = market()
    award = awarded(w)
    statement, proof = w.statement("prover", award)
    writer = w.writer("prover")
    entry = build_entry(
        identity("prover"), writer.seq, writer.head, award.header.height, Claim(statement, proof)
    )
    assert entry.header.height > writer.height
    with pytest.raises(InvalidTransition) as info:
        w.lattice.add(entry)
    assert info.value.reason is Reason.HEIGHT_NOT_ABOVE_REFERENCE


def test_pending_pool_is_bounded() -> None:
    w = World(make_env(pending_max=2))
    a = [w.make("a", Transfer(w.key("b"), 1)) for _ in range(4)]
    lattice = Lattice(w.env)
    lattice.add(a[1])
    lattice.add(a[2])
    with pytest.raises(InvalidTransition) as info:
        lattice.add(a[3])
    assert info.value.reason is Reason.PENDING_POOL_FULL
    assert lattice.statistics().pending == 2


def test_cheater_who_unbonds_and_withdraws_is_still_slashed() -> None:
    """Evidence is ordered at the offence (the award's height), not where the report lands."""
    w = market()
    award = awarded(w)
    good, _ = w.statement("prover", award)
    bad = sign_statement(identity("prover"), good.statement, b"bogus")
    w.do("prover", Unbond(500))
    writer = w.writer("prover")
    writer.observe_height(writer.height + w.env.config.unbond_delay_heights)
    w.do("prover", Withdraw())
    assert w.state.accounts[w.key("prover")].balance == 1000  # it got away ... for now
    for _ in range(5):
        w.do("reporter", Transfer(w.key("other"), 1))
    w.do("reporter", Slash(InvalidProofEvidence(award_record(award), bad, b"bogus")))
    prover = w.state.accounts[w.key("prover")]
    assert prover.slashed == 250
    assert prover.balance + prover.bonded + sum(a for a, _ in prover.unbonding) == 1000 - 250
    unbond = w.lattice.get_chain(w.key("prover"))[1]
    assert w.lattice.get_status(unbond.hash) == (EntryStatus.SKIPPED, Reason.INSUFFICIENT_BOND)


def test_snapshots_give_the_same_state_as_a_full_replay() -> None:
    w = World(make_env(signatures=False))
    names = [f"n{i}" for i in range(6)]
    for n in names:
        w.do("genesis", GenesisAllocation(w.key(n), 1000))
    late = []
    for i in range(60):
        sender, recipient = names[i % 6], names[(i + 1) % 6]
        entry = w.make(sender, Transfer(w.key(recipient), 7), observe=i % 7 != 0)
        (late if i % 7 == 0 else []).append(entry)
        if i % 7 != 0:
            w.lattice.add(entry)
    small = replay(w, [e for e in w.log if e not in late], snapshot_every=3)
    for entry in late:
        w.lattice.add(entry)
        small.add(entry)
    fresh = replay(w, sorted(w.log, key=lambda e: e.hash))
    assert small.compute_root() == fresh.compute_root() == w.lattice.compute_root()


class _UndecidedVerifier:
    """A verifier without the bundle: it cannot say valid or invalid."""

    def verify(self, statement: object, proof: bytes) -> bool | None:
        return None


def test_undecidable_proofs_are_neither_accepted_nor_held_against_the_prover() -> None:
    import dataclasses

    w = market()
    award = awarded(w)
    good, proof = w.statement("prover", award)
    bad = sign_statement(identity("prover"), good.statement, b"bogus")
    env = dataclasses.replace(w.env, verifier=_UndecidedVerifier())
    lattice = Lattice(env)
    lattice.add_many(w.log)
    root = lattice.compute_root()
    claim = w.make("prover", Claim(good, proof))
    report = w.make("reporter", Slash(InvalidProofEvidence(award_record(award), bad, b"bogus")))
    for entry in (claim, report):
        with pytest.raises(InvalidTransition) as info:
            lattice.add(entry)
        assert info.value.reason is Reason.PROOF_UNDECIDED
    assert lattice.compute_root() == root
    # Once the verifier can decide, the same entries are judged on their merits.
    w.lattice.add(claim)
    w.lattice.add(report)
    assert w.state.offences and w.state.awards[award.hash].paid


def test_writer_refuses_to_overflow_heights() -> None:
    from ledger.builders import ChainWriter
    from ledger.constants import HEIGHT_MAX
    from ledger.errors import LedgerError

    writer = ChainWriter(identity("a"))
    writer.observe_height(HEIGHT_MAX)
    with pytest.raises(LedgerError, match="exceeds"):
        writer.append(Transfer(identity("b").public_key, 1))
