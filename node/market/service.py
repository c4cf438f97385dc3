"""The market in a running node: carries out the core's effects with trio, and turns gossip,
requests, ledger entries, proofs and timers into the core's events.

Everything slow runs off the event loop: EZKL proving and verification in spawned workers (the
thread only waits on them), witness computation likewise, fetches as tasks under timeouts.
Timers are one task over a heap. Every effect's failure becomes an event (the core decides),
never an exception that would take the node down.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from ledger.builders import get_award_record, sign_statement
from ledger.containers import (
    Claim,
    EquivocationEvidence,
    InvalidProofEvidence,
    LinkageEvidence,
    Slash,
)
from ledger.encoding import compute_proof_hash
from ledger.verify import is_valid_statement_signature
from node.identity import NodeIdentity, compute_peer_id
from node.logs import log_event
from node.market import events as ev
from node.market.core import MarketCore, compute_signed_statement
from node.market.work import WORK_ERRORS
from node.ratelimit import PeerLimits
from node.replica import LedgerReplica, WalletRefusal
from node.topics import PROTOCOL_BID
from node.wire import ReplayGuard, WireError, decode_envelope, encode_envelope
from node.wire.market_messages import BidReply, JobAnnounce, ProofStatementMsg
from p2p.abc import PeerId, Transport
from p2p.errors import P2PError

BID_TIMEOUT_S = 10.0
BIDS_PER_S = 10.0
PREPARE_TIMEOUT_S = 600.0
PROOF_FETCH_TIMEOUT_S = 60.0
_log = logging.getLogger("node.market")


@dataclass
class JobExtras:
    """What the service keeps beside the core's view of an own job (for GET /job, results)."""

    bundle_dir: Path
    input_path: Path
    out_dir: Path | None
    values: dict[str, list[float]]
    outputs: dict[str, dict[str, Any]]
    input_commitment: bytes
    chain: str = ""
    result_dir: str = ""
    finished: trio.Event = field(default_factory=trio.Event)


