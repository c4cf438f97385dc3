"""Hypothesis properties of the replicated ledger over random honest + byzantine histories."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.accessors import (
    hash_state,
    is_award_consistent,
    is_conserved,
    is_escrow_sound,
    is_non_negative,
)
from ledger.containers import Claim, Slash
from ledger.encoding import decode_entry, encode_entry
from ledger.errors import InvalidTransition, Reason
from ledger.lattice import EntryStatus, Lattice
from ledger.verify import compute_offence
from tests.ledger.helpers import make_env
from tests.ledger.histories import BYZANTINE, HONEST, build_history

FAST_ENV = make_env(signatures=False)
SIGNED_ENV = make_env(signatures=True)
seeds = st.integers(min_value=0, max_value=2**32)
steps = st.integers(min_value=5, max_value=250)


def build(env: object, entries: list, snapshot_every: int = 4096) -> Lattice:  # type: ignore[type-arg]
    lattice = Lattice(env, snapshot_every=snapshot_every)  # type: ignore[arg-type]
    for entry in entries:
        lattice.add(entry)
    return lattice


@settings(max_examples=300, deadline=None)
@given(
    seed=seeds,
    n=steps,
    order_seed=st.integers(0, 2**32),
    snapshot_every=st.sampled_from((2, 5, 4096)),
)
def test_root_is_a_function_of_the_set(
    seed: int, n: int, order_seed: int, snapshot_every: int
) -> None:
    hist = build_history(FAST_ENV, seed, n)
    rng = random.Random(order_seed)
    shuffled = hist.entries + rng.sample(hist.entries, k=len(hist.entries) // 3)  # duplicates
    rng.shuffle(shuffled)
    in_order = build(FAST_ENV, hist.entries)
    permuted = build(FAST_ENV, shuffled, snapshot_every)
    assert permuted.compute_root() == in_order.compute_root()
    assert permuted.statistics() == in_order.statistics()
    assert permuted.statistics().pending == 0


@settings(max_examples=150, deadline=None)
@given(seed=seeds, n=steps)
def test_invariants_hold_after_every_entry(seed: int, n: int) -> None:
    hist = build_history(FAST_ENV, seed, n)
    lattice = Lattice(FAST_ENV)
    for entry in random.Random(seed).sample(hist.entries, k=len(hist.entries)):
        lattice.add(entry)
        state = lattice.state
        assert is_conserved(state), "balances + stakes + escrow + burned == supply"
        assert is_non_negative(state)
        assert is_escrow_sound(state), "an escrow never pays more than it holds"
        assert is_award_consistent(state)
    # An award is paid at most once: exactly one applied claim per paid award, none otherwise.
    claims: dict[bytes, int] = {}
    for entry in hist.entries:
        if isinstance(entry.op, Claim) and lattice.get_status(entry.hash)[0] is EntryStatus.APPLIED:
            ref = entry.op.statement.statement.award_ref
            claims[ref] = claims.get(ref, 0) + 1
    paid = {ref for ref, award in lattice.state.awards.items() if award.paid}
    assert set(claims) == paid and all(count == 1 for count in claims.values())


@settings(max_examples=150, deadline=None)
@given(seed=seeds, n=steps)
def test_honest_never_slashed_and_each_offence_applied_once(seed: int, n: int) -> None:
    hist = build_history(FAST_ENV, seed, n)
    lattice = build(FAST_ENV, random.Random(seed).sample(hist.entries, k=len(hist.entries)))
    state = lattice.state
    w = hist.world
    honest_keys = {w.key(h) for h in HONEST}
    for key in honest_keys:
        assert state.accounts.get(key) is None or state.accounts[key].slashed == 0
    assert all(o.offender not in honest_keys for o in state.offences.values())
    # Every reported offence is punished exactly once, however many reports.
    applied: dict[bytes, int] = {}
    for entry in hist.entries:
        if isinstance(entry.op, Slash):
            status, reason = lattice.get_status(entry.hash)
            offence_id = compute_offence(entry.op.evidence).offence_id
            if status is EntryStatus.APPLIED:
                applied[offence_id] = applied.get(offence_id, 0) + 1
            elif status is EntryStatus.SKIPPED:
                assert reason is Reason.ALREADY_SLASHED
    assert set(applied) == set(hist.offences) == set(state.offences)
    assert all(count == 1 for count in applied.values())
    for name in BYZANTINE:
        acct = state.accounts.get(w.key(name))
        penalties = sum(o.penalty for o in state.offences.values() if o.offender == w.key(name))
        assert (acct.slashed if acct else 0) == penalties


@settings(max_examples=40, deadline=None)
@given(seed=seeds, n=st.integers(5, 40), data=st.data())
def test_every_tampered_entry_is_rejected_with_a_reason(
    seed: int, n: int, data: st.DataObject
) -> None:
    """Signatures on: any one-byte change to an entry is refused and changes nothing."""
    hist = build_history(SIGNED_ENV, seed, n)
    lattice = build(SIGNED_ENV, hist.entries)
    root = lattice.compute_root()
    for _ in range(10):
        entry = data.draw(st.sampled_from(hist.entries))
        raw = bytearray(encode_entry(entry))
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
        try:
            tampered = decode_entry(bytes(raw), SIGNED_ENV.config.proof_bytes_max)
            lattice.add(tampered)
        except InvalidTransition as exc:
            assert isinstance(exc.reason, Reason)
        else:
            raise AssertionError(f"tampered entry accepted (byte {i})")
        assert lattice.compute_root() == root
    assert hash_state(lattice.state) == hash_state(build(SIGNED_ENV, hist.entries).state)


@settings(max_examples=60, deadline=None)
@given(seed=seeds, n=steps)
def test_doctored_evidence_against_honest_provers_is_refused(seed: int, n: int) -> None:
    hist = build_history(FAST_ENV, seed, n)
    env = SIGNED_ENV  # forged signatures are only caught with signatures on
    lattice = build(env, hist.entries)
    root = lattice.compute_root()
    for entry, reason in hist.framing:
        try:
            lattice.add(entry)
        except InvalidTransition as exc:
            assert exc.reason is reason
        else:
            raise AssertionError(f"doctored evidence accepted; expected {reason}")
    assert lattice.compute_root() == root


def test_histories_exercise_every_kind_of_evidence_and_framing() -> None:
    """The generator is not vacuous: across fixed seeds every offence kind is punished once
    and every framing attempt kind occurs."""
    punished: set[str] = set()
    framed: set[Reason] = set()
    for seed in range(12):
        hist = build_history(FAST_ENV, seed, 200)
        lattice = build(FAST_ENV, hist.entries)
        for entry in hist.entries:
            applied = lattice.get_status(entry.hash)[0] is EntryStatus.APPLIED
            if isinstance(entry.op, Slash) and applied:
                punished.add(type(entry.op.evidence).__name__)
        framed |= {reason for _, reason in hist.framing}
    assert punished == {
        "ForkEvidence",
        "EquivocationEvidence",
        "InvalidProofEvidence",
        "LinkageEvidence",
    }
    assert framed == {
        Reason.EVIDENCE_BAD_SIGNATURE,
        Reason.PROOF_HASH_MISMATCH,
        Reason.EVIDENCE_COMMITMENT_MATCHES,
    }
