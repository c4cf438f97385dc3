"""The simnet end to end with real processes: mesh, a SIGKILL fault, a ledger workload played
through the nodes (replicated by gossip and anti-entropy), a byzantine fork, shutdown.

The EZKL proving workload is exercised by tests/slicing (the same API); here it is skipped so the
network and ledger paths run in seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.dashboard import render
from simnet.cluster import Simnet, SimnetOptions


@pytest.mark.slow
def test_simnet_runs_real_nodes_with_a_crash_fault(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable, "-m", "simnet", "simnet",
            "--nodes", "4", "--seed", "11", "--no-prove", "--no-dashboard",
            "--workdir", str(tmp_path / "work"), "--json", str(report_path),
            "--ledger-entries", "120", "--mesh-timeout", "90",
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    report = json.loads(report_path.read_text())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    checks = {c["name"]: c["ok"] for c in report["checks"]}
    for name in (
        "all_nodes_up",
        "every_node_hears_every_advert",
        "mesh_not_a_star",
        "restart_0_same_peer_id",
        "restart_0_heard_by_all",
        "ledger_roots_agree",
        "ledger_fork_slashed_once",
        "ledger_honest_never_slashed",
        "ledger_supply_conserved",
        "ledger_killed_node_kept_its_entry",
        "ledger_acknowledged_entries_lost_0",
        "clean_shutdown",
    ):
        assert checks.get(name) is True, (name, report["checks"])
    assert report["ok"] is True and report["seed"] == 11
    # Every node's replica is a real SQLite file in its own data dir.
    assert len(list((tmp_path / "work").glob("node-*/ledger.sqlite"))) == 4


def test_a_failed_start_is_reported_not_hidden(tmp_path: Path) -> None:
    options = SimnetOptions(
        nodes=2, workdir=tmp_path, prove=False, dashboard=False, start_timeout_s=0.0
    )
    sim = Simnet(options)
    sim.phase_init()
    try:
        # A zero start timeout cannot see the node come up: the check must fail, visibly.
        assert sim.phase_start() is False
    finally:
        sim.phase_stop()
    names = {c.name: c.ok for c in sim.report.checks}
    assert names["bootstrap_node_up"] is False
    assert sim.report.ok is False
    frame = sim.snapshot()
    assert len(frame.nodes) == 2 and frame.phase == "stop"
    render(frame)  # renders without a live status
