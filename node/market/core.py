"""The market's protocol core: a pure state machine per node, `handle(event, now_ms) -> effects`.

One core plays both parts (docs/market.md):
- **requester**: escrow → announce → collect bids for a window → award each slice (ledger) →
  check every proof statement (fetch the proof by hash, verify, compare with the award) → on a
  bad proof file evidence and re-award; on a missed deadline re-award (the late prover loses
  the award and reputation, not stake) → when every slice checks, check the chain → refund the
  rest → done;
- **prover**: on an announcement, bid on the slices that fit (logrows, memory, stake), reserving
  its free slots until the award or the bid's expiry (never more than it can prove) → on an
  award naming it, fetch what it lacks, prove, claim on the ledger and publish the statement.

No trio, sockets, clock or global randomness here: time comes in as `now_ms`, randomness from
the seeded `rng`, the ledger through `LedgerView`. The runtime carries out the effects.
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ledger.containers import Award, Escrow, Refund, SignedStatement
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
    Log,
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

JOBS_KNOWN_MAX = 1024
AWARD_GRACE_MS = 15_000  # a bid's slots stay reserved this long after the bid window
REANNOUNCE_DELAY_MS = 1_000  # doubled per announcement round, up to REANNOUNCE_DELAY_MS_MAX
REANNOUNCE_DELAY_MS_MAX = 10_000  # provers may be busy for a while: keep asking, not faster
ANNOUNCE_ROUNDS_MAX = 64  # then give up (the job deadline usually comes first)
ROUNDS_MAX = 16  # award rounds per slice
ZERO32 = bytes(32)


class LedgerView(Protocol):
    def get_bonded(self, account: bytes) -> int: ...

    @property
    def bond_min(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ProverProfile:
    """What this node offers as a prover (0 slots: relay and verify only)."""

    slots: int
    price: int
    max_logrows: int
    memory_mb: int
    software_version: str
    ezkl_version: str
    tamper: bool = False  # fault injection: publish proofs that do not verify
    slack: float = 3.0  # deadline = award + slack × expected time (at least deadline_min_ms)
    deadline_min_ms: int = 120_000
    cold_factor: float = 3.0  # a bundle not proven here yet also needs fetch and key setup
    # As requester: once every open slice has a bid, award this soon after instead of waiting
    # out the window (0: always wait out the window). Nodes use 300 ms (node.market.build).
    early_close_ms: int = 0


@dataclass(slots=True)
class SliceState:
    task: SliceTask
    state: str = "open"  # open | awarding | awarded | checking | verified | failed
    round: int = -1  # the last awarded round
    prover: bytes = b""
    price: int = 0
    award_ref: bytes = b""
    awarded_ms: int = 0
    statement: SignedStatement | None = None
    proof: bytes = b""
    failed: set[bytes] = field(default_factory=set)  # provers excluded from this slice
    late: bytes = b""  # the prover excluded only for the round after its missed deadline


@dataclass(slots=True)
class OwnJob:
    job_id: bytes
    bundle_id: bytes
    slices: dict[int, SliceState]
    deadline_ms: int
    bid_window_ms: int
    created_ms: int
    escrow_ref: bytes = b""
    announce_round: int = 0
    bid_until_ms: int = 0
    bids: dict[bytes, Bid] = field(default_factory=dict)
    state: str = "escrowing"  # escrowing | bidding | proving | verifying | done | failed
    reason: str = ""
    escrow: int = 0
    finished_ms: int = 0
    slice_deadline_ms: int = 0
    closing_early: bool = False


@dataclass(slots=True)
class ProverTask:
    award_ref: bytes
    job_id: bytes
    requester_peer: str
    slice_index: int
    round: int = 0
    state: str = "preparing"  # preparing | proving | claiming | published | failed
    signed: SignedStatement | None = None
    proof: bytes = b""


class MarketCore:
    def __init__(
        self,
        me: bytes,
        me_peer: str,
        profile: ProverProfile,
        ledger: LedgerView,
        rng: random.Random,
        *,
        expected_ms_of: Callable[[int], int] | None = None,
    ) -> None:
        self.me = me
        self.me_peer = me_peer
        self.profile = profile
        self.ledger = ledger
        self.rng = rng
        self.addrs: tuple[str, ...] = ()
        self.jobs: OrderedDict[bytes, OwnJob] = OrderedDict()
        self.seen_jobs: OrderedDict[bytes, tuple[str, JobAnnounce]] = OrderedDict()
        self.reserved: dict[bytes, tuple[int, int]] = {}  # job -> (slots, until_ms)
        self.tasks: dict[bytes, ProverTask] = {}  # award ref -> task
        self.by_award: dict[bytes, tuple[bytes, int]] = {}  # award ref -> (own job, slice)
        self.reputation: dict[bytes, int] = {}
        self.counters: dict[str, int] = {}
        self.warm_bundles: set[bytes] = set()  # bundles this node has proven (keys cached)
        self.awarded_elsewhere: dict[bytes, set[int]] = {}  # job -> slices awarded to others
        # Expected proving time per logrows (the runtime passes this machine's measured times).
        self.expected_ms_of = expected_ms_of or (lambda logrows: 10_000 * 2 ** max(0, logrows - 15))

    # -- helpers ---------------------------------------------------------------------------

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def free_slots(self, now_ms: int) -> int:
        reserved = sum(n for n, until in self.reserved.values() if until > now_ms)
        busy = sum(1 for t in self.tasks.values() if t.state in ("preparing", "proving"))
        return max(0, self.profile.slots - busy - reserved)

    def handle(self, event: Event, now_ms: int) -> list[Effect]:
        """Apply one event; the effects the runtime must carry out, in order."""
        handler = _HANDLERS[type(event)]
        return handler(self, event, now_ms)

    # -- requester: submit, escrow, announce -------------------------------------------------

    def on_submit(self, e: Submit, now: int) -> list[Effect]:
        slices = {t.index: SliceState(t) for t in e.tasks}
        job = OwnJob(e.job_id, e.bundle_id, slices, e.deadline_ms, e.bid_window_ms, now)
        job.slice_deadline_ms = e.slice_deadline_ms
        job.escrow = sum(t.max_price for t in e.tasks)
        self.jobs[e.job_id] = job
        self.count("jobs_submitted")
        op = Escrow(e.job_id, e.bundle_id, job.escrow)
        return [LedgerSubmit(("escrow", e.job_id), op), SetTimer(("job", e.job_id), e.deadline_ms)]

    def on_ledger_done(self, e: LedgerDone, now: int) -> list[Effect]:
        kind = e.tag[0]
        if kind == "escrow":
            return self._escrowed(e, now)
        if kind == "award":
            return self._awarded(e, now)
        if kind == "claim":
            return self._claimed(e)
        return []

    def _escrowed(self, e: LedgerDone, now: int) -> list[Effect]:
        job = self.jobs.get(e.tag[1])
        if job is None:
            return []
        if e.entry_hash is None:
            return self._finish(job, now, False, f"escrow refused: {e.error}")
        job.escrow_ref = e.entry_hash
        return self._announce(job, now, list(job.slices.values()))

    def _announce(self, job: OwnJob, now: int, open_slices: list[SliceState]) -> list[Effect]:
        job.state = "bidding"
        job.bids.clear()
        job.closing_early = False
        job.bid_until_ms = now + job.bid_window_ms
        announce = JobAnnounce(
            job.job_id,
            job.bundle_id,
            job.escrow_ref,
            job.announce_round,
            job.bid_until_ms,
            job.deadline_ms,
            self.profile.software_version,
            self.profile.ezkl_version,
            tuple(s.task for s in open_slices),
            self.addrs,
        )
        self.count("announcements")
        return [
            Publish(TOPIC_JOBS, announce),
            SetTimer(("bids", job.job_id, job.announce_round), job.bid_until_ms),
            Log("job_announced", (("job", job.job_id.hex()[:16]), ("slices", len(open_slices)))),
        ]

    # -- requester: bids and awards ---------------------------------------------------------

    def on_bid(self, e: BidIn, now: int) -> list[Effect]:
        bid = e.bid
        job = self.jobs.get(bid.job_id)
        reason = self._refuse_bid(job, e, now)
        if reason:
            self.count(f"bids_refused:{reason}")
            return [Respond(BidReply(bid.job_id, False, reason))]
        assert job is not None
        prover = _account_of(e)
        job.bids[prover] = bid
        self.count("bids_accepted")
        effects: list[Effect] = [Respond(BidReply(bid.job_id, True, ""))]
        if self.profile.early_close_ms and not job.closing_early and self._covered(job):
            # Every open slice has a bidder: award shortly instead of waiting out the window
            # (bids arrive within ~100 ms; the window is for slow or far provers).
            job.closing_early = True
            at = min(job.bid_until_ms, now + self.profile.early_close_ms)
            effects.append(SetTimer(("bids", job.job_id, job.announce_round), at))
        return effects

    @staticmethod
    def _covered(job: OwnJob) -> bool:
        offered = {i for b in job.bids.values() for i in b.slices}
        return all(i in offered for i, s in job.slices.items() if s.state == "open")

    def _refuse_bid(self, job: OwnJob | None, e: BidIn, now: int) -> str:
        bid, prover = e.bid, _account_of(e)
        if job is None:
            return "unknown_job"
        if job.state != "bidding" or bid.round != job.announce_round or now > job.bid_until_ms:
            return "bidding_closed"
        if prover == self.me:
            return "own_job"
        if self.ledger.get_bonded(prover) < self.ledger.bond_min:
            return "not_bonded"
        if not set(bid.slices) <= {i for i, s in job.slices.items() if s.state == "open"}:
            return "unknown_slice"
        return ""

    def on_timer(self, e: Timer, now: int) -> list[Effect]:
        kind = e.key[0]
        if kind == "bids":
            return self._close_bids(e.key[1], e.key[2], now)
        if kind == "slice":
            return self._slice_deadline(e.key[1], e.key[2], e.key[3], now)
        if kind == "job":
            job = self.jobs.get(e.key[1])
            if job is not None and job.state not in ("done", "failed"):
                done = sum(s.state == "verified" for s in job.slices.values())
                return self._finish(
                    job, now, False, f"deadline passed: {done} of {len(job.slices)} verified"
                )
            return []
        if kind == "reannounce":
            return self._reannounce(e.key[1], now)
        return []

    def _close_bids(self, job_id: bytes, round_: int, now: int) -> list[Effect]:
        job = self.jobs.get(job_id)
        if job is None or job.state != "bidding" or job.announce_round != round_:
            return []
        job.state = "proving"
        return self._award_open(job, now)

    def _award_open(self, job: OwnJob, now: int) -> list[Effect]:
        open_slices = {i: s for i, s in job.slices.items() if s.state == "open"}
        if not open_slices:
            return []
        busy: dict[bytes, int] = {}
        for s in job.slices.values():
            if s.state in ("awarding", "awarded", "checking"):
                busy[s.prover] = busy.get(s.prover, 0) + 1
        chosen = choose_awards(
            {i: s.task for i, s in open_slices.items()},
            job.bids,
            {i: s.failed for i, s in open_slices.items()},
            busy,
            self.reputation,
            self.rng,
        )
        effects: list[Effect] = []
        for index, (prover, price) in sorted(chosen.items()):
            s = job.slices[index]
            s.state, s.prover, s.price, s.round = "awarding", prover, price, s.round + 1
            op = Award(job.job_id, index, s.round, prover, price, s.task.input_commitment)
            effects.append(LedgerSubmit(("award", job.job_id, index, s.round), op))
        if len(chosen) < len(open_slices):
            effects.append(SetTimer(("reannounce", job.job_id), now + _reannounce_delay(job)))
        return effects

    def _reannounce(self, job_id: bytes, now: int) -> list[Effect]:
        job = self.jobs.get(job_id)
        if job is None or job.state in ("done", "failed", "bidding"):
            return []
        open_slices = [s for s in job.slices.values() if s.state == "open"]
        if not open_slices:
            return []
        if job.announce_round + 1 >= ANNOUNCE_ROUNDS_MAX:
            return self._finish(job, now, False, "no prover took the remaining slices")
        job.announce_round += 1
        return self._announce(job, now, open_slices)

    def _awarded(self, e: LedgerDone, now: int) -> list[Effect]:
        _, job_id, index, round_ = e.tag
        job = self.jobs.get(job_id)
        if job is None:
            return []
        s = job.slices[index]
        if e.entry_hash is None:
            s.failed.add(s.prover)
            s.state, s.round = "open", s.round - 1
            return [Log("award_refused", (("slice", index), ("error", e.error))),
                    SetTimer(("reannounce", job_id), now + _reannounce_delay(job))]  # fmt: skip
        s.state, s.award_ref, s.awarded_ms = "awarded", e.entry_hash, now
        self.by_award[e.entry_hash] = (job_id, index)
        self.count("awards")
        bid = job.bids.get(s.prover)
        expected = bid.expected_ms if bid is not None else 0
        floor = job.slice_deadline_ms or self.profile.deadline_min_ms
        deadline = now + max(floor, int(expected * self.profile.slack))
        return [SetTimer(("slice", job_id, index, round_), min(deadline, job.deadline_ms))]

    def _slice_deadline(self, job_id: bytes, index: int, round_: int, now: int) -> list[Effect]:
        job = self.jobs.get(job_id)
        if job is None or job.state in ("done", "failed"):
            return []
        s = job.slices[index]
        if s.round != round_ or s.state not in ("awarded", "checking"):
            return []
        self.count("deadlines_missed")
        self.reputation[s.prover] = self.reputation.get(s.prover, 0) - 1
        late = Log("slice_late", (("slice", index), ("round", round_)))
        return [late, *self._reopen(job, s, now, late=True)]

    def _reopen(self, job: OwnJob, s: SliceState, now: int, *, late: bool = False) -> list[Effect]:
        """Take the slice from its prover (it loses the award) and award it again. A prover
        that cheated is never chosen for the slice again; one that was late only sits out the
        next round (it may just have been slow on a loaded machine)."""
        if job.state in ("done", "failed"):
            return []
        s.failed.discard(s.late)
        if late:
            s.late = s.prover
        s.failed.add(s.prover)
        s.state, s.statement, s.proof = "open", None, b""
        if s.round + 1 >= ROUNDS_MAX:
            return self._finish(job, now, False, f"slice {s.task.index}: too many rounds")
        return self._award_open(job, now)

    # -- requester: statements, proofs, the chain -------------------------------------------

    def on_statement(self, e: StatementIn, now: int) -> list[Effect]:
        located = self.by_award.get(e.statement.award_ref)
        if located is None:
            return []  # not one of our awards (observers do not verify others' jobs here)
        job, s = self.jobs[located[0]], self.jobs[located[0]].slices[located[1]]
        signed = compute_signed_statement(e.statement, e.prover)
        if e.prover != s.prover or s.award_ref != e.statement.award_ref:
            self.count("statements_ignored")
            return []
        if s.statement is not None and s.statement.statement != signed.statement:
            self.count("equivocations")
            evidence = FileEvidence("equivocation", s.award_ref, s.statement, other=signed)
            if job.state in ("done", "failed"):
                return [evidence]
            return [evidence, *self._reopen(job, s, now)]
        if job.state in ("done", "failed") or s.state != "awarded":
            return []
        s.state, s.statement = "checking", signed
        m = e.statement
        return [FetchProof(s.award_ref, e.peer, m.proof_hash, m.blob, m.claim)]

    def on_proof(self, e: ProofFetched, now: int) -> list[Effect]:
        located = self.by_award.get(e.award_ref)
        if located is None:
            return []
        job, s = self.jobs[located[0]], self.jobs[located[0]].slices[located[1]]
        if not self._current(job, s, e.award_ref) or s.statement is None:
            return []
        if e.proof is None:
            s.state, s.statement = "awarded", None  # try again on the next statement
            return [Log("proof_fetch_failed", (("slice", s.task.index), ("error", e.error)))]
        s.proof = e.proof
        return [CheckProof(s.award_ref, job.bundle_id, s.task.index, s.task.input_commitment,
                           s.statement, e.proof)]  # fmt: skip

    def on_checked(self, e: Checked, now: int) -> list[Effect]:
        located = self.by_award.get(e.award_ref)
        if located is None:
            return []
        job, s = self.jobs[located[0]], self.jobs[located[0]].slices[located[1]]
        if not self._current(job, s, e.award_ref) or s.statement is None:
            return []
        if e.verdict == "ok":
            s.state = "verified"
            self.count("proofs_verified")
            self.reputation[s.prover] = self.reputation.get(s.prover, 0) + 1
            if all(x.state == "verified" for x in job.slices.values()):
                job.state = "verifying"
                return [CheckChain(job.job_id)]
            return []
        if e.verdict == "undecided":
            s.state, s.statement = "awarded", None
            return [Log("proof_undecided", (("slice", s.task.index),))]
        self.count(f"proofs_bad:{e.verdict}")
        self.reputation[s.prover] = self.reputation.get(s.prover, 0) - 3
        effects: list[Effect] = []
        if e.verdict in ("invalid_proof", "wrong_input"):
            effects.append(FileEvidence(e.verdict, s.award_ref, s.statement, s.proof))
        return [*effects, *self._reopen(job, s, now)]

    @staticmethod
    def _current(job: OwnJob, s: SliceState, award_ref: bytes) -> bool:
        """A result about `award_ref` still matters: the job runs, the award is the slice's
        current one and its statement is being checked (not a revoked round's late result)."""
        return (
            job.state not in ("done", "failed")
            and s.award_ref == award_ref
            and s.state == "checking"
            and s.statement is not None
        )

    def on_chain(self, e: ChainChecked, now: int) -> list[Effect]:
        job = self.jobs.get(e.job_id)
        if job is None or job.state != "verifying":
            return []
        return self._finish(job, now, e.ok, e.reason or ("" if e.ok else "chain does not link"))

    def _finish(self, job: OwnJob, now: int, ok: bool, reason: str) -> list[Effect]:
        job.state, job.reason, job.finished_ms = ("done" if ok else "failed"), reason, now
        self.count("jobs_done" if ok else "jobs_failed")
        effects: list[Effect] = [FinishJob(job.job_id, ok, reason)]
        if job.escrow_ref:
            effects.append(LedgerSubmit(("refund", job.job_id), Refund(job.job_id)))
        while len(self.jobs) > JOBS_KNOWN_MAX:
            old = next(iter(self.jobs))
            if self.jobs[old].state not in ("done", "failed"):
                break
            del self.jobs[old]
        return effects

    # -- prover --------------------------------------------------------------------------------

    def on_job(self, e: JobSeen, now: int) -> list[Effect]:
        job = e.job
        self.seen_jobs[job.job_id] = (e.peer, job)
        while len(self.seen_jobs) > JOBS_KNOWN_MAX:
            self.seen_jobs.popitem(last=False)
        p = self.profile
        fits = [t.index for t in job.tasks if t.logrows <= p.max_logrows
                and t.memory_mb <= p.memory_mb]  # fmt: skip
        reason = ""
        if e.peer == self.me_peer:
            reason = "own_job"
        elif job.ezkl_version != p.ezkl_version:
            reason = "ezkl_version"
        elif not fits:
            reason = "nothing_fits"
        elif self.ledger.get_bonded(self.me) < self.ledger.bond_min:
            reason = "not_bonded"
        elif now >= job.bid_until_ms:
            reason = "too_late"
        capacity = min(self.free_slots(now), len(fits)) if not reason else 0
        if not reason and capacity == 0:
            reason = "no_free_slot"
        if reason:
            self.count(f"jobs_skipped:{reason}")
            return []
        until = job.bid_until_ms + AWARD_GRACE_MS
        self.reserved[job.job_id] = (capacity, until)
        bid = Bid(job.job_id, job.round, tuple(fits), capacity, min(p.price, min(
            t.max_price for t in job.tasks if t.index in fits)), self.expected_ms(job, fits),
            p.memory_mb, p.max_logrows, until)  # fmt: skip
        self.count("bids_sent")
        return [SendBid(e.peer, job.addrs, bid), SetTimer(("reserve", job.job_id), until)]

    def expected_ms(self, job: JobAnnounce, fits: list[int]) -> int:
        warm = self.expected_ms_of(max(t.logrows for t in job.tasks if t.index in fits))
        cold = job.bundle_id not in self.warm_bundles
        return int(warm * (self.profile.cold_factor if cold else 1.0))

    def on_bid_answer(self, e: BidAnswered, now: int) -> list[Effect]:
        if e.reply is None or not e.reply.ok:
            self.reserved.pop(e.job_id, None)
            self.count("bids_lost" if e.reply is None else "bids_refused_by_requester")
        return []

    def on_award(self, e: AwardSeen, now: int) -> list[Effect]:
        if e.prover != self.me:
            return self._revoked_by(e)
        if e.award_ref in self.tasks:
            return []
        seen = self.seen_jobs.get(e.job_id)
        if seen is None:
            self.count("awards_unknown_job")
            return []
        peer, job = seen
        task = next((t for t in job.tasks if t.index == e.slice_index), None)
        if task is None or task.input_commitment != e.input_commitment:
            self.count("awards_mismatch")
            return []
        slots, until = self.reserved.get(e.job_id, (0, 0))
        if slots > 0 and until > now:
            self.reserved[e.job_id] = (slots - 1, until)
        else:
            self.reserved.pop(e.job_id, None)  # expired: its slot may be promised elsewhere
            if self.free_slots(now) <= 0:
                self.count("awards_over_capacity")  # never prove more than we can
                return []
        self.tasks[e.award_ref] = ProverTask(e.award_ref, e.job_id, peer, e.slice_index, e.round)
        self.count("awards_won")
        return [Prepare(e.award_ref, peer, job.addrs, job.bundle_id, task.input_hash,
                        task.input_commitment, e.slice_index)]  # fmt: skip

    def _revoked_by(self, e: AwardSeen) -> list[Effect]:
        """An award to someone else. Once every slice of a job we bid on has gone to others,
        our reserved slots are free again. And a later round of a slice we are working on means
        our award is revoked (we were late): stop and free the slot."""
        if e.job_id in self.reserved and e.job_id in self.seen_jobs:
            awarded = self.awarded_elsewhere.setdefault(e.job_id, set())
            awarded.add(e.slice_index)
            _, job = self.seen_jobs[e.job_id]
            if {t.index for t in job.tasks} <= awarded:
                self.reserved.pop(e.job_id, None)
                self.awarded_elsewhere.pop(e.job_id, None)
                self.count("reservations_released")
        effects: list[Effect] = []
        for t in self.tasks.values():
            if (t.job_id, t.slice_index) == (e.job_id, e.slice_index) and t.round < e.round \
                    and t.state in ("preparing", "proving"):  # fmt: skip
                t.state = "failed"
                self.count("awards_revoked")
                effects.append(CancelProve(t.award_ref))
        return effects

    def on_prepared(self, e: Prepared, now: int) -> list[Effect]:
        t = self.tasks.get(e.award_ref)
        if t is None:
            return []
        if not e.ok:
            t.state = "failed"
            self.count("prepare_failed")
            return [Log("prepare_failed", (("error", e.error),))]
        t.state = "proving"
        _, job = self.seen_jobs[t.job_id]
        task = next(x for x in job.tasks if x.index == t.slice_index)
        return [Prove(e.award_ref, job.bundle_id, t.slice_index, task.input_hash)]

    def on_proven(self, e: Proven, now: int) -> list[Effect]:
        t = self.tasks.get(e.award_ref)
        if t is None or t.state != "proving":
            return []  # revoked meanwhile: no claim, no statement
        if not e.ok or e.signed is None:
            t.state = "failed"
            self.count("proofs_failed")
            return [Log("prove_failed", (("error", e.error),))]
        t.signed, t.proof = e.signed, e.proof
        self.count("proofs_made")
        self.warm_bundles.add(e.signed.statement.bundle_id)
        if self.profile.tamper:
            # The cheat publishes its statement, but its own replica would refuse the claim.
            t.state = "published"
            return [Publish(TOPIC_PROOFS, _statement_msg(e.signed, e.proof, ZERO32))]
        t.state = "claiming"
        from ledger.containers import Claim

        return [LedgerSubmit(("claim", e.award_ref), Claim(e.signed, e.proof))]

    def _claimed(self, e: LedgerDone) -> list[Effect]:
        t = self.tasks.get(e.tag[1])
        if t is None or t.signed is None:
            return []
        t.state = "published"
        claim = e.entry_hash or ZERO32
        if e.entry_hash is None:
            self.count("claims_refused")
        return [Publish(TOPIC_PROOFS, _statement_msg(t.signed, t.proof, claim))]

    def on_reserve_timer(self, e: Timer, now: int) -> list[Effect]:
        job_id = e.key[1]
        _, until = self.reserved.get(job_id, (0, 0))
        if until <= now:
            self.reserved.pop(job_id, None)
        return []


def _reannounce_delay(job: OwnJob) -> int:
    return min(REANNOUNCE_DELAY_MS_MAX, REANNOUNCE_DELAY_MS << min(job.announce_round, 8))


def _account_of(e: BidIn) -> bytes:
    from node.identity import parse_account

    return parse_account(e.peer)


def compute_signed_statement(m: ProofStatementMsg, prover: bytes) -> SignedStatement:
    """The ledger's `SignedStatement` a statement message carries (signer: the envelope's)."""
    from ledger.containers import ProofStatement

    statement = ProofStatement(
        m.award_ref, m.bundle_id, m.slice_index, m.input_commitment, m.output_commitment,
        m.instances_hash,
    )  # fmt: skip
    return SignedStatement(statement, m.proof_hash, prover, m.signature)


def _statement_msg(signed: SignedStatement, proof: bytes, claim: bytes) -> ProofStatementMsg:
    s = signed.statement
    return ProofStatementMsg(
        s.award_ref, s.bundle_id, s.slice_index, s.input_commitment, s.output_commitment,
        s.instances_hash, signed.proof_hash, signed.signature, len(proof), claim,
        hashlib.sha256(proof).digest(),
    )  # fmt: skip


def _timer(core: MarketCore, e: Event, now: int) -> list[Effect]:
    assert isinstance(e, Timer)
    if e.key[0] == "reserve":
        return core.on_reserve_timer(e, now)
    return core.on_timer(e, now)


_HANDLERS = {
    Submit: lambda c, e, n: c.on_submit(e, n),
    LedgerDone: lambda c, e, n: c.on_ledger_done(e, n),
    JobSeen: lambda c, e, n: c.on_job(e, n),
    BidIn: lambda c, e, n: c.on_bid(e, n),
    BidAnswered: lambda c, e, n: c.on_bid_answer(e, n),
    AwardSeen: lambda c, e, n: c.on_award(e, n),
    Prepared: lambda c, e, n: c.on_prepared(e, n),
    Proven: lambda c, e, n: c.on_proven(e, n),
    StatementIn: lambda c, e, n: c.on_statement(e, n),
    ProofFetched: lambda c, e, n: c.on_proof(e, n),
    Checked: lambda c, e, n: c.on_checked(e, n),
    ChainChecked: lambda c, e, n: c.on_chain(e, n),
    Timer: _timer,
}
