"""Integration: 6 real `dsperse-node run` processes from one genesis replicate the ledger.

One network serves the module's tests, in order: wallet transfers and bonds reach every replica
(control API and `ledger root` agree); a node SIGKILLed right after its wallet command returned
restarts with the entry, and every replica holds it; a node kept offline while 200 entries are
made catches up by anti-entropy alone; a node whose chain is forked (a test helper signs a second
entry at one seq with its key) is slashed exactly once on every replica; a corrupt ledger.sqlite
stops a node at start with a one-line error, and `run --resync` rebuilds it from peers.
Waits poll the nodes' control APIs against a deadline (the processes share no events with us).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from ledger.builders import build_entry
from ledger.containers import Bond
from ledger.env import LedgerEnv
from ledger.store import LEDGER_FILE_NAME, LedgerStore
from node.genesis import build_genesis, install_genesis, write_genesis
from node.identity import KEY_FILE_NAME, Ed25519Scheme, load_identity
from node.proof_verifier import UndecidedVerifier
from simnet.procs import NodeProcess, init_data_dir
from tests.node.proc_helpers import cli as run_cli
from tests.node.proc_helpers import wait_for

pytestmark = pytest.mark.slow
NODES = 6
PER_NODE = 1_000_000
START_TIMEOUT_S = 120.0
CONVERGE_TIMEOUT_S = 60.0
cli = partial(run_cli, check=True)


@dataclass
class Net:
    root: Path
    genesis_path: Path
    nodes: list[NodeProcess]

    def start(self, node: NodeProcess) -> None:
        others = [n for n in self.nodes if n is not node and n.is_running()]
        node.start([n.bootstrap_addr() for n in others[:2]])
        assert node.wait_ready(START_TIMEOUT_S), (node.data_dir / "node.log").read_text()[-3000:]

    def running(self) -> list[NodeProcess]:
        return [n for n in self.nodes if n.is_running()]

    def roots(self, nodes: list[NodeProcess] | None = None) -> list[str | None]:
        out = []
        for node in nodes or self.running():
            doc = node.ledger()
            out.append(doc["state_root"] if doc else None)
        return out

    def converged(self, nodes: list[NodeProcess] | None = None) -> bool:
        roots = self.roots(nodes)
        return None not in roots and len(set(roots)) == 1

    def holders(self, entry_hash: str) -> int:
        n = 0
        for node in self.running():
            status, _ = node.call(
                "POST", "/ledger/wait", {"hash": entry_hash, "peers": 0, "timeout_s": 1}
            )
            n += status == 200
        return n


def dump(path: Path) -> list[str]:
    """The database's logical content (SQLite may fold its WAL into the file on open)."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT * FROM entries ORDER BY id").fetchall()
        return [repr(r) for r in rows + conn.execute("SELECT * FROM meta").fetchall()]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    root = tmp_path_factory.mktemp("ledger-net")
    dirs = [root / f"node{i}" for i in range(NODES)]
    idents = [init_data_dir(d) for d in dirs]
    genesis = build_genesis(
        [(i.public_key, PER_NODE) for i in idents],
        [(i.public_key, 1000) for i in idents[:2]],
        {"award_bond_min": 100, "unbond_delay_heights": 4},
    )
    genesis_path = root / "genesis.json"
    write_genesis(genesis, genesis_path)
    for d in dirs:
        install_genesis(d, genesis_path)
    nodes = [NodeProcess(f"node{i}", d, advert_interval_s=2.0) for i, d in enumerate(dirs)]
    net = Net(root, genesis_path, nodes)
    try:
        nodes[0].start([])
        assert nodes[0].wait_ready(START_TIMEOUT_S)
        for node in nodes[1:]:
            node.start([nodes[0].bootstrap_addr()])
        for node in nodes[1:]:
            assert node.wait_ready(START_TIMEOUT_S)
        # Every replica may sign once it has synced with a peer (a new replica never forks).
        wait_for(lambda: all((n.ledger() or {}).get("writable") for n in nodes), 60, "writable")
        yield net
    finally:
        for node in nodes:
            node.stop()


def wallet(node: NodeProcess, *args: str) -> dict[str, Any]:
    proc = cli("wallet", *args, "--data-dir", str(node.data_dir), "--json")
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def test_wallet_entries_reach_every_replica_and_all_roots_agree(net: Net) -> None:
    a, b, c = net.nodes[:3]
    sent = wallet(a, "transfer", b.peer_id, "500", "--wait-peers", "3")
    assert len(sent["entry"]["hash"]) == 64 and sent["wait"]["ok"]
    wallet(b, "bond", "2000")
    wallet(c, "transfer", a.peer_id, "7")
    refused = cli("wallet", "bond", "10", "--data-dir", str(c.data_dir), check=False)
    assert refused.returncode == 1 and "below the network minimum" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    wait_for(net.converged, CONVERGE_TIMEOUT_S, "equal state roots")
    # `ledger root` reads each running node's replica file (a snapshot) and agrees.
    api_root = net.roots()[0]
    for node in net.nodes:
        assert cli("ledger", "root", "--data-dir", str(node.data_dir)).stdout.strip() == api_root
    balance = wallet(b, "balance")
    assert balance["balance"] == PER_NODE + 500 - 2000 and balance["bonded"] == 1000 + 2000


