"""Integration: the prover market with 4 real `dsperse-node run` processes and real EZKL.

One network (one genesis) serves the module's tests, in order:
- `submit` of the digits CNN at node 0: every slice is proven by another node, checked, linked
  and paid; every replica ends with one state root; the requester's balance fell by exactly
  what the provers gained; `verify` accepts the result and rejects an edited proof or output;
- a node that publishes tampered proofs (`--fault tamper-proofs`, the cheapest bidder) is
  slashed on every replica and its slice is re-awarded; the job completes;
- a prover SIGKILLed mid-proof: its slice is re-awarded and the job completes.
Waits poll the nodes' control APIs against a deadline (the processes share no events with us).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from node.genesis import build_genesis, install_genesis, write_genesis
from node.proof_verifier import get_data_cache_dir
from simnet.procs import NodeProcess, init_data_dir
from tests.node.proc_helpers import cli, wait_for

pytestmark = pytest.mark.slow
MODELS = Path(__file__).resolve().parents[2] / "slicing" / "models"
DIGITS, SAMPLE = MODELS / "digits_cnn.onnx", MODELS / "digits_sample.json"
NODES = 4
PER_NODE = 1_000_000
START_TIMEOUT_S = 120.0
JOB_TIMEOUT_S = 600.0
SLICE_DEADLINE_S = 90.0


@dataclass
class Net:
    root: Path
    bundle: Path
    nodes: list[NodeProcess]

    def start(self, node: NodeProcess) -> None:
        others = [n for n in self.nodes if n is not node and n.is_running()]
        node.start([n.bootstrap_addr() for n in others[:2]])
        assert node.wait_ready(START_TIMEOUT_S), (node.data_dir / "node.log").read_text()[-3000:]

    def ledger(self, node: NodeProcess) -> dict[str, Any]:
        doc = node.ledger()
        assert doc is not None, f"{node.name} does not answer"
        return doc

    def converged(self) -> bool:
        roots = {(n.ledger() or {}).get("state_root") for n in self.nodes if n.is_running()}
        return len(roots) == 1 and None not in roots


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    root = tmp_path_factory.mktemp("market")
    dirs = [root / f"node{i}" for i in range(NODES)]
    idents = [init_data_dir(d) for d in dirs]
    # The model owner builds the bundle with node 0's cache, so its SRS is where node 0 serves it.
    bundle = root / "digits-bundle"
    built = cli("slice", str(DIGITS), "--input", str(SAMPLE), "--out", str(bundle),
                "--max-logrows", "15", "--cache-dir", str(get_data_cache_dir(dirs[0])),
                "--quiet", timeout_s=900)  # fmt: skip
    assert built.returncode == 0, built.stderr
    genesis = build_genesis(
        [(i.public_key, PER_NODE) for i in idents],
        [(i.public_key, 10_000) for i in idents],
        {"award_bond_min": 100},
    )
    write_genesis(genesis, root / "genesis.json")
    for d in dirs:
        install_genesis(d, root / "genesis.json")
    nodes = [NodeProcess(f"node{i}", d, advert_interval_s=2.0) for i, d in enumerate(dirs)]
    net = Net(root, bundle, nodes)
    try:
        nodes[0].start([])
        assert nodes[0].wait_ready(START_TIMEOUT_S)
        for node in nodes[1:]:
            node.start([nodes[0].bootstrap_addr()])
        for node in nodes[1:]:
            assert node.wait_ready(START_TIMEOUT_S)
        wait_for(lambda: all((n.ledger() or {}).get("writable") for n in nodes), 90, "writable")
        yield net
    finally:
        for node in nodes:
            node.stop()


def submit(
    net: Net, out: Path, *extra: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    doc_path = out.with_suffix(".json")
    proc = cli(
        "submit", str(net.bundle), "--input", str(SAMPLE), "--out", str(out),
        "--json", str(doc_path), "--data-dir", str(net.nodes[0].data_dir), "--no-progress",
        "--deadline", str(JOB_TIMEOUT_S), "--slice-deadline", str(SLICE_DEADLINE_S), *extra,
        timeout_s=JOB_TIMEOUT_S + 60,
    )  # fmt: skip
    doc: dict[str, Any] = json.loads(doc_path.read_text()) if doc_path.exists() else {}
    return proc, doc


def balances(net: Net) -> dict[str, int]:
    accounts = net.ledger(net.nodes[0])["accounts"]
    return {n.peer_id: accounts[n.peer_id]["balance"] for n in net.nodes}


def test_a_job_is_proven_by_other_nodes_verified_linked_and_paid(net: Net) -> None:
    before = balances(net)
    out = net.root / "result-1"
    proc, doc = submit(net, out)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert doc["state"] == "done" and doc["chain"] == "ok"
    requester = net.nodes[0].peer_id
    provers = [s["prover"] for s in doc["slices"]]
    assert len(provers) == 2 and requester not in provers
    assert all(s["state"] == "verified" for s in doc["slices"])
    # Claims settle on every replica (each verifies the proof itself): one root, and money moved
    # from the requester to the provers, nothing created or lost.
    wait_for(lambda: net.converged() and net.ledger(net.nodes[0])["accounts"][requester]
             ["balance"] == before[requester] - doc["paid"], 120, "settlement")  # fmt: skip
    after = balances(net)
    gained = sum(after[p] - before[p] for p in set(provers))
    assert doc["paid"] == sum(s["price"] for s in doc["slices"]) > 0
    assert before[requester] - after[requester] == gained == doc["paid"]
    # Anyone re-checks the result offline.
    ok = cli("verify", str(net.bundle), str(out), "--data-dir", str(net.nodes[0].data_dir))
    assert ok.returncode == 0, ok.stderr
    edited = net.root / "result-1-edited"
    shutil.copytree(out, edited)
    proof = edited / "proofs" / "000.proof"
    data = bytearray(proof.read_bytes())
    data[len(data) // 2] ^= 0x01
    proof.write_bytes(bytes(data))
    bad = cli("verify", str(net.bundle), str(edited), "--data-dir", str(net.nodes[0].data_dir))
    assert bad.returncode == 1 and "slice 0" in bad.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    name = next(iter(manifest["outputs"]))
    manifest["outputs"][name]["data"][0] += 1.0
    shutil.rmtree(edited)
    shutil.copytree(out, edited)
    (edited / "manifest.json").write_text(json.dumps(manifest))
    bad = cli("verify", str(net.bundle), str(edited), "--data-dir", str(net.nodes[0].data_dir))
    assert bad.returncode == 1 and "outputs" in bad.stderr


def test_a_node_publishing_invalid_proofs_is_slashed_and_its_slice_re_awarded(net: Net) -> None:
    cheat = net.nodes[3]
    cheat.stop()
    cheat.extra_args = ["--fault", "tamper-proofs", "--price", "1"]  # the cheapest bidder
    net.start(cheat)
    cheat.extra_args = []
    wait_for(lambda: bool((cheat.ledger() or {}).get("writable")), 90, "the cheat writable")
    proc, doc = submit(net, net.root / "result-2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert doc["state"] == "done" and cheat.peer_id not in [s["prover"] for s in doc["slices"]]
    assert max(s["round"] for s in doc["slices"]) >= 1  # the cheat's slice went to another

    def slashed_everywhere() -> bool:
        docs = [n.ledger() for n in net.nodes]
        return all(
            d is not None and any(o["offender"] == cheat.peer_id for o in d["offences"])
            for d in docs
        )

    wait_for(slashed_everywhere, 120, "the cheat slashed on every replica")
    wait_for(net.converged, 120, "one state root")
    accounts = net.ledger(net.nodes[0])["accounts"]
    assert accounts[cheat.peer_id]["slashed"] > 0
    assert all(accounts[n.peer_id]["slashed"] == 0 for n in net.nodes[:3])
    cheat.stop()
    net.start(cheat)  # honest again for the next test


def test_a_prover_killed_mid_proof_loses_its_slice_and_the_job_completes(net: Net) -> None:
    import threading

    out = net.root / "result-3"
    result: dict[str, Any] = {}

    def run() -> None:
        result["proc"], result["doc"] = submit(net, out)

    thread = threading.Thread(target=run)
    thread.start()
    victim: NodeProcess | None = None

    def someone_proving() -> bool:
        nonlocal victim
        for node in net.nodes[1:]:
            status = node.call("GET", "/status")[1] if node.is_running() else {}
            if ((status or {}).get("market") or {}).get("proving"):
                victim = node
                return True
        return False

    wait_for(someone_proving, 300, "a prover to start proving")
    assert victim is not None
    # The control API stays responsive while EZKL proves (the event loop never waits on it).
    latencies = []
    for _ in range(5):
        t0 = time.monotonic()
        status, _doc = victim.call("GET", "/health")
        latencies.append(time.monotonic() - t0)
        assert status == 200
    assert sorted(latencies)[2] < 0.1, latencies
    victim.kill()
    thread.join(JOB_TIMEOUT_S + 120)
    proc, doc = result["proc"], result["doc"]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert doc["state"] == "done" and victim.peer_id not in [s["prover"] for s in doc["slices"]]
    net.start(victim)
    wait_for(net.converged, 120, "one state root after the restart")
