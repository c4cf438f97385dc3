"""`dsperse-node ledger …` against a real store in a data dir."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.containers import Claim, InvalidProofEvidence, Slash
from ledger.store import LEDGER_FILE_NAME, LedgerStore
from node.cli import main
from node.identity import compute_peer_id
from tests.ledger.helpers import make_env
from tests.ledger.histories import BUNDLE, BYZANTINE, build_history
from tests.ledger.test_store import ACK_TIMEOUT_S, ROOT, read_ack

ENV = make_env()


@pytest.fixture
def data_dir(tmp_path: Path) -> tuple[Path, bytes, bytes]:
    hist = build_history(ENV, 7, 80)
    with LedgerStore.open(tmp_path / LEDGER_FILE_NAME, ENV) as store:
        store.add_many(hist.entries)
        root = store.lattice.compute_root()
    return tmp_path, root, hist.world.key(BYZANTINE[0])


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_root_and_show(
    capsys: pytest.CaptureFixture[str], data_dir: tuple[Path, bytes, bytes]
) -> None:
    d, root, _ = data_dir
    assert run(capsys, "ledger", "root", "--data-dir", str(d)) == (0, root.hex() + "\n", "")
    code, out, _ = run(capsys, "ledger", "show", "--json", "--data-dir", str(d))
    doc = json.loads(out)
    assert code == 0 and doc["root"] == root.hex() and doc["conserved"] is True
    assert doc["supply"] == doc["balances"] + doc["stake"] + doc["escrow"] + doc["burned"]
    code, out, _ = run(capsys, "ledger", "show", "--data-dir", str(d))
    assert code == 0 and "conserved" in out and root.hex() in out


def test_accounts_and_entries(
    capsys: pytest.CaptureFixture[str], data_dir: tuple[Path, bytes, bytes]
) -> None:
    d, _, byz = data_dir
    code, out, _ = run(capsys, "ledger", "accounts", "--json", "--data-dir", str(d))
    rows = json.loads(out)
    assert code == 0 and len(rows) >= 9
    assert compute_peer_id(byz) in {r["peer_id"] for r in rows}
    code, out, _ = run(capsys, "ledger", "accounts", "--data-dir", str(d))
    assert code == 0 and compute_peer_id(byz) in out
    for ident in (compute_peer_id(byz), byz.hex()):
        code, out, _ = run(capsys, "ledger", "entries", ident, "--json", "--data-dir", str(d))
        entries = json.loads(out)
        assert code == 0 and entries and entries[0]["seq"] == 0
    code, out, _ = run(capsys, "ledger", "entries", byz.hex(), "--data-dir", str(d))
    assert code == 0 and "Bond(" in out


def test_verify_ok_then_corrupted(
    capsys: pytest.CaptureFixture[str], data_dir: tuple[Path, bytes, bytes]
) -> None:
    d, root, _ = data_dir
    code, out, _ = run(capsys, "ledger", "verify", "--data-dir", str(d))
    assert code == 0 and out.startswith("ok:") and f"root {root.hex()}" in out
    conn = sqlite3.connect(d / LEDGER_FILE_NAME)
    with conn:
        conn.execute("DELETE FROM entries WHERE id = 3")
    conn.close()
    code, out, err = run(capsys, "ledger", "verify", "--data-dir", str(d))
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert "rows lost" in err


def test_errors(capsys: pytest.CaptureFixture[str], data_dir: tuple[Path, bytes, bytes]) -> None:
    d, _, _ = data_dir
    code, _, err = run(capsys, "ledger", "entries", "12D3KooWnope", "--data-dir", str(d))
    assert code == 1 and "no account" in err
    code, _, err = run(capsys, "ledger", "show", "--data-dir", str(d / "missing"))
    assert code == 1 and "no ledger database" in err
    with pytest.raises(SystemExit) as info:
        main(["ledger"])
    assert info.value.code == 2


def _proof_entries(path: Path) -> list[tuple[bytes, str]]:
    """(entry hash, kind) of every stored claim and invalid-proof evidence."""
    found = []
    with LedgerStore.open(path, ENV) as store:
        for entry in store.lattice.iter_entries():
            if isinstance(entry.op, Claim):
                found.append((entry.hash, "claim"))
            elif isinstance(entry.op, Slash) and isinstance(
                entry.op.evidence, InvalidProofEvidence
            ):
                found.append((entry.hash, "invalid-proof evidence"))
    return found


def test_verify_lists_proofs_it_cannot_check(
    capsys: pytest.CaptureFixture[str], data_dir: tuple[Path, bytes, bytes]
) -> None:
    # The history's claims name a bundle this data dir does not hold: they are listed, not
    # trusted, and they do not fail the check (nothing checkable is wrong).
    d, _, _ = data_dir
    unchecked = _proof_entries(d / LEDGER_FILE_NAME)
    assert any(kind == "claim" for _, kind in unchecked)
    code, out, err = run(capsys, "ledger", "verify", "--data-dir", str(d))
    assert code == 0 and err == ""
    assert f"proofs: 0 re-verified, 0 wrong, {len(unchecked)} not checkable" in out
    listed = [line.split() for line in out.splitlines() if line.startswith("  unchecked ")]
    assert len(listed) == len(unchecked)
    for entry_hash, kind in unchecked:
        assert f"  unchecked {entry_hash.hex()} {kind} bundle {BUNDLE.hex()}" in out
    assert not (d / "bundles").exists() and not (d / "cache").exists()  # nothing created


def _dump(path: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    conn = sqlite3.connect(path)
    try:
        meta = conn.execute("SELECT key, value FROM meta ORDER BY key").fetchall()
        rows = conn.execute("SELECT id, hash, data FROM entries ORDER BY id").fetchall()
    finally:
        conn.close()
    return meta, rows


def test_every_subcommand_is_read_only(
    capsys: pytest.CaptureFixture[str], data_dir: tuple[Path, bytes, bytes]
) -> None:
    # Entries past the last checkpoint: a closing checkpoint would record a new root.
    d, _, _ = data_dir
    path = d / LEDGER_FILE_NAME
    store = LedgerStore.open(path, ENV)
    store.add_many(build_history(ENV, 8, 30).entries)
    store.close(checkpoint=False)
    before = _dump(path)
    for argv in (["show"], ["accounts"], ["root"], ["verify"], ["show", "--json"]):
        code, _, err = run(capsys, "ledger", *argv, "--data-dir", str(d))
        assert code == 0, err
    assert _dump(path) == before


@pytest.mark.slow
def test_commands_read_a_replica_a_running_node_writes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`ledger show|verify|root` on a live database: each sees one consistent snapshot holding at
    least every entry the writer had acknowledged, and never disturbs the writer."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.ledger.writer_proc", str(tmp_path / LEDGER_FILE_NAME), "600"],
        stdout=subprocess.PIPE,
        bufsize=0,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        assert proc.stdout is not None
        acked = 0
        for _ in range(6):
            for _ in range(20):
                read_ack(proc.stdout, ACK_TIMEOUT_S)
                acked += 1
            code, out, err = run(capsys, "ledger", "show", "--json", "--data-dir", str(tmp_path))
            assert code == 0, err
            assert json.loads(out)["entries"] >= acked
            code, out, err = run(capsys, "ledger", "verify", "--data-dir", str(tmp_path))
            assert code == 0 and out.startswith("ok:"), err
            code, _, err = run(capsys, "ledger", "root", "--data-dir", str(tmp_path))
            assert code == 0, err
        read_ack(proc.stdout, ACK_TIMEOUT_S)  # the writer still writes
    finally:
        proc.kill()
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()
