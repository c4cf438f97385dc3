"""`dsperse-node dashboard`: reads a running node's control API and renders it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from node.cli.cmd_dashboard import build_snapshot
from node.dashboard import render
from simnet.procs import NodeProcess, init_data_dir

STATUS = {
    "node": {"peer_id": "12D3KooWSELF", "uptime_s": 12.5, "adverts_published": 3},
    "transport": {
        "peers": ["12D3KooWPEERA"],
        "peers_count": 1,
        "messages_in": {"/dsperse/capacity/1": {"accept": 5, "reject": 2}},
        "messages_out": {"/dsperse/capacity/1": 3},
        "drops": {},
        "mesh": {"/dsperse/capacity/1": 1},
    },
    "gossip": {"/dsperse/capacity/1": {"bad_signature": 2}},
    "providers": {
        "12D3KooWPEERA": {"free_slots": 2, "price": 10, "seen_ms": 9_000},
        "12D3KooWPEERB": {"free_slots": 0, "price": 7, "seen_ms": 1_000},
    },
}


def test_snapshot_from_a_status_document() -> None:
    snap = build_snapshot(STATUS, now_ms=10_000)
    assert snap.nodes[0].peer_id == "12D3KooWSELF" and snap.nodes[0].rejected == 2
    by_peer = {p.peer_id: p for p in snap.providers}
    assert by_peer["12D3KooWPEERA"].connected and not by_peer["12D3KooWPEERB"].connected
    assert by_peer["12D3KooWPEERB"].age_s == 9.0 and by_peer["12D3KooWPEERB"].price_per_slice == 7
    console = Console(width=150, record=True, color_system=None)
    console.print(render(snap))
    text = console.export_text()
    assert "via mesh" in text and "direct" in text and "bad_signature" in text


def test_without_a_running_node_the_error_says_what_to_do(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simnet", "dashboard", "--data-dir", str(tmp_path), "--once"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "no running node found" in result.stderr and "--control" in result.stderr


@pytest.mark.slow
def test_dashboard_once_shows_a_running_node(tmp_path: Path) -> None:
    data_dir = tmp_path / "n"
    identity = init_data_dir(data_dir)
    node = NodeProcess("n", data_dir)
    node.start([])
    try:
        assert node.wait_ready(60), (data_dir / "node.log").read_text()[-2000:]
        result = subprocess.run(
            [sys.executable, "-m", "simnet", "dashboard", "--data-dir", str(data_dir), "--once"],
            capture_output=True, text=True, timeout=60, env={"COLUMNS": "160", **_env()},
        )  # fmt: skip
    finally:
        assert node.stop() == 0
    assert result.returncode == 0, result.stderr
    assert identity.peer_id[:20] in result.stdout
    assert not (data_dir / "control.addr").exists()  # removed on clean exit


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