def test_an_entry_acknowledged_before_sigkill_is_on_every_replica(net: Net) -> None:
    victim, payee = net.nodes[4], net.nodes[5]
    sent = wallet(victim, "transfer", payee.peer_id, "42")
    victim.kill()  # right after the command returned: no chance to flush or publish
    net.start(victim)
    h = sent["entry"]["hash"]
    wait_for(lambda: net.holders(h) == NODES, CONVERGE_TIMEOUT_S, "the entry on every replica")
    wait_for(net.converged, CONVERGE_TIMEOUT_S, "equal state roots")
    after = wallet(victim, "balance")
    assert after["balance"] == PER_NODE - 42 and after["seq"] >= 1


def test_an_offline_node_catches_up_200_entries_by_anti_entropy(net: Net) -> None:
    offline = net.nodes[3]
    offline.stop()
    writers = net.nodes[:3]
    for i in range(200):
        status, doc = writers[i % 3].call(
            "POST", "/wallet/transfer", {"to": net.nodes[(i % 3) + 1].peer_id, "amount": 1}
        )
        assert status == 200, doc
    wait_for(lambda: net.converged(), CONVERGE_TIMEOUT_S, "the online replicas to agree")
    online_entries = net.nodes[0].ledger()["entries"]  # type: ignore[index]
    offline.extra_args = ["--fault", "drop-ledger-gossip"]  # gossipsub would replay its cache
    net.start(offline)
    offline.extra_args = []
    wait_for(net.converged, CONVERGE_TIMEOUT_S, "the restarted node to catch up")
    doc = offline.ledger()
    assert doc is not None and doc["entries"] == online_entries
    assert doc["sync"]["counters"].get("entries_received", 0) >= 200
    assert doc["counters"].get("added_gossip", 0) == 0


def test_a_forked_chain_is_slashed_exactly_once_on_every_replica(net: Net) -> None:
    cheat = net.nodes[1]  # bonded at genesis
    # Every peer holds the original first: a fork nobody else saw is no evidence.
    wallet(cheat, "transfer", net.nodes[0].peer_id, "5", "--wait-peers", str(NODES - 1))
    cheat.stop()
    key = load_identity(cheat.data_dir / KEY_FILE_NAME)
    genesis = install_genesis(cheat.data_dir, net.genesis_path)
    env = LedgerEnv(genesis.config, Ed25519Scheme(), UndecidedVerifier())
    with LedgerStore.open(cheat.data_dir / LEDGER_FILE_NAME, env, create=False) as store:
        head = store.lattice.get_chain(key.public_key)[-1]
        # The helper signs another entry at the head's seq; the lower hash wins the fork on
        # every replica, so peers comparing frontiers fetch it.
        amount = 1
        while True:
            fork = build_entry(key, head.header.seq, head.header.prev, head.header.height,
                               Bond(amount))  # fmt: skip
            if fork.hash < head.hash:
                break
            amount += 1
        store.add(fork)
    net.start(cheat)

    def slashed_once_everywhere() -> bool:
        docs = [n.ledger() for n in net.nodes]
        return all(d is not None and len(d["offences"]) == 1 for d in docs)

    wait_for(slashed_once_everywhere, CONVERGE_TIMEOUT_S, "one slash on every replica")
    wait_for(net.converged, CONVERGE_TIMEOUT_S, "equal state roots")
    doc = net.nodes[0].ledger()
    assert doc is not None
    [offence] = doc["offences"]
    assert offence["offender"] == cheat.peer_id and offence["penalty"] > 0
    for node in net.nodes:
        if node is not cheat:
            assert doc["accounts"][node.peer_id]["slashed"] == 0


def test_a_corrupt_ledger_stops_the_node_and_resync_rebuilds_it(net: Net) -> None:
    node = net.nodes[2]
    node.stop()
    path = node.data_dir / LEDGER_FILE_NAME
    with sqlite3.connect(path) as conn:  # bit rot in one stored entry
        row_id, blob = conn.execute("SELECT id, data FROM entries ORDER BY id DESC").fetchone()
        rotten = blob[:-1] + bytes([blob[-1] ^ 0x01])
        conn.execute("UPDATE entries SET data = ? WHERE id = ?", (rotten, row_id))
    data = dump(path)
    proc = cli("run", "--data-dir", str(node.data_dir), "--listen", "/ip4/127.0.0.1/tcp/0",
               check=False)  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "--resync" in lines[0]
    assert dump(path) == data  # nothing was changed
    node.extra_args = ["--resync"]
    net.start(node)
    node.extra_args = []
    wait_for(net.converged, CONVERGE_TIMEOUT_S, "the rebuilt replica to agree")
    assert list(node.data_dir.glob(f"{LEDGER_FILE_NAME}.damaged-*"))
    assert wallet(node, "balance")["seq"] >= 1  # its own chain came back from peers
