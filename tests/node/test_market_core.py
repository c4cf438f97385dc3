"""The market's protocol core (`node.market.core.MarketCore`) driven directly: requester and
prover cores, a fake ledger view and seeded randomness, effects routed between them by hand.

`Sim` is the tiny deterministic world: a FIFO of events, a heap of timers (time jumps to the
next one), a fake ledger (entry hashes are counters; award entries are seen by every core), a
fake prover (signed statements over fake proof bytes: this tests protocol logic only, never
proofs) and a requester-side proof checker whose verdict each test chooses. Hooks hold back
effects (a slow prover) or pick verdicts; everything a core emits is logged with its time.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.builders import sign_statement
from ledger.containers import Award, Claim, Escrow, ProofStatement, Refund
from node.identity import NodeIdentity
from node.market.core import (
    ANNOUNCE_ROUNDS_MAX,
    AWARD_GRACE_MS,
    MarketCore,
    ProverProfile,
)
from node.market.events import (
    AwardSeen,
    BidAnswered,
    BidIn,
    CancelProve,
    ChainChecked,
    CheckChain,
    Checked,
    CheckProof,
    Effect,
    Event,
    FetchProof,
    FileEvidence,
    FinishJob,
    JobSeen,
    LedgerDone,
    LedgerSubmit,
    Prepare,
    Prepared,
    ProofFetched,
    Prove,
    Proven,
    Publish,
    Respond,
    SendBid,
    SetTimer,
    StatementIn,
    Submit,
    Timer,
)
from node.market.select import choose_awards
from node.topics import TOPIC_JOBS, TOPIC_PROOFS
from node.wire.market_messages import Bid, BidReply, JobAnnounce, ProofStatementMsg, SliceTask

EZKL = "22.0.1"
BOND_MIN = 100
DEADLINE_MIN_MS = ProverProfile.__dataclass_fields__["deadline_min_ms"].default
WINDOW_MS = 5_000
DEADLINE_MS = 600_000


def h(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def ident(name: str) -> NodeIdentity:
    return NodeIdentity.from_seed(h("market-core", name))


R, A, B, C = (ident(n) for n in "RABC")


class FakeLedger:
    """The two things the core reads from the ledger."""

    def __init__(self, bonded: dict[bytes, int], bond_min: int = BOND_MIN) -> None:
        self.bonded = bonded
        self._bond_min = bond_min

    def get_bonded(self, account: bytes) -> int:
        return self.bonded.get(account, 0)

    @property
    def bond_min(self) -> int:
        return self._bond_min


def profile(slots: int = 1, price: int = 10, **kw: Any) -> ProverProfile:
    base: dict[str, Any] = dict(max_logrows=17, memory_mb=4096, software_version="0.1.0",
                                ezkl_version=EZKL)  # fmt: skip
    return ProverProfile(slots=slots, price=price, **(base | kw))


def task(index: int, logrows: int = 10, memory_mb: int = 100, max_price: int = 50) -> SliceTask:
    return SliceTask(index, h("ic", index), h("ih", index), logrows, memory_mb, max_price)


def bonded_all(*ids: NodeIdentity) -> FakeLedger:
    return FakeLedger({i.public_key: 1_000 for i in ids})


def statement_for(award: AwardSeen, bundle_id: bytes, tag: str = "") -> ProofStatement:
    c = award.input_commitment
    return ProofStatement(award.award_ref, bundle_id, award.slice_index, c, h("out", c, tag),
                          h("inst", c, tag))  # fmt: skip


def statement_msg(signed: Any, proof: bytes, claim: bytes = bytes(32)) -> ProofStatementMsg:
    s = signed.statement
    return ProofStatementMsg(s.award_ref, s.bundle_id, s.slice_index, s.input_commitment,
                             s.output_commitment, s.instances_hash, signed.proof_hash,
                             signed.signature, len(proof), claim,
                             hashlib.sha256(proof).digest())  # fmt: skip


@dataclass
class Sim:
    """Cores by peer id, and the world around them (see the module docstring)."""

    ids: list[NodeIdentity]
    profiles: list[ProverProfile]
    ledger: FakeLedger
    seed: int = 7
    now: int = 0
    hold: Callable[[str, Effect], bool] = lambda peer, effect: False
    verdict: Callable[[str, CheckProof], str] = lambda peer, effect: "ok"
    chain_ok: bool = True
    cores: dict[str, MarketCore] = field(default_factory=dict)
    log: list[tuple[int, str, Effect]] = field(default_factory=list)
    held: list[tuple[str, Effect]] = field(default_factory=list)
    awards: dict[bytes, AwardSeen] = field(default_factory=dict)
    proofs: dict[bytes, bytes] = field(default_factory=dict)  # sha256 -> proof bytes
    _queue: deque[tuple[str, Event, str]] = field(default_factory=deque)
    _timers: list[tuple[int, int, str, tuple[Any, ...]]] = field(default_factory=list)
    _seq: int = 0

    def __post_init__(self) -> None:
        for n, (i, p) in enumerate(zip(self.ids, self.profiles, strict=True)):
            rng = random.Random(self.seed * 1000 + n)
            self.cores[i.peer_id] = MarketCore(i.public_key, i.peer_id, p, self.ledger, rng)
            self.cores[i.peer_id].addrs = (f"/memory/{n}/p2p/{i.peer_id}",)
        self.by_key = {i.public_key: i for i in self.ids}
        self.by_peer = {i.peer_id: i for i in self.ids}

    # -- driving ---------------------------------------------------------------------------

    def send(self, peer: str, event: Event, reply_to: str = "") -> None:
        self._queue.append((peer, event, reply_to))

    def to_all(self, event: Event) -> None:
        for peer in self.cores:
            self.send(peer, event)

    def run(self, until_ms: int | None = None) -> None:
        """Deliver events, then due timers in order (time jumps), until nothing is left."""
        while True:
            while self._queue:
                peer, event, reply_to = self._queue.popleft()
                self.step(peer, event, reply_to)
            if not self._timers or (until_ms is not None and self._timers[0][0] > until_ms):
                break
            at, _, peer, key = heapq.heappop(self._timers)
            self.now = max(self.now, at)
            self.step(peer, Timer(key))
        if until_ms is not None:
            self.now = max(self.now, until_ms)

    def step(self, peer: str, event: Event, reply_to: str = "") -> list[Effect]:
        effects = self.cores[peer].handle(event, self.now)
        for effect in effects:
            self.log.append((self.now, peer, effect))
            if isinstance(effect, Respond):
                assert isinstance(event, BidIn)
                self.send(reply_to, BidAnswered(event.bid.job_id, effect.body))
            elif self.hold(peer, effect):
                self.held.append((peer, effect))
            else:
                self.carry_out(peer, effect)
        return effects

    def release(self, pick: Callable[[str, Effect], bool]) -> None:
        keep = []
        for peer, effect in self.held:
            if pick(peer, effect):
                self.carry_out(peer, effect)
            else:
                keep.append((peer, effect))
        self.held = keep

    def carry_out(self, peer: str, effect: Effect) -> None:
        if isinstance(effect, Publish) and effect.topic == TOPIC_JOBS:
            self.to_all(JobSeen(peer, effect.body))
        elif isinstance(effect, Publish) and effect.topic == TOPIC_PROOFS:
            self.to_all(StatementIn(peer, self.by_peer[peer].public_key, effect.body))
        elif isinstance(effect, SendBid):
            self.send(effect.peer, BidIn(peer, effect.bid), reply_to=peer)
        elif isinstance(effect, LedgerSubmit):
            self._seq += 1
            entry = h("entry", self._seq)
            self.send(peer, LedgerDone(effect.tag, entry))
            op = effect.op
            if isinstance(op, Award):
                seen = AwardSeen(entry, self.by_peer[peer].public_key, op.job_id,
                                 op.slice_index, op.round, op.prover, op.price,
                                 op.input_commitment)  # fmt: skip
                self.awards[entry] = seen
                self.to_all(seen)
        elif isinstance(effect, Prepare):
            self.send(peer, Prepared(effect.award_ref, True))
        elif isinstance(effect, Prove):
            self.send(peer, self.prove(peer, effect))
        elif isinstance(effect, FetchProof):
            self.send(peer, ProofFetched(effect.award_ref, self.proofs.get(effect.blob)))
        elif isinstance(effect, CheckProof):
            self.send(peer, Checked(effect.award_ref, self.verdict(peer, effect)))
        elif isinstance(effect, CheckChain):
            self.send(peer, ChainChecked(effect.job_id, self.chain_ok))
        elif isinstance(effect, SetTimer):
            self._seq += 1
            heapq.heappush(self._timers, (effect.at_ms, self._seq, peer, effect.key))
        # CancelProve, FileEvidence, FinishJob, Log: only logged.

    def prove(self, peer: str, effect: Prove, tag: str = "") -> Proven:
        """The fake prover: fake proof bytes and a statement really signed by the prover."""
        award = self.awards[effect.award_ref]
        proof = h("proof", effect.award_ref, tag) * 4
        self.proofs[hashlib.sha256(proof).digest()] = proof
        signed = sign_statement(self.by_peer[peer], statement_for(award, effect.bundle_id, tag),
                                proof)  # fmt: skip
        return Proven(effect.award_ref, True, signed, proof, 1.0)

    # -- reading ---------------------------------------------------------------------------

    def core(self, who: NodeIdentity) -> MarketCore:
        return self.cores[who.peer_id]

    def effects(self, kind: type, who: NodeIdentity | None = None) -> list[Any]:
        return [e for _, p, e in self.log
                if isinstance(e, kind) and (who is None or p == who.peer_id)]  # fmt: skip

    def ops(self, kind: type, who: NodeIdentity | None = None) -> list[Any]:
        return [e.op for e in self.effects(LedgerSubmit, who) if isinstance(e.op, kind)]

    def timed(self, kind: type, who: NodeIdentity) -> list[tuple[int, Any]]:
        return [(t, e) for t, p, e in self.log if isinstance(e, kind) and p == who.peer_id]


JOB = h("job", 1)
BUNDLE = h("bundle", 1)


def market(
    provers: list[tuple[NodeIdentity, ProverProfile]],
    *,
    requester_profile: ProverProfile | None = None,
    ledger: FakeLedger | None = None,
    seed: int = 7,
) -> Sim:
    ids = [R, *(i for i, _ in provers)]
    profiles = [requester_profile or profile(slots=2), *(p for _, p in provers)]
    return Sim(ids, profiles, ledger or bonded_all(*ids), seed=seed)


def submit(sim: Sim, n_slices: int = 2, *, job_id: bytes = JOB, deadline_ms: int = DEADLINE_MS,
           window_ms: int = WINDOW_MS, **task_kw: Any) -> None:  # fmt: skip
    tasks = tuple(task(i, **task_kw) for i in range(n_slices))
    sim.send(R.peer_id, Submit(job_id, BUNDLE, tasks, sim.now + deadline_ms, window_ms))


def awards_of(sim: Sim) -> list[Award]:
    return sorted(sim.ops(Award, R), key=lambda a: (a.slice_index, a.round))


# -- the requester and its provers, end to end --------------------------------------------------


def happy_path(seed: int = 7) -> Sim:
    sim = market([(A, profile(slots=1, price=5)), (B, profile(slots=2, price=8)),
                  (C, profile(slots=2, price=8))], seed=seed)  # fmt: skip
    submit(sim, 2)
    sim.run()
    return sim


def test_happy_path_bids_awards_proofs_chain_and_refund() -> None:
    sim = happy_path()
    req = sim.core(R)
    # Escrow of the sum of max prices, then one announcement of both slices.
    assert sim.ops(Escrow, R) == [Escrow(JOB, BUNDLE, 100)]
    [announce] = [e.body for e in sim.effects(Publish, R) if e.topic == TOPIC_JOBS]
    assert announce.round == 0 and len(announce.tasks) == 2
    bid_until = announce.bid_until_ms
    # Every prover bid, inside the window; the requester never bid on its own job.
    bids = {p: e.bid for t, p, e in sim.log if isinstance(e, SendBid) and t <= bid_until}
    assert set(bids) == {A.peer_id, B.peer_id, C.peer_id}
    assert len(sim.effects(SendBid)) == 3 and not sim.effects(SendBid, R)
    assert req.counters["jobs_skipped:own_job"] == 1
    assert req.counters["bids_accepted"] == 3
    assert all(e.bid.capacity == min(sim.core(i).profile.slots, 2) for i in (A, B, C)
               for e in sim.effects(SendBid, i))  # fmt: skip
    # Awards at the window's close, spread within each bid's capacity, never to the requester.
    awards = awards_of(sim)
    assert [(a.slice_index, a.round) for a in awards] == [(0, 0), (1, 0)]
    assert all(t == bid_until for t, e in sim.timed(LedgerSubmit, R) if isinstance(e.op, Award))
    per_prover: dict[str, int] = {}
    for a in awards:
        peer = sim.by_key[a.prover].peer_id
        per_prover[peer] = per_prover.get(peer, 0) + 1
        assert a.prover != R.public_key
        assert a.price == bids[peer].price <= task(a.slice_index).max_price
    assert all(n <= bids[p].capacity for p, n in per_prover.items())
    assert per_prover.get(A.peer_id) == 1  # the cheapest prover had room for one slice only
    # Each award was prepared, proven, claimed, published, fetched and checked; then the chain.
    assert len(sim.ops(Claim)) == 2
    assert len(sim.effects(CheckProof, R)) == 2
    assert sim.effects(CheckChain, R) == [CheckChain(JOB)]
    assert sim.effects(FinishJob, R) == [FinishJob(JOB, True, "")]
    assert sim.ops(Refund, R) == [Refund(JOB)]
    finish_at = [i for i, (_, _, e) in enumerate(sim.log) if isinstance(e, FinishJob)]
    refund_at = [i for i, (_, _, e) in enumerate(sim.log)
                 if isinstance(e, LedgerSubmit) and isinstance(e.op, Refund)]  # fmt: skip
    assert refund_at[0] > finish_at[0]
    assert req.jobs[JOB].state == "done"
    assert req.counters["proofs_verified"] == 2 and req.counters["awards"] == 2
    assert not sim.effects(FileEvidence) and not sim.effects(CancelProve)
    assert all(req.reputation[a.prover] == 1 for a in awards)
    # Provers' slots are free again once the reservations expired.
    for who in (A, B, C):
        assert sim.core(who).free_slots(sim.now) == sim.core(who).profile.slots


def test_determinism_same_seed_same_effects() -> None:
    first, second = happy_path(seed=3), happy_path(seed=3)
    assert repr(first.log) == repr(second.log)
    assert first.core(R).counters == second.core(R).counters


def test_ties_are_broken_by_the_seed() -> None:
    """B and C bid alike: which one gets the second slice depends only on the seed."""
    winners = set()
    for seed in range(12):
        awards = awards_of(happy_path(seed))
        winners |= {a.prover for a in awards if a.prover != A.public_key}
    assert winners == {B.public_key, C.public_key}


# -- the prover's slots: never more than it can prove --------------------------------------------


def announce(job_id: bytes, n: int = 1, *, round_: int = 0, bid_until_ms: int = WINDOW_MS,
             ezkl: str = EZKL, **task_kw: Any) -> JobAnnounce:  # fmt: skip
    tasks = tuple(task(i, **task_kw) for i in range(n))
    return JobAnnounce(job_id, BUNDLE, h("escrow", job_id), round_, bid_until_ms, DEADLINE_MS,
                       "0.1.0", ezkl, tasks, ())  # fmt: skip


def prover_core(slots: int = 1, ledger: FakeLedger | None = None, **kw: Any) -> MarketCore:
    ledger = ledger or bonded_all(A)
    return MarketCore(A.public_key, A.peer_id, profile(slots=slots, **kw), ledger, random.Random(1))


def test_one_free_slot_is_never_bid_twice_and_the_reservation_expires() -> None:
    p = prover_core(slots=1)
    j1, j2, j3 = h("j", 1), h("j", 2), h("j", 3)
    [send, reserve] = p.handle(JobSeen(R.peer_id, announce(j1, 2)), 0)
    assert isinstance(send, SendBid) and send.bid.capacity == 1
    until = WINDOW_MS + AWARD_GRACE_MS
    assert send.bid.expires_ms == until and reserve == SetTimer(("reserve", j1), until)
    # A concurrent job: no slot left, so no bid at all.
    assert p.handle(JobSeen(B.peer_id, announce(j2, 3)), 1) == []
    assert p.counters["jobs_skipped:no_free_slot"] == 1
    assert p.free_slots(until - 1) == 0
    # The bid window plus the grace passed without an award: the slot is free again.
    assert p.free_slots(until) == 1
    assert p.handle(Timer(("reserve", j1)), until) == []
    assert j1 not in p.reserved
    [send3, _] = p.handle(JobSeen(B.peer_id, announce(j3, 1, bid_until_ms=until + 5_000)), until)
    assert isinstance(send3, SendBid) and send3.bid.capacity == 1


def test_slots_are_split_across_concurrent_jobs_without_overcommit() -> None:
    p = prover_core(slots=3)
    caps = []
    for n, slices in enumerate((2, 4, 1)):
        effects = p.handle(JobSeen(R.peer_id, announce(h("k", n), slices)), n)
        caps += [e.bid.capacity for e in effects if isinstance(e, SendBid)]
    assert caps == [2, 1]  # the third job found no free slot
    assert sum(caps) == 3 and p.free_slots(10) == 0


def test_a_refused_bid_frees_its_reservation() -> None:
    p = prover_core(slots=1)
    p.handle(JobSeen(R.peer_id, announce(JOB, 1)), 0)
    assert p.free_slots(1) == 0
    p.handle(BidAnswered(JOB, BidReply(JOB, False, "not_bonded")), 1)
    assert p.free_slots(1) == 1 and p.counters["bids_refused_by_requester"] == 1
    p.handle(JobSeen(R.peer_id, announce(h("j", 9), 1)), 2)
    p.handle(BidAnswered(h("j", 9), None), 3)  # unreachable requester
    assert p.free_slots(3) == 1 and p.counters["bids_lost"] == 1


def award_seen(job_id: bytes, index: int = 0, round_: int = 0, prover: bytes = A.public_key,
               ref: bytes | None = None) -> AwardSeen:  # fmt: skip
    return AwardSeen(ref or h("award", job_id, index, round_), R.public_key, job_id, index,
                     round_, prover, 10, task(index).input_commitment)  # fmt: skip


def test_an_award_after_the_reservation_expired_does_not_overcommit() -> None:
    p = prover_core(slots=1)
    until = WINDOW_MS + AWARD_GRACE_MS
    p.handle(JobSeen(R.peer_id, announce(h("j", 1), 1)), 0)
    # The reservation has expired (its timer not handled yet): the slot goes to job 2.
    [send, _] = p.handle(JobSeen(B.peer_id, announce(h("j", 2), 1, bid_until_ms=until + 9)),
                         until)  # fmt: skip
    assert isinstance(send, SendBid)
    p.handle(award_seen(h("j", 1)), until + 1)  # late award of the expired job 1 reservation
    p.handle(award_seen(h("j", 2)), until + 2)
    busy = sum(t.state in ("preparing", "proving") for t in p.tasks.values())
    assert busy <= p.profile.slots


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(["job", "award", "answer", "wait"]),
                                st.integers(0, 5), st.integers(1, 4)), max_size=30),
       slots=st.integers(1, 4))  # fmt: skip
def test_property_reserved_plus_busy_never_exceeds_slots(
    steps: list[tuple[str, int, int]], slots: int
) -> None:
    """Any interleaving of announcements, awards (for jobs bid on or not), refusals and time,
    with due reservation timers handled first: busy + live reservations <= slots."""
    p = prover_core(slots=slots)
    now, timers = 0, list[tuple[tuple[Any, ...], int]]()
    for kind, job_n, size in steps:
        now += 1 if kind != "wait" else size * 4_000
        for key, at in sorted(timers, key=lambda t: t[1]):
            if at <= now:
                p.handle(Timer(key), now)
        timers = [(k, at) for k, at in timers if at > now]
        job_id = h("job", job_n)
        if kind == "job":
            ann = announce(job_id, size, bid_until_ms=now + WINDOW_MS)
            for e in p.handle(JobSeen(R.peer_id, ann), now):
                if isinstance(e, SetTimer):
                    timers.append((e.key, e.at_ms))
                elif isinstance(e, SendBid):
                    assert e.bid.capacity <= size
        elif kind == "award" and job_id in p.seen_jobs:
            p.handle(award_seen(job_id, size % len(p.seen_jobs[job_id][1].tasks), size), now)
        elif kind == "answer":
            p.handle(BidAnswered(job_id, BidReply(job_id, False, "x")), now)
        busy = sum(t.state in ("preparing", "proving") for t in p.tasks.values())
        live = sum(n for n, until in p.reserved.values() if until > now)
        assert busy + live <= slots
        assert busy <= slots


# -- a missed deadline, bad proofs, equivocation ----------------------------------------------


def three_provers() -> Sim:
    return market([(A, profile(price=5)), (B, profile(price=8)), (C, profile(price=9))])


def test_a_missed_slice_deadline_re_awards_to_another_prover() -> None:
    sim = three_provers()
    sim.hold = lambda peer, e: peer == A.peer_id and isinstance(e, Prove)  # A is slow
    submit(sim, 1)
    sim.run()
    req = sim.core(R)
    first, second = awards_of(sim)
    assert (first.round, first.prover) == (0, A.public_key)
    assert (second.round, second.prover) == (1, B.public_key)  # the next cheapest, not A
    [(late_at, _)] = [(t, e) for t, e in sim.timed(LedgerSubmit, R)
                      if isinstance(e.op, Award) and e.op.round == 1]  # fmt: skip
    assert late_at == WINDOW_MS + DEADLINE_MIN_MS  # the award time plus the minimum slice deadline
    assert req.counters["deadlines_missed"] == 1 and req.reputation[A.public_key] == -1
    assert A.public_key in req.jobs[JOB].slices[0].failed
    # The slow prover saw the new round's award and stopped.
    a_ref = next(r for r, s in sim.awards.items() if s.round == 0)
    assert sim.effects(CancelProve, A) == [CancelProve(a_ref)]
    assert sim.core(A).tasks[a_ref].state == "failed"
    assert sim.core(A).counters["awards_revoked"] == 1
    assert sim.effects(FinishJob, R) == [FinishJob(JOB, True, "")]
    # A late statement for the revoked award is ignored: nothing fetched, checked or filed.
    checks = len(sim.effects(CheckProof))
    [(_, prove)] = sim.held
    assert isinstance(prove, Prove)
    proven = sim.prove(A.peer_id, prove)
    assert proven.signed is not None
    late = statement_msg(proven.signed, proven.proof)
    sim.send(R.peer_id, StatementIn(A.peer_id, A.public_key, late))
    sim.run()
    assert req.counters["statements_ignored"] == 1
    assert len(sim.effects(CheckProof)) == checks and not sim.effects(FileEvidence)
    assert req.jobs[JOB].state == "done"


def test_a_late_prover_sits_out_only_the_next_round() -> None:
    """Every prover is slow in turn: the round after a missed deadline never goes back to the
    late prover, but lateness is forgiven once another prover was late too (a slow machine is
    no cheat), so the slice keeps being worked on."""
    sim = three_provers()
    sim.hold = lambda peer, e: isinstance(e, Prove)
    submit(sim, 1)
    sim.run(until_ms=WINDOW_MS + 3 * DEADLINE_MIN_MS + 1)
    provers = [a.prover for a in awards_of(sim)]
    assert provers[:2] == [A.public_key, B.public_key] and len(provers) >= 3
    assert all(a != b for a, b in itertools.pairwise(provers))  # never the one just late
    slice_ = sim.core(R).jobs[JOB].slices[0]
    assert slice_.late == provers[-2] and provers[-2] in slice_.failed
    assert len(sim.effects(CancelProve)) == len(provers) - 1  # each late one, by the next round


@pytest.mark.parametrize("verdict", ["invalid_proof", "wrong_input"])
def test_a_bad_proof_files_evidence_and_re_awards(verdict: str) -> None:
    sim = three_provers()
    sim.verdict = lambda peer, e: verdict if sim.awards[e.award_ref].prover == A.public_key \
        else "ok"  # fmt: skip
    submit(sim, 1)
    sim.run()
    req = sim.core(R)
    first, second = awards_of(sim)
    assert first.prover == A.public_key and (second.round, second.prover) == (1, B.public_key)
    [evidence] = sim.effects(FileEvidence, R)
    a_ref = next(r for r, s in sim.awards.items() if s.round == 0)
    assert (evidence.kind, evidence.award_ref) == (verdict, a_ref)
    assert evidence.signed.prover == A.public_key
    assert evidence.proof == (sim.proofs[hashlib.sha256(evidence.proof).digest()])
    assert req.counters[f"proofs_bad:{verdict}"] == 1 and req.reputation[A.public_key] == -3
    assert sim.effects(FinishJob, R) == [FinishJob(JOB, True, "")]


def test_a_statement_mismatch_re_awards_without_evidence() -> None:
    sim = three_provers()
    sim.verdict = lambda peer, e: "statement_mismatch" if sim.awards[e.award_ref].round == 0 \
        else "ok"  # fmt: skip
    submit(sim, 1)
    sim.run()
    assert [a.round for a in awards_of(sim)] == [0, 1]
    assert not sim.effects(FileEvidence)
    assert sim.effects(FinishJob, R) == [FinishJob(JOB, True, "")]


def test_an_undecided_check_waits_for_the_next_statement() -> None:
    sim = three_provers()
    sim.verdict = lambda peer, e: "undecided"
    submit(sim, 1)
    sim.run(until_ms=WINDOW_MS + 1)
    req = sim.core(R)
    s = req.jobs[JOB].slices[0]
    assert s.state == "awarded" and s.statement is None and len(awards_of(sim)) == 1
    assert not sim.effects(FileEvidence)


def equivocating_prover(sim: Sim) -> tuple[AwardSeen, StatementIn]:
    """A second, different statement by A about its award (what an equivocator sends)."""
    award = next(s for s in sim.awards.values() if s.prover == A.public_key)
    proof = h("other proof") * 4
    signed = sign_statement(A, statement_for(award, BUNDLE, "other"), proof)
    return award, StatementIn(A.peer_id, A.public_key, statement_msg(signed, proof))


def test_two_different_statements_for_one_award_file_equivocation() -> None:
    sim = three_provers()
    sim.hold = lambda peer, e: isinstance(e, FetchProof)  # the first statement is being checked
    submit(sim, 1)
    sim.run(until_ms=WINDOW_MS + 1)
    req = sim.core(R)
    assert req.jobs[JOB].slices[0].state == "checking"
    first = req.jobs[JOB].slices[0].statement
    # The same statement again (gossip delivers twice) is no equivocation.
    [(_, fetch)] = sim.held
    award, other = equivocating_prover(sim)
    again = [e.body for e in sim.effects(Publish, A) if e.topic == TOPIC_PROOFS]
    assert sim.step(R.peer_id, StatementIn(A.peer_id, A.public_key, again[0])) == []
    effects = sim.step(R.peer_id, other)
    [evidence] = [e for e in effects if isinstance(e, FileEvidence)]
    assert evidence.kind == "equivocation" and evidence.award_ref == award.award_ref
    assert evidence.signed == first
    assert evidence.other is not None and evidence.other.statement != first.statement  # type: ignore[union-attr]
    assert req.counters["equivocations"] == 1
    assert A.public_key in req.jobs[JOB].slices[0].failed
    # Re-awarded to B; the first fetch arriving now is ignored.
    sim.hold = lambda peer, e: False
    sim.release(lambda peer, e: True)
    sim.run()
    assert [(a.round, a.prover) for a in awards_of(sim)] == [(0, A.public_key), (1, B.public_key)]
    assert sim.effects(FinishJob, R) == [FinishJob(JOB, True, "")]
    assert isinstance(fetch, FetchProof)


def test_a_statement_from_another_prover_than_the_awarded_one_is_ignored() -> None:
    sim = three_provers()
    sim.hold = lambda peer, e: isinstance(e, Prove)
    submit(sim, 1)
    sim.run(until_ms=WINDOW_MS + 1)
    award = next(iter(sim.awards.values()))
    proof = b"x" * 64
    signed = sign_statement(B, statement_for(award, BUNDLE), proof)  # B claims A's award
    assert sim.step(R.peer_id, StatementIn(B.peer_id, B.public_key,
                                           statement_msg(signed, proof))) == []  # fmt: skip
    assert sim.core(R).counters["statements_ignored"] == 1


def test_equivocation_after_the_job_is_done_files_evidence_without_re_awarding() -> None:
    sim = three_provers()
    submit(sim, 1)
    sim.run()
    assert sim.effects(FinishJob, R) == [FinishJob(JOB, True, "")]
    _, other = equivocating_prover(sim)
    effects = sim.step(R.peer_id, other)
    assert [e.kind for e in effects if isinstance(e, FileEvidence)] == ["equivocation"]
    assert not [e for e in effects if isinstance(e, LedgerSubmit) and isinstance(e.op, Award)]


def test_a_verdict_after_the_job_deadline_does_not_revive_the_job() -> None:
    sim = three_provers()
    sim.hold = lambda peer, e: isinstance(e, CheckProof)  # the check outlives the job
    submit(sim, 1, deadline_ms=30_000)
    sim.run()
    assert sim.effects(FinishJob, R) == [FinishJob(JOB, False, "deadline passed: 0 of 1 verified")]
    sim.release(lambda peer, e: True)
    sim.run()
    assert len(sim.effects(FinishJob, R)) == 1 and len(sim.ops(Refund, R)) == 1
    assert not sim.effects(CheckChain, R)


@pytest.mark.parametrize("stage", [FetchProof, CheckProof])
def test_a_stale_result_of_a_revoked_round_is_not_applied_to_the_new_round(stage: type) -> None:
    """A's statement is still being fetched or checked when its slice deadline passes; the slice
    goes to B. When A's slow fetch or check completes, it says nothing about B's proof."""
    sim = three_provers()
    sim.hold = lambda peer, e: isinstance(e, stage)
    submit(sim, 1)
    sim.run(until_ms=WINDOW_MS + DEADLINE_MIN_MS + 1)  # A's deadline passed, B's not yet
    req = sim.core(R)
    s = req.jobs[JOB].slices[0]
    assert (s.round, s.prover, s.state) == (1, B.public_key, "checking")
    a_ref = next(r for r, x in sim.awards.items() if x.round == 0)
    sim.hold = lambda peer, e: True  # watch what A's late result makes the requester do
    logged = len(sim.log)
    sim.release(lambda peer, e: e.award_ref == a_ref)  # type: ignore[union-attr]
    sim.run(until_ms=sim.now)
    # Today: A's proof is checked as if it were B's, or A's "ok" verifies B's unchecked proof.
    assert [e for _, _, e in sim.log[logged:] if isinstance(e, CheckProof | CheckChain)] == []
    assert s.state == "checking"


# -- bids the requester refuses -------------------------------------------------------------------


def requester_in_bidding(ledger: FakeLedger) -> tuple[MarketCore, int]:
    r = MarketCore(R.public_key, R.peer_id, profile(slots=1), ledger, random.Random(5))
    r.handle(Submit(JOB, BUNDLE, (task(0), task(1)), DEADLINE_MS, WINDOW_MS), 0)
    effects = r.handle(LedgerDone(("escrow", JOB), h("escrow")), 10)
    [until] = [e.body.bid_until_ms for e in effects if isinstance(e, Publish)]
    return r, until


def bid(job_id: bytes = JOB, slices: tuple[int, ...] = (0, 1), round_: int = 0) -> Bid:
    return Bid(job_id, round_, slices, 1, 10, 1_000, 100, 17, 99_999)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unknown_job", "unknown_job"),
        ("after_window", "bidding_closed"),
        ("old_round", "bidding_closed"),
        ("not_bonded", "not_bonded"),
        ("unknown_slice", "unknown_slice"),
        ("own_job", "own_job"),
    ],
)
def test_bids_refused_are_answered_and_counted(case: str, reason: str) -> None:
    stranger = ident("unbonded")
    r, until = requester_in_bidding(bonded_all(R, A))
    peer, the_bid, now = A.peer_id, bid(), until
    if case == "unknown_job":
        the_bid = bid(h("no such job"))
    elif case == "after_window":
        now = until + 1
    elif case == "old_round":
        the_bid = bid(round_=1)
    elif case == "not_bonded":
        peer = stranger.peer_id
    elif case == "unknown_slice":
        the_bid = bid(slices=(0, 7))
    else:
        peer = R.peer_id
    effects = r.handle(BidIn(peer, the_bid), now)
    assert effects == [Respond(BidReply(the_bid.job_id, False, reason))]
    assert r.counters == {"jobs_submitted": 1, "announcements": 1, f"bids_refused:{reason}": 1}
    assert r.jobs[JOB].bids == {}
    # A good bid at the same moment is taken (the refusal was about that bid only).
    if case not in ("after_window",):
        assert r.handle(BidIn(A.peer_id, bid()), until) == [Respond(BidReply(JOB, True, ""))]


def test_a_bid_for_an_already_awarded_slice_is_refused() -> None:
    r, until = requester_in_bidding(bonded_all(R, A, B))
    r.handle(BidIn(A.peer_id, bid(slices=(0,))), 1)
    r.handle(Timer(("bids", JOB, 0)), until)  # slice 0 awarded (pending), slice 1 re-announced
    r.handle(Timer(("reannounce", JOB)), until + 1_000)
    effects = r.handle(BidIn(B.peer_id, bid(slices=(0, 1), round_=1)), until + 1_001)
    assert effects == [Respond(BidReply(JOB, False, "unknown_slice"))]


# -- no bids, deadlines -------------------------------------------------------------------------


def test_no_bids_re_announce_every_round_then_fail() -> None:
    sim = market([(A, profile(ezkl_version="other"))])  # A can never bid
    submit(sim, 2, window_ms=1_000, deadline_ms=10_000_000)
    sim.run()
    announces = [(t, e.body) for t, e in sim.timed(Publish, R) if e.topic == TOPIC_JOBS]
    assert [a.round for _, a in announces] == list(range(ANNOUNCE_ROUNDS_MAX))
    assert all(a.bid_until_ms == t + 1_000 and len(a.tasks) == 2 for t, a in announces)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(announces)]
    # The window, then a re-announce delay that doubles up to its cap (provers may be busy).
    assert gaps[:4] == [2_000, 3_000, 5_000, 9_000] and set(gaps[5:]) == {11_000}
    assert sim.effects(FinishJob, R) == [
        FinishJob(JOB, False, "no prover took the remaining slices")
    ]
    assert sim.ops(Refund, R) == [Refund(JOB)]
    assert sim.core(A).counters["jobs_skipped:ezkl_version"] == ANNOUNCE_ROUNDS_MAX
    assert not sim.ops(Award)


def test_only_the_unawarded_slices_are_re_announced() -> None:
    sim = market([(A, profile(max_logrows=12))])
    sim.send(R.peer_id, Submit(JOB, BUNDLE, (task(0, logrows=10), task(1, logrows=14)),
                               DEADLINE_MS, WINDOW_MS))  # fmt: skip
    sim.run(until_ms=2 * WINDOW_MS + 1_000)
    announces = [e.body for e in sim.effects(Publish, R) if e.topic == TOPIC_JOBS]
    assert [tuple(t.index for t in a.tasks) for a in announces] == [(0, 1), (1,)]
    assert [a.slice_index for a in awards_of(sim)] == [0]


def test_the_job_deadline_fails_the_job_and_refunds() -> None:
    sim = three_provers()
    sim.hold = lambda peer, e: isinstance(e, Prove)  # nobody finishes
    submit(sim, 1, deadline_ms=40_000)
    sim.run()
    assert sim.effects(FinishJob, R) == [FinishJob(JOB, False, "deadline passed: 0 of 1 verified")]
    assert sim.ops(Refund, R) == [Refund(JOB)]
    assert len(awards_of(sim)) == 1  # the slice deadline was capped by the job's: no re-award
    assert sim.core(R).jobs[JOB].state == "failed"


def test_a_refused_escrow_fails_the_job_without_refund() -> None:
    r = MarketCore(R.public_key, R.peer_id, profile(), bonded_all(R), random.Random(1))
    r.handle(Submit(JOB, BUNDLE, (task(0),), DEADLINE_MS, WINDOW_MS), 0)
    effects = r.handle(LedgerDone(("escrow", JOB), None, "insufficient balance"), 1)
    assert effects == [FinishJob(JOB, False, "escrow refused: insufficient balance")]


def test_a_refused_award_re_announces_without_that_prover() -> None:
    r, until = requester_in_bidding(bonded_all(R, A))
    r.handle(BidIn(A.peer_id, bid(slices=(0,))), 1)
    [award] = r.handle(Timer(("bids", JOB, 0)), until)[:1]
    assert isinstance(award, LedgerSubmit) and isinstance(award.op, Award)
    effects = r.handle(LedgerDone(award.tag, None, "insufficient bond"), until)
    assert SetTimer(("reannounce", JOB), until + 1_000) in effects
    s = r.jobs[JOB].slices[0]
    assert (s.state, s.round, s.failed) == ("open", -1, {A.public_key})


def test_a_chain_that_does_not_link_fails_the_job() -> None:
    sim = three_provers()
    sim.chain_ok = False
    submit(sim, 2)
    sim.run()
    assert sim.effects(FinishJob, R) == [FinishJob(JOB, False, "chain does not link")]
    assert sim.ops(Refund, R) == [Refund(JOB)]


# -- jobs a prover skips ------------------------------------------------------------------------


def test_a_prover_skips_jobs_it_cannot_take_and_counts_why() -> None:
    p = prover_core(slots=1, max_logrows=12, memory_mb=1_000)
    unbonded = MarketCore(A.public_key, A.peer_id, profile(), FakeLedger({}), random.Random(1))
    no_slots = prover_core(slots=0)
    cases = [
        (p, announce(h("s", 1), ezkl="9.9.9"), "ezkl_version"),
        (p, announce(h("s", 2), logrows=13), "nothing_fits"),
        (p, announce(h("s", 3), memory_mb=1_001), "nothing_fits"),
        (p, announce(h("s", 4), bid_until_ms=0), "too_late"),
        (unbonded, announce(h("s", 5)), "not_bonded"),
        (no_slots, announce(h("s", 6)), "no_free_slot"),
    ]
    for core, job, reason in cases:
        before = core.counters.get(f"jobs_skipped:{reason}", 0)
        assert core.handle(JobSeen(R.peer_id, job), 0) == [], reason
        assert core.counters[f"jobs_skipped:{reason}"] == before + 1
    assert p.counters == {"jobs_skipped:ezkl_version": 1, "jobs_skipped:nothing_fits": 2,
                          "jobs_skipped:too_late": 1}  # fmt: skip
    assert p.reserved == {} and p.free_slots(0) == 1
    own = MarketCore(R.public_key, R.peer_id, profile(), bonded_all(R), random.Random(1))
    assert own.handle(JobSeen(R.peer_id, announce(h("s", 7))), 0) == []
    assert own.counters == {"jobs_skipped:own_job": 1}


def test_a_prover_bids_only_on_the_slices_that_fit() -> None:
    p = prover_core(slots=4, max_logrows=12, price=30)
    job = JobAnnounce(JOB, BUNDLE, h("e"), 0, WINDOW_MS, DEADLINE_MS, "0.1.0", EZKL,
                      (task(0, logrows=14), task(1), task(2, max_price=20)), ())  # fmt: skip
    [send, _] = p.handle(JobSeen(R.peer_id, job), 0)
    assert isinstance(send, SendBid)
    assert send.bid.slices == (1, 2) and send.bid.capacity == 2
    assert send.bid.price == 20  # never above a covered slice's max price
    assert send.addrs == () and send.peer == R.peer_id


def test_awards_a_prover_cannot_use_are_counted() -> None:
    p = prover_core(slots=1)
    assert p.handle(award_seen(h("unseen")), 0) == []
    p.handle(JobSeen(R.peer_id, announce(JOB, 1)), 0)
    wrong = AwardSeen(h("a"), R.public_key, JOB, 0, 0, A.public_key, 10, h("not the input"))
    assert p.handle(wrong, 1) == []
    assert p.counters["awards_unknown_job"] == 1 and p.counters["awards_mismatch"] == 1
    [prepare] = p.handle(award_seen(JOB), 2)
    assert isinstance(prepare, Prepare) and prepare.peer == R.peer_id
    assert p.handle(award_seen(JOB), 3) == []  # the same award twice: one task
    assert p.handle(award_seen(JOB, ref=h("other")), 4) == []  # reserved slot already used
    assert p.counters["awards_over_capacity"] == 1 and len(p.tasks) == 1


# -- choose_awards --------------------------------------------------------------------------------

PROVERS = [ident(f"p{i}").public_key for i in range(5)]


@st.composite
def award_inputs(draw: st.DrawFn) -> tuple[Any, ...]:
    indices = draw(st.lists(st.integers(0, 20), min_size=1, max_size=8, unique=True))
    tasks = {i: SliceTask(i, h("c", i), h("i", i), draw(st.integers(1, 20)), 0,
                          draw(st.integers(0, 30))) for i in indices}  # fmt: skip
    bids: dict[bytes, Bid] = {}
    for p in draw(st.lists(st.sampled_from(PROVERS), unique=True, max_size=5)):
        slices = draw(st.lists(st.sampled_from([*indices, 99]), min_size=1, max_size=6,
                               unique=True))  # fmt: skip
        bids[p] = Bid(h("j"), 0, tuple(slices), draw(st.integers(1, 4)), draw(st.integers(0, 30)),
                      draw(st.integers(0, 10)), 0, 17, 0)  # fmt: skip
    failed = {i: set(draw(st.lists(st.sampled_from(PROVERS), max_size=3))) for i in indices}
    busy = {p: draw(st.integers(0, 3)) for p in draw(st.lists(st.sampled_from(PROVERS)))}
    reputation = {p: draw(st.integers(-5, 5)) for p in PROVERS}
    return tasks, bids, failed, busy, reputation, draw(st.integers(0, 2**32))


@settings(max_examples=300, deadline=None)
@given(inputs=award_inputs())
def test_property_choose_awards_respects_bids(inputs: tuple[Any, ...]) -> None:
    tasks, bids, failed, busy, reputation, seed = inputs
    chosen = choose_awards(tasks, bids, failed, busy, reputation, random.Random(seed))
    per_prover: dict[bytes, int] = {}
    for index, (prover, price) in chosen.items():
        bid = bids[prover]
        assert index in tasks and index in bid.slices  # every awarded slice was in the bid
        assert prover not in failed[index]  # never a prover that failed the slice
        assert price == bid.price <= tasks[index].max_price
        per_prover[prover] = per_prover.get(prover, 0) + 1
    for prover, n in per_prover.items():
        assert n <= bids[prover].capacity - busy.get(prover, 0)
    # Greedy but not lazy: an unawarded slice had no eligible bid with room left.
    for index in set(tasks) - set(chosen):
        for prover, bid in bids.items():
            if index in bid.slices and prover not in failed[index] \
                    and bid.price <= tasks[index].max_price:  # fmt: skip
                assert busy.get(prover, 0) + per_prover.get(prover, 0) >= bid.capacity
    # Deterministic per seed.
    assert chosen == choose_awards(tasks, bids, failed, busy, reputation, random.Random(seed))


def test_with_early_close_slices_are_awarded_soon_after_every_slice_has_a_bid() -> None:
    sim = market(
        [(A, profile(price=5)), (B, profile(price=8))],
        requester_profile=profile(slots=2, early_close_ms=300),
    )
    submit(sim, 2)
    sim.run()
    award_times = [t for t, e in sim.timed(LedgerSubmit, R) if isinstance(e.op, Award)]
    assert len(award_times) == 2
    assert max(award_times) < sim.now  # the job went on
    assert all(t < WINDOW_MS for t in award_times)  # not waiting out the bid window
    assert sim.effects(FinishJob, R) == [FinishJob(JOB, True, "")]


def test_a_prover_whose_bid_lost_every_slice_frees_its_reservation_at_once() -> None:
    sim = market([(A, profile(price=5, slots=2)), (B, profile(price=9))])
    submit(sim, 1)
    sim.run(until_ms=WINDOW_MS + 1)  # the window closed: the one slice went to A
    loser = sim.core(B)
    assert JOB not in loser.reserved and loser.counters["reservations_released"] == 1
    assert loser.free_slots(sim.now) == 1
