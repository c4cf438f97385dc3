"""The simnet's ledger workload: every node's replica gets the same signed history, each in its
own seeded order with duplicates, and must reach the same state root, conserve supply and reopen.

The history: a treasury (seeded key, the network's genesis account) allocates to every node; nodes
bond stake, transfer to each other and unbond; one byzantine node forks its own chain (two signed
entries at one sequence number) and an honest node files the fork as slash evidence. Entries are
signed with the nodes' real identity keys. Gossip-based anti-entropy between replicas arrives with
the market issue; here the supervisor hands each replica the entries directly.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass
from pathlib import Path

from ledger.accessors import is_conserved, is_non_negative
from ledger.builders import ChainWriter
from ledger.config import mainnet_config
from ledger.containers import Bond, Entry, ForkEvidence, GenesisAllocation, Slash, Transfer, Unbond
from ledger.env import LedgerEnv
from ledger.store import open_data_dir_store
from node.identity import KEY_FILE_NAME, Ed25519Scheme, NodeIdentity, load_identity
from node.proof_verifier import UndecidedVerifier

GENESIS_PER_NODE = 1_000_000
BATCH = 64


@dataclass
class LedgerWorkloadResult:
    entries: int
    replicas: list[tuple[bytes, int, bool]]  # (state root, entries stored, supply conserved)
    apply_s_max: float
    reopen_ok: bool
    offences: int = 0  # slashes applied (on the last replica; all replicas agree by root)
    cheat_slashed: bool = False  # the forking node lost stake
    honest_slashed: int = 0  # honest nodes that lost stake (must be 0)


def build_history(
    identities: list[NodeIdentity], treasury: NodeIdentity, rng: random.Random, count: int
) -> list[Entry]:
    """A signed history of about `count` entries across the nodes' chains."""
    entries: list[Entry] = []
    bank = ChainWriter(treasury)
    for ident in identities:
        entries.append(bank.append(GenesisAllocation(ident.public_key, GENESIS_PER_NODE)))
    writers = [ChainWriter(ident) for ident in identities]
    for w in writers:
        w.observe_height(bank.height)
        entries.append(w.append(Bond(GENESIS_PER_NODE // 10)))
    while len(entries) < count:
        w = rng.choice(writers)
        other = rng.choice(identities)
        roll = rng.random()
        if roll < 0.8 and other.public_key != w.account:
            entries.append(w.append(Transfer(other.public_key, rng.randrange(1, 1000))))
        elif roll < 0.9:
            entries.append(w.append(Bond(rng.randrange(1, 1000))))
        else:
            entries.append(w.append(Unbond(rng.randrange(1, 100))))
        w.observe_height(max(x.height for x in writers))
    if len(writers) >= 2:
        entries += _fork_and_report(writers[-1], writers[0])
    return entries


def _fork_and_report(cheat: ChainWriter, reporter: ChainWriter) -> list[Entry]:
    """The cheat signs two different entries at the same sequence number; the reporter proves it."""
    seq, head, height = cheat.seq, cheat.head, cheat.height
    first = cheat.append(Transfer(reporter.account, 1))
    cheat.seq, cheat.head, cheat.height = seq, head, height
    second = cheat.append(Transfer(reporter.account, 2))
    reporter.observe_height(max(first.header.height, second.header.height))
    evidence = Slash(ForkEvidence(first.header, second.header))
    return [first, second, reporter.append(evidence)]


def run_ledger_workload(data_dirs: list[Path], seed: int, count: int) -> LedgerWorkloadResult:
    rng = random.Random(seed)
    identities = [load_identity(d / KEY_FILE_NAME) for d in data_dirs]
    treasury = NodeIdentity.from_seed(hashlib.sha256(b"simnet-treasury" + bytes(8)).digest())
    # This workload files no claims or invalid-proof evidence, so no proof reaches the verifier;
    # were one to, a replica without bundles honestly answers "cannot decide" (None): the entry
    # is ignored for now, never accepted unchecked (claims arrive with the market issue).
    env = LedgerEnv(mainnet_config(treasury.public_key), Ed25519Scheme(), UndecidedVerifier())
    history = build_history(identities, treasury, rng, count)
    replicas: list[tuple[bytes, int, bool]] = []
    apply_s_max = 0.0
    slashed: set[bytes] = set()
    offences = 0
    for data_dir in data_dirs:
        order = history + rng.sample(history, len(history) // 10)  # duplicates arrive too
        rng.shuffle(order)
        t0 = time.monotonic()
        store = open_data_dir_store(data_dir, env)
        try:
            for i in range(0, len(order), BATCH):
                store.add_many(order[i : i + BATCH])
            state = store.lattice.state
            root = store.checkpoint()
            replicas.append((root, store.count, is_conserved(state) and is_non_negative(state)))
            slashed = {a for a, acct in state.accounts.items() if acct.slashed > 0}
            offences = len(state.offences)
        finally:
            store.close(checkpoint=False)
        apply_s_max = max(apply_s_max, time.monotonic() - t0)
    reopen_ok = True
    for data_dir, (root, _, _) in zip(data_dirs, replicas, strict=True):
        store = open_data_dir_store(data_dir, env)
        try:
            reopen_ok &= store.verify() == root
        finally:
            store.close(checkpoint=False)
    cheat = identities[-1].public_key
    return LedgerWorkloadResult(
        len(history),
        replicas,
        apply_s_max,
        reopen_ok,
        offences=offences,
        cheat_slashed=cheat in slashed,
        honest_slashed=len(slashed - {cheat}),
    )
