"""The simnet's ledger workload, played through the nodes like any user would: a genesis written
by the supervisor, seeded wallet operations sent to the nodes' control APIs, one byzantine node
that forks its own chain, and checks that read every replica back through the nodes.

The supervisor never opens a node's SQLite file. Nodes replicate by gossip and anti-entropy; a
node SIGKILLed right after its write was acknowledged must still hold that entry when it comes
back, and so must every other replica (0 acknowledged entries lost).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.errors import NodeError
from node.genesis import Genesis, build_genesis, install_genesis, write_genesis
from node.identity import NodeIdentity
from simnet.procs import NodeProcess

GENESIS_PER_NODE = 1_000_000
GENESIS_BOND = 10_000
BOND_MIN = 100
HAS_BATCH = 4096


def write_network_genesis(
    identities: list[NodeIdentity], data_dirs: list[Path], path: Path
) -> Genesis:
    """Balances for every node, a bond for every node, installed in every data dir."""
    genesis = build_genesis(
        [(i.public_key, GENESIS_PER_NODE) for i in identities],
        [(i.public_key, GENESIS_BOND) for i in identities],
        {"award_bond_min": BOND_MIN, "unbond_delay_heights": 8},
    )
    write_genesis(genesis, path)
    for data_dir in data_dirs:
        install_genesis(data_dir, path)
    return genesis


@dataclass
class LedgerWorkloadResult:
    writes_ok: int = 0
    writes_refused: int = 0
    acknowledged: list[str] = field(default_factory=list)  # entry hashes the nodes acked
    converge_s: float | None = None
    roots: dict[str, str | None] = field(default_factory=dict)
    entries_lost: int = -1  # acknowledged entries missing from some replica (-1: not checked)
    offences: int = 0
    cheat_slashed: bool = False
    honest_slashed: int = 0
    conserved: bool = False
    kill_ok: bool = False
    details: list[str] = field(default_factory=list)


def _write(node: NodeProcess, path: str, body: dict[str, Any], result: LedgerWorkloadResult) -> str:
    try:
        status, doc = node.call("POST", path, body)
    except NodeError as exc:
        result.writes_refused += 1
        result.details.append(f"{node.name} {path}: {exc}")
        return ""
    if status != 200:
        result.writes_refused += 1  # e.g. insufficient balance: a refusal writes nothing
        return ""
    result.writes_ok += 1
    result.acknowledged.append(doc["hash"])
    return str(doc["hash"])


def play(
    nodes: list[NodeProcess], rng: random.Random, count: int, result: LedgerWorkloadResult
) -> None:
    """`count` seeded wallet operations at random nodes (transfers, bonds, unbonds)."""
    for _ in range(count):
        node = rng.choice(nodes)
        roll = rng.random()
        if roll < 0.7:
            other = rng.choice([n for n in nodes if n is not node])
            body = {"to": other.peer_id, "amount": rng.randrange(1, 1000)}
            _write(node, "/wallet/transfer", body, result)
        elif roll < 0.9:
            _write(node, "/wallet/bond", {"amount": rng.randrange(BOND_MIN, 2000)}, result)
        else:
            _write(node, "/wallet/unbond", {"amount": rng.randrange(1, 100)}, result)


def wait_converged(
    nodes: list[NodeProcess], timeout_s: float, idle: Callable[[float], None]
) -> float | None:
    """Seconds until every replica reports the same state root, or None on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        roots = {(n.ledger() or {}).get("state_root") for n in nodes}
        if len(roots) == 1 and None not in roots:
            return time.monotonic() - t0
        idle(0.25)
    return None


def count_lost(nodes: list[NodeProcess], hashes: list[str]) -> int:
    """Acknowledged entries that some replica does not hold (asked through the nodes)."""
    lost: set[str] = set()
    for node in nodes:
        for i in range(0, len(hashes), HAS_BATCH):
            status, doc = node.call("POST", "/ledger/has", {"hashes": hashes[i : i + HAS_BATCH]})
            if status != 200:
                return -1
            lost.update(doc["missing"])
    return len(lost)


def read_outcome(
    nodes: list[NodeProcess], cheat: NodeProcess, result: LedgerWorkloadResult
) -> None:
    docs = {n.name: n.ledger() for n in nodes}
    result.roots = {name: (d or {}).get("state_root") for name, d in docs.items()}
    doc = docs[nodes[0].name]
    if doc is None:
        return
    result.offences = len(doc["offences"])
    offenders = {o["offender"] for o in doc["offences"]}
    result.cheat_slashed = cheat.peer_id in offenders
    slashed = {peer for peer, a in doc["accounts"].items() if a["slashed"] > 0}
    result.honest_slashed = len(slashed - {cheat.peer_id})
    result.conserved = all(bool((d or {}).get("conserved")) for d in docs.values())
