"""Integration: 4 real `dsperse-node run` processes, each on its own host (a network namespace of a
`NetnsLab`), replicate the ledger across a network partition and converge when it heals.

The nodes listen on their lab addresses (10.213.0.x, port 4001) and bootstrap over them; their
control APIs are on 127.0.0.1 inside each namespace, reached through `NodeProcess.control_via`
(and the wallet CLI runs inside the node's namespace). The scenario: transfers reach all four;
the network splits into {0, 1} and {2, 3}; each side writes its own transfers, converges
internally and differs from the other side; the split heals and all four state roots agree
within HEAL_TIMEOUT_S; no acknowledged entry is lost (every replica holds every hash a write
returned). Waits poll the control APIs against a deadline (the processes share no events
with us). The lab is torn down in the fixture's finalizer and no namespace of the run is left.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from node.genesis import build_genesis, install_genesis, write_genesis
from simnet.netns import NetnsLab, is_available, list_namespaces
from simnet.procs import NodeProcess, init_data_dir
from tests.node.proc_helpers import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not is_available(), reason="needs root and working `ip netns` (namespaces, bridge, veth)"
    ),
]
NODES = 4
PORT = 4001
PER_NODE = 1_000_000
START_TIMEOUT_S = 120.0
CONVERGE_TIMEOUT_S = 60.0
HEAL_TIMEOUT_S = 30.0
SIDES = ([0, 1], [2, 3])


@dataclass
class LabNet:
    lab: NetnsLab
    nodes: list[NodeProcess]

    def roots(self, idx: list[int]) -> list[str | None]:
        out = []
        for i in idx:
            doc = self.nodes[i].ledger()
            out.append(doc["state_root"] if doc else None)
        return out

    def converged(self, idx: list[int]) -> bool:
        roots = self.roots(idx)
        return None not in roots and len(set(roots)) == 1

    def holds(self, i: int, entry_hash: str) -> bool:
        """`POST /ledger/wait` with peers 0: 200 if node i's replica holds it, 404 if not."""
        status, doc = self.nodes[i].call(
            "POST", "/ledger/wait", {"hash": entry_hash, "peers": 0, "timeout_s": 1}
        )
        assert status in (200, 404), (status, doc)
        return status == 200

    def peers_count(self, i: int) -> int:
        status, doc = self.nodes[i].call("GET", "/status")
        return int(doc["transport"]["peers_count"]) if status == 200 else 0

    def transfer(self, src: int, dst: int, amount: int) -> str:
        """A wallet write through node src's control API; the entry hash it acknowledged."""
        to = self.nodes[dst].peer_id
        status, doc = self.nodes[src].call("POST", "/wallet/transfer", {"to": to, "amount": amount})
        assert status == 200, doc
        return str(doc["hash"])

    def wallet(self, i: int, *args: str) -> dict[str, Any]:
        """`dsperse-node wallet ARGS --json`, run on node i's host (its namespace)."""
        node = self.nodes[i]
        argv = [*self.lab.exec_prefix(i), sys.executable, "-m", "simnet", "wallet", *args,
                "--data-dir", str(node.data_dir), "--json"]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{args} exited {proc.returncode}: {proc.stderr}"
        doc: dict[str, Any] = json.loads(proc.stdout)
        return doc


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabNet]:
    root = tmp_path_factory.mktemp("ledger-netns")
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
    lab = NetnsLab(NODES)
    nodes = [
        NodeProcess(
            f"node{i}",
            d,
            advert_interval_s=2.0,
            argv_prefix=lab.exec_prefix(i),
            listen=f"/ip4/{lab.address(i)}/tcp/{PORT}",
            control_via=lab.control_via(i),
        )
        for i, d in enumerate(dirs)
    ]
    with lab:
        try:
            nodes[0].start([])
            assert nodes[0].wait_ready(START_TIMEOUT_S), (dirs[0] / "node.log").read_text()[-3000:]
            boot = nodes[0].bootstrap_addr()
            assert boot.startswith(f"/ip4/{lab.address(0)}/tcp/{PORT}/p2p/"), boot
            for node in nodes[1:]:
                node.start([boot])
            for node in nodes[1:]:
                assert node.wait_ready(START_TIMEOUT_S), (node.data_dir / "node.log").read_text()
            yield LabNet(lab, nodes)
        finally:
            for node in nodes:
                node.stop()
    assert not [ns for ns in list_namespaces() if ns.startswith(lab.prefix)]


def test_partitioned_sides_diverge_and_converge_after_heal_losing_nothing(net: LabNet) -> None:
    everyone = list(range(NODES))
    wait_for(lambda: all((n.ledger() or {}).get("writable") for n in net.nodes), 60, "writable")
    # Discovery turns the bootstrap star into a full mesh: each side keeps a link of its own.
    wait_for(lambda: all(net.peers_count(i) >= NODES - 1 for i in everyone), 60, "a full mesh")

    sent = net.wallet(0, "transfer", net.nodes[2].peer_id, "500", "--wait-peers", "3")
    assert sent["wait"]["ok"]
    acked: list[str] = [sent["entry"]["hash"]]
    acked.append(net.wallet(3, "transfer", net.nodes[1].peer_id, "7")["entry"]["hash"])
    wait_for(lambda: net.converged(everyone), CONVERGE_TIMEOUT_S, "equal state roots")

    net.lab.partition(SIDES)
    left, right = SIDES
    side_entries = {
        0: [net.transfer(0, 1, 11), net.transfer(1, 0, 13), net.transfer(0, 3, 17)],
        1: [net.transfer(2, 3, 19), net.transfer(3, 2, 23), net.transfer(2, 0, 29),
            net.transfer(3, 1, 31)],
    }  # fmt: skip
    for idx in SIDES:
        wait_for(functools.partial(net.converged, idx), CONVERGE_TIMEOUT_S, f"side {idx} to agree")
    [left_root] = set(net.roots(left))
    [right_root] = set(net.roots(right))
    assert left_root != right_root
    # The split is real: neither side has seen the other's writes.
    for side, idx in enumerate(SIDES):
        other = SIDES[1 - side]
        assert all(net.holds(i, h) for i in idx for h in side_entries[side])
        assert not any(net.holds(i, h) for i in other for h in side_entries[side])

    net.lab.heal()
    healed_s = wait_for(lambda: net.converged(everyone), HEAL_TIMEOUT_S, "equal roots after heal")
    print(f"\nheal convergence: {healed_s:.2f} s for {NODES} nodes")
    roots = net.roots(everyone)
    assert len(set(roots)) == 1 and roots[0] not in (left_root, right_root)

    acked += side_entries[0] + side_entries[1]
    lost = [(i, h) for h in acked for i in everyone if not net.holds(i, h)]
    assert lost == [], f"acknowledged entries missing after heal: {lost}"
    # Balances agree with the writes (node 2 is payee of 500 + 23 and payer of 19 + 29).
    balance = net.wallet(2, "balance")
    assert balance["balance"] == PER_NODE + 500 + 23 - 19 - 29