class MarketService:
    def __init__(
        self,
        core: MarketCore,
        replica: LedgerReplica,
        identity: NodeIdentity,
        transport: Transport,
        *,
        now_ms: Callable[[], int],
        network_id: bytes,
        work: Any,  # node.market.work.MarketWork: fetch, prove, verify, results (the slow parts)
    ) -> None:
        self.core = core
        self.replica = replica
        self.identity = identity
        self.transport = transport
        self.network_id = network_id
        self.work = work
        self._now_ms = now_ms
        self._nursery: trio.Nursery | None = None
        self._timers: list[tuple[int, int, tuple[Any, ...]]] = []
        self._timer_seq = 0
        self._timers_changed = trio.Event()
        self._guard = ReplayGuard(entries_max=50_000)
        self._limits = PeerLimits(BIDS_PER_S, 1 << 30)  # per peer: bid requests per second
        self._proving: dict[bytes, trio.CancelScope] = {}
        self.extras: dict[bytes, JobExtras] = {}
        self.counters: dict[str, int] = {}

    # -- lifecycle and dispatch ----------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._timer_loop)
            task_status.started()

    def dispatch(self, event: ev.Event) -> list[ev.Effect]:
        """Feed one event to the core and carry out its effects (returns them, for Respond)."""
        effects = self.core.handle(event, self._now_ms())
        for effect in effects:
            self._execute(effect)
        return effects

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._nursery is not None, "market service not running"
        self._nursery.start_soon(fn, *args)

    def _execute(self, effect: ev.Effect) -> None:
        if isinstance(effect, ev.Publish):
            self._spawn(self._publish, effect.topic, effect.body)
        elif isinstance(effect, ev.SendBid):
            self._spawn(self._send_bid, effect)
        elif isinstance(effect, ev.LedgerSubmit):
            self._spawn(self._ledger_submit, effect)
        elif isinstance(effect, ev.Prepare):
            self._spawn(self._prepare, effect)
        elif isinstance(effect, ev.Prove):
            self._spawn(self._prove, effect)
        elif isinstance(effect, ev.FetchProof):
            self._spawn(self._fetch_proof, effect)
        elif isinstance(effect, ev.CheckProof):
            self._spawn(self._check_proof, effect)
        elif isinstance(effect, ev.CheckChain):
            self._spawn(self._check_chain, effect)
        elif isinstance(effect, ev.FileEvidence):
            self._spawn(self._file_evidence, effect)
        elif isinstance(effect, ev.FinishJob):
            self._finish(effect)
        elif isinstance(effect, ev.CancelProve):
            scope = self._proving.get(effect.award_ref)
            if scope is not None:
                scope.cancel()
        elif isinstance(effect, ev.SetTimer):
            self._set_timer(effect.key, effect.at_ms)
        elif isinstance(effect, ev.Log):
            log_event(_log, effect.event, **dict(effect.fields))
        # Respond is returned to the request handler by `dispatch`.

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # -- timers --------------------------------------------------------------------------------

    def _set_timer(self, key: tuple[Any, ...], at_ms: int) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (at_ms, self._timer_seq, key))
        self._timers_changed.set()

    async def _timer_loop(self) -> None:
        while True:
            now = self._now_ms()
            while self._timers and self._timers[0][0] <= now:
                _, _, key = heapq.heappop(self._timers)
                self.dispatch(ev.Timer(key))
            wait_s = (self._timers[0][0] - now) / 1000 if self._timers else 3600.0
            self._timers_changed = trio.Event()
            with trio.move_on_after(max(0.0, wait_s)):
                await self._timers_changed.wait()

    # -- inbound -------------------------------------------------------------------------------

    def on_gossip(self, signer: bytes, body: Any) -> None:
        peer = compute_peer_id(signer)
        if isinstance(body, JobAnnounce):
            self.dispatch(ev.JobSeen(peer, body))
        elif isinstance(body, ProofStatementMsg):
            signed = compute_signed_statement(body, signer)
            if not is_valid_statement_signature(signed, self.replica.env):
                self._count("statements_bad_signature")
                return
            if body.claim != bytes(32):
                self.work.fetch_entry_soon(PeerId(peer), body.claim)
            self.dispatch(ev.StatementIn(peer, signer, body))

    def on_entry_placed(self, entry: Any) -> None:
        from ledger.containers import Award

        op = entry.op
        if isinstance(op, Award):
            seen = ev.AwardSeen(entry.hash, entry.header.account, op.job_id, op.slice_index,
                                op.round, op.prover, op.price, op.input_commitment)  # fmt: skip
            self.dispatch(seen)

    async def handle_bid(self, peer: PeerId, data: bytes) -> bytes:
        await trio.lowlevel.checkpoint()
        from node.wire.market_messages import Bid

        reason = ""
        if not self._limits.admit(peer, trio.current_time()):
            self._count("bids_refused:rate_limited")
            reply = BidReply(bytes(32), False, "rate_limited")
            return encode_envelope(reply, self.identity, self._now_ms(), network_id=self.network_id)
        try:
            envelope = decode_envelope(data, self._now_ms(), network_id=self.network_id)
        except WireError as exc:
            reason = exc.reason.value
        else:
            if compute_peer_id(envelope.signer) != peer:
                reason = "signer_mismatch"
            elif not isinstance(envelope.body, Bid):
                reason = "wrong_type"
            else:
                try:
                    self._guard.check_and_remember(envelope, self._now_ms())
                except WireError as exc:
                    reason = exc.reason.value
        if reason:
            self._count(f"bids_refused:{reason}")
            reply = BidReply(bytes(32), False, reason[:64])
        else:
            effects = self.dispatch(ev.BidIn(peer, envelope.body))
            reply = next(e.body for e in effects if isinstance(e, ev.Respond))
        return encode_envelope(reply, self.identity, self._now_ms(), network_id=self.network_id)

    # -- effects -------------------------------------------------------------------------------

    async def _publish(self, topic: str, body: Any) -> None:
        data = encode_envelope(body, self.identity, self._now_ms(), network_id=self.network_id)
        try:
            await self.transport.publish(topic, data)
        except P2PError as exc:
            self._count("publish_failed")
            log_event(_log, "market_publish_failed", logging.WARNING, topic=topic, error=str(exc))

    async def _send_bid(self, effect: ev.SendBid) -> None:
        reply: BidReply | None = None
        try:
            await self.work.ensure_connected(PeerId(effect.peer), effect.addrs)
            data = encode_envelope(effect.bid, self.identity, self._now_ms(),
                                   network_id=self.network_id)  # fmt: skip
            raw = await self.transport.request(PeerId(effect.peer), PROTOCOL_BID, data,
                                               BID_TIMEOUT_S)  # fmt: skip
            envelope = decode_envelope(raw, self._now_ms(), network_id=self.network_id)
            if isinstance(envelope.body, BidReply) and envelope.signer_peer_id == effect.peer:
                reply = envelope.body
        except (P2PError, WireError) as exc:
            log_event(_log, "bid_failed", logging.INFO, peer=effect.peer, error=str(exc))
        self.dispatch(ev.BidAnswered(effect.bid.job_id, reply))

    async def _ledger_submit(self, effect: ev.LedgerSubmit) -> None:
        op = effect.op
        if isinstance(op, Claim):
            # The dry run verifies the proof: do the EZKL work off the loop first (cached).
            await self.work.prewarm(op.statement.statement, op.proof)
        try:
            result = self.replica.submit(op)
        except WalletRefusal as exc:
            self.dispatch(ev.LedgerDone(effect.tag, None, str(exc)))
            return
        self.dispatch(ev.LedgerDone(effect.tag, bytes.fromhex(result["hash"])))

    async def _prepare(self, effect: ev.Prepare) -> None:
        t0 = trio.current_time()
        log_event(_log, "award_won", slice=effect.slice_index, award=effect.award_ref.hex()[:16])
        try:
            with trio.fail_after(PREPARE_TIMEOUT_S):
                await self.work.prepare(effect)
        except WORK_ERRORS as exc:  # any failure to prepare is reported to the core
            self.dispatch(ev.Prepared(effect.award_ref, False, f"{type(exc).__name__}: {exc}"))
            return
        log_event(_log, "award_prepared", award=effect.award_ref.hex()[:16],
                  seconds=round(trio.current_time() - t0, 2))  # fmt: skip
        self.dispatch(ev.Prepared(effect.award_ref, True))

    async def _prove(self, effect: ev.Prove) -> None:
        with trio.CancelScope() as scope:
            self._proving[effect.award_ref] = scope
            try:
                proof, prove_s = await self.work.prove(effect, tamper=self.core.profile.tamper)
                statement = self.work.statement_of(effect, proof)
                signed = sign_statement(self.identity, statement, proof)
            except WORK_ERRORS as exc:  # reported to the core as a failed proof
                error = f"{type(exc).__name__}: {exc}"
                self.dispatch(ev.Proven(effect.award_ref, False, error=error))
                return
            finally:
                self._proving.pop(effect.award_ref, None)
            self.work.blobs.put(proof)
            log_event(_log, "slice_proven", award=effect.award_ref.hex()[:16],
                      slice=effect.slice_index, seconds=round(prove_s, 2))  # fmt: skip
            self.dispatch(ev.Proven(effect.award_ref, True, signed, proof, prove_s))

    async def _fetch_proof(self, effect: ev.FetchProof) -> None:
        try:
            with trio.fail_after(PROOF_FETCH_TIMEOUT_S):
                proof = await self.work.fetch_proof(PeerId(effect.peer), effect.blob, effect.claim)
        except WORK_ERRORS as exc:  # the core retries on the next statement
            self.dispatch(ev.ProofFetched(effect.award_ref, None, f"{type(exc).__name__}: {exc}"))
            return
        if compute_proof_hash(proof) != effect.proof_hash:
            self.dispatch(ev.ProofFetched(effect.award_ref, None, "proof hash mismatch"))
            return
        self.dispatch(ev.ProofFetched(effect.award_ref, proof))

    async def _check_proof(self, effect: ev.CheckProof) -> None:
        verdict = await self.work.check_proof(effect)
        self.dispatch(ev.Checked(effect.award_ref, verdict))

    async def _check_chain(self, effect: ev.CheckChain) -> None:
        job = self.core.jobs[effect.job_id]
        extras = self.extras[effect.job_id]
        ok, reason = await self.work.check_chain(job, extras)
        extras.chain = "ok" if ok else reason
        if ok and extras.out_dir is not None:
            try:
                extras.result_dir = str(self.work.write_result(job, extras, self.paid(job.job_id)))
            except OSError as exc:
                ok, reason = False, f"cannot write the result: {exc}"
        self.dispatch(ev.ChainChecked(effect.job_id, ok, reason))

    async def _file_evidence(self, effect: ev.FileEvidence) -> None:
        entry = self.replica.lattice.get_entry(effect.award_ref)
        if entry is None:
            return
        record = get_award_record(entry)
        evidence: Any
        if effect.kind == "invalid_proof":
            evidence = InvalidProofEvidence(record, effect.signed, effect.proof)
            await self.work.prewarm(effect.signed.statement, effect.proof)
        elif effect.kind == "wrong_input":
            evidence = LinkageEvidence(record, effect.signed)
        else:
            assert effect.other is not None
            evidence = EquivocationEvidence(record, effect.signed, effect.other)
        try:
            result = self.replica.submit(Slash(evidence))
        except WalletRefusal as exc:
            log_event(_log, "evidence_refused", logging.WARNING, kind=effect.kind, error=str(exc))
            return
        self._count(f"evidence_filed:{effect.kind}")
        log_event(_log, "evidence_filed", logging.WARNING, kind=effect.kind, entry=result["hash"])

    def _finish(self, effect: ev.FinishJob) -> None:
        extras = self.extras.get(effect.job_id)
        if extras is not None:
            extras.finished.set()
        log_event(_log, "job_finished", job=effect.job_id.hex()[:16], ok=effect.ok,
                  reason=effect.reason)  # fmt: skip

    # -- reading -------------------------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        core = self.core
        states: dict[str, int] = {}
        for job in core.jobs.values():
            states[job.state] = states.get(job.state, 0) + 1
        return {
            "free_slots": core.free_slots(self._now_ms()),
            "slots": core.profile.slots,
            "jobs_by_state": states,
            "proving": sum(t.state == "proving" for t in core.tasks.values()),
            "core": dict(core.counters),
            "service": dict(self.counters),
            "fetch": self.work.fetch.statistics(),
            "pool": self.work.pool.statistics() if self.work.pool is not None else {},
        }

    def paid(self, job_id: bytes) -> dict[str, int]:
        escrow = self.replica.lattice.state.escrows.get((self.identity.public_key, job_id))
        if escrow is None:
            return {"escrow": 0, "paid": 0, "refunded": 0}
        return {"escrow": escrow.locked, "paid": escrow.paid, "refunded": escrow.refunded}

    def job_doc(self, job_id: bytes) -> dict[str, Any]:
        job = self.core.jobs[job_id]
        extras = self.extras.get(job_id)
        now = self._now_ms()
        end = job.finished_ms or now
        slices = [
            {
                "index": s.task.index,
                "state": s.state,
                "prover": compute_peer_id(s.prover) if s.prover else "",
                "round": max(0, s.round),
                "price": s.price,
                "proof_hash": s.statement.proof_hash.hex() if s.statement else "",
            }
            for _, s in sorted(job.slices.items())
        ]
        return {
            "job_id": job_id.hex(),
            "bundle_id": job.bundle_id.hex(),
            "state": job.state if job.state != "escrowing" else "announced",
            "reason": job.reason,
            "elapsed_s": round((end - job.created_ms) / 1000, 2),
            "slices": slices,
            **self.paid(job_id),
            "outputs": extras.outputs if extras and job.state == "done" else {},
            "chain": extras.chain if extras else "",
            "result_dir": extras.result_dir if extras else "",
        }


def compute_job_id(
    requester: bytes, bundle_id: bytes, input_commitment: bytes, nonce: int
) -> bytes:
    data = b"dsperse-node/job/v1\x00" + requester + bundle_id + input_commitment
    return hashlib.sha256(data + nonce.to_bytes(8, "big")).digest()


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
