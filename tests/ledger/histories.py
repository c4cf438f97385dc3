"""Random ledger histories with honest and byzantine accounts, for the property tests.

`build_history(seed, steps)` drives a `World` with a seeded `random.Random`: honest accounts
transfer, bond, unbond, withdraw, escrow, award, claim, refund and report offences; byzantine
accounts also overdraw, fork their own chain (publishing both branches), equivocate, publish
invalid proofs and prove tampered inputs. About a third of entries are made without observing
the newest height (concurrent entries), so arrival order and canonical order differ.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

from ledger.builders import build_entry, sign_statement
from ledger.containers import (
    Award,
    Bond,
    Claim,
    Entry,
    EquivocationEvidence,
    Escrow,
    Evidence,
    ForkEvidence,
    GenesisAllocation,
    GenesisBond,
    InvalidProofEvidence,
    LinkageEvidence,
    Refund,
    Slash,
    Transfer,
    Unbond,
    Withdraw,
)
from ledger.env import LedgerEnv
from ledger.errors import Reason
from ledger.verify import compute_offence
from tests.ledger.helpers import World, award_record, h32, identity

HONEST = tuple(f"honest{i}" for i in range(6))
BYZANTINE = ("byz0", "byz1")
BUNDLE = h32("bundle")


@dataclass
class History:
    world: World
    entries: list[Entry] = field(default_factory=list)
    offences: dict[bytes, int] = field(default_factory=dict)  # offence id -> reports made
    awards: list[Entry] = field(default_factory=list)
    framing: list[tuple[Entry, Reason]] = field(default_factory=list)  # must be refused

    @property
    def env(self) -> LedgerEnv:
        return self.world.env


def build_history(env: LedgerEnv, seed: int, steps: int) -> History:
    rng = random.Random(seed)
    hist = History(World(env))
    w = hist.world

    def emit(name: str, op: object, observe: bool | None = None) -> Entry:
        seen = rng.random() < 0.7 if observe is None else observe
        entry = w.make(name, op, observe=seen)  # type: ignore[arg-type]
        hist.entries.append(entry)
        return entry

    def report(evidence: Evidence) -> None:
        offence = compute_offence(evidence)
        for _ in range(rng.choice((1, 1, 2, 3))):
            reporter = rng.choice([h for h in HONEST if w.key(h) != offence.offender])
            emit(reporter, Slash(evidence), observe=rng.random() < 0.5)
            hist.offences[offence.offence_id] = hist.offences.get(offence.offence_id, 0) + 1

    everyone = HONEST + BYZANTINE
    for name in everyone:
        emit("genesis", GenesisAllocation(w.key(name), rng.randrange(500, 2000)), observe=True)
    for name in BYZANTINE:
        # Stake minted at genesis is slashable like any other (no rng draw: seeds keep meaning).
        emit("genesis", GenesisBond(w.key(name), 100), observe=True)
    for name in everyone:
        emit(name, Bond(rng.randrange(100, 400)), observe=True)
    jobs: list[tuple[str, bytes]] = []
    for step in range(steps):
        actor = rng.choice(everyone)
        byz = actor in BYZANTINE
        kind = rng.randrange(12)
        if kind <= 2:
            amount = rng.randrange(1, 3000 if byz else 200)
            emit(actor, Transfer(w.key(rng.choice([n for n in everyone if n != actor])), amount))
        elif kind == 3:
            emit(actor, rng.choice((Bond, Unbond))(rng.randrange(1, 200)))
        elif kind == 4:
            emit(actor, Withdraw())
        elif kind == 5:
            job = h32("job", seed, step)
            jobs.append((actor, job))
            emit(actor, Escrow(job, BUNDLE, rng.randrange(50, 300)))
        elif kind == 6 and jobs:
            requester, job = rng.choice(jobs)
            prover = rng.choice(everyone)
            op = Award(
                job,
                rng.randrange(3),
                rng.choice((0, 0, 1)),
                w.key(prover),
                rng.randrange(1, 60),
                h32("input", job, 0),
            )
            hist.awards.append(emit(requester, op))
        elif kind in (7, 8) and hist.awards:
            award = rng.choice(hist.awards)
            assert isinstance(award.op, Award)
            prover = next(n for n in everyone if w.key(n) == award.op.prover)
            if prover in BYZANTINE and kind == 8:
                misbehave(hist, rng, prover, award, report)
            else:
                statement, proof = w.statement(prover, award)
                claim = emit(prover, Claim(statement, proof), observe=True)
                if prover in HONEST:
                    frame(hist, rng, rng.choice(BYZANTINE), award, claim)
        elif kind == 9 and jobs:
            requester, job = rng.choice(jobs)
            emit(requester, Refund(job))
        elif kind == 10 and byz:
            fork_chain(hist, rng, actor, report)
    return hist


def misbehave(hist: History, rng: random.Random, prover: str, award: Entry, report: object) -> None:
    w = hist.world
    record = award_record(award)
    choice = rng.randrange(3)
    if choice == 0:
        s1, _ = w.statement(prover, award, output=b"one")
        s2, _ = w.statement(prover, award, output=b"two")
        evidence: Evidence = EquivocationEvidence(record, s1, s2)
    elif choice == 1:
        good, _ = w.statement(prover, award)
        bad = sign_statement(identity(prover), good.statement, b"bogus proof")
        evidence = InvalidProofEvidence(record, bad, b"bogus proof")
    else:
        tampered, _ = w.statement(prover, award, input_commitment=h32("tampered"))
        evidence = LinkageEvidence(record, tampered)
    report(evidence)  # type: ignore[operator]


def frame(hist: History, rng: random.Random, liar: str, award: Entry, claim: Entry) -> None:
    """A byzantine reporter tries to slash an honest prover with doctored evidence."""
    w = hist.world
    assert isinstance(claim.op, Claim)
    honest = claim.op.statement
    record = award_record(award)
    choice = rng.randrange(4)
    if choice == 0:  # a "fork": the honest claim's header and a doctored copy
        forged = dataclasses.replace(claim.header, height=claim.header.height + 1)
        evidence: Evidence = ForkEvidence(claim.header, forged)
        reason = Reason.EVIDENCE_BAD_SIGNATURE
    elif choice == 1:  # "equivocation": the honest statement and a doctored copy
        other = dataclasses.replace(
            honest, statement=dataclasses.replace(honest.statement, output_commitment=h32("x"))
        )
        evidence = EquivocationEvidence(record, honest, other)
        reason = Reason.EVIDENCE_BAD_SIGNATURE
    elif choice == 2:  # "invalid proof": the honest statement with other proof bytes
        evidence = InvalidProofEvidence(record, honest, b"not the proof it signed")
        reason = Reason.PROOF_HASH_MISMATCH
    else:  # "linkage": the honest statement matches its award
        evidence = LinkageEvidence(record, honest)
        reason = Reason.EVIDENCE_COMMITMENT_MATCHES
    writer = w.writer(liar)
    entry = build_entry(identity(liar), writer.seq, writer.head, writer.height + 1, Slash(evidence))
    hist.framing.append((entry, reason))


def fork_chain(hist: History, rng: random.Random, name: str, report: object) -> None:
    """Publish two entries at one seq, then continue on one of them."""
    w = hist.world
    writer = w.writer(name)
    signer = identity(name)
    height = writer.height + 1
    a = build_entry(signer, writer.seq, writer.head, height, Transfer(w.key("honest0"), 1))
    b = build_entry(signer, writer.seq, writer.head, height + 1, Transfer(w.key("honest1"), 2))
    hist.entries += [a, b]
    w.log += [a, b]
    chosen = rng.choice((a, b))
    writer.seq, writer.head, writer.height = writer.seq + 1, chosen.hash, chosen.header.height
    report(ForkEvidence(a.header, b.header))  # type: ignore[operator]
