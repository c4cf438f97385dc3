"""Dashboard frames are pure functions of a snapshot: render them to text and check what shows."""

from __future__ import annotations

from rich.console import Console

from node.dashboard import LedgerRow, NodeRow, SliceRow, Snapshot, render


def text_of(snapshot: Snapshot, width: int = 140) -> str:
    console = Console(width=width, record=True, color_system=None, force_terminal=False)
    console.print(render(snapshot))
    return console.export_text()


def snapshot(**changes: object) -> Snapshot:
    base = dict(
        title="dsperse simnet",
        phase="proving",
        elapsed_s=12.5,
        seed=7,
        nodes=(
            NodeRow("n0", "12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAA1111", "up", peers=3, rejected=2),
            NodeRow("n1", "12D3KooWBBBBBBBBBBBBBBBBBBBBBBBBBBBB2222", "killed", restarts=1),
        ),
        slices=(
            SliceRow(0, "verified", logrows=15, rows=20_000, prove_s=3.25, proof_bytes=20480),
            SliceRow(1, "proving", logrows=14, note="conv1 channels 0-3"),
        ),
        ledger=(LedgerRow("n0", "ab" * 32, entries=10), LedgerRow("n1", "ab" * 32, entries=10)),
        events=("n1 killed (SIGKILL)",),
    )
    base.update(changes)
    return Snapshot(**base)  # type: ignore[arg-type]


def test_frame_shows_nodes_slices_ledger_and_events() -> None:
    out = text_of(snapshot())
    assert "phase: proving" in out and "seed 7" in out
    assert "nodes up 1/2" in out and "slices verified 1/2" in out
    assert "…AAAAAA1111" in out and "killed" in out
    assert "20,000" in out and "3.2" in out and "20.0" in out and "conv1 channels 0-3" in out
    assert "abababab" in out
    assert "n1 killed (SIGKILL)" in out


def test_sections_without_data_are_left_out() -> None:
    out = text_of(snapshot(nodes=(), slices=(), ledger=(), events=()))
    assert "mesh" not in out and "slices and proofs" not in out and "ledger replicas" not in out
    assert "(no events yet)" in out


def test_diverging_ledger_roots_are_flagged() -> None:
    agreeing = Console(width=140, record=True, force_terminal=True, color_system="standard")
    agreeing.print(render(snapshot()))
    diverging = Console(width=140, record=True, force_terminal=True, color_system="standard")
    rows = (LedgerRow("n0", "ab" * 32), LedgerRow("n1", "cd" * 32, supply_ok=False))
    diverging.print(render(snapshot(ledger=rows)))
    assert "BROKEN" in diverging.export_text(styles=False, clear=False)
    assert "\x1b[31mcdcdcdcd" in diverging.export_text(styles=True)
    assert "\x1b[32mabababab" in agreeing.export_text(styles=True)
