"""`dsperse-node ledger …` against a real store in a data dir."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from ledger.store import LEDGER_FILE_NAME, LedgerStore
from node.cli import main
from node.identity import compute_peer_id
from tests.ledger.helpers import make_env
from tests.ledger.histories import BYZANTINE, build_history

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
    assert code == 0 and out.startswith("ok:") and root.hex() in out
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
