"""SQLite persistence: reopen, integrity check on open, corruption, and SIGKILL durability."""

from __future__ import annotations

import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import IO

import pytest

from ledger.builders import build_entry
from ledger.containers import GenesisAllocation, Transfer
from ledger.errors import InvalidTransition, Reason, StoreCorrupted, StoreError
from ledger.store import LedgerStore, read_store_config
from tests.ledger.helpers import World, identity, make_env
from tests.ledger.histories import build_history

ROOT = Path(__file__).resolve().parents[2]
ENV = make_env()


def filled(path: Path, seed: int = 1, steps: int = 40) -> tuple[LedgerStore, World]:
    hist = build_history(ENV, seed, steps)
    store = LedgerStore.open(path, ENV)
    for entry in hist.entries:
        store.add(entry)
    return store, hist.world


def sql(path: Path, statement: str, *args: object) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(statement, args)
    conn.close()


def test_reopen_restores_entries_and_root(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    store, _ = filled(path)
    root, count = store.lattice.compute_root(), store.count
    store.close()
    with LedgerStore.open(path, ENV) as again:
        assert again.lattice.compute_root() == root and again.count == count
        assert again.verify() == root
    assert read_store_config(path) == ENV.config


def test_pending_entries_are_kept(tmp_path: Path) -> None:
    w = World(ENV)
    g = w.make("genesis", GenesisAllocation(w.key("a"), 10))
    a0 = w.make("a", Transfer(w.key("b"), 1))
    a1 = w.make("a", Transfer(w.key("b"), 1))
    path = tmp_path / "ledger.sqlite"
    with LedgerStore.open(path, ENV) as store:
        store.add(g)
        store.add(a1)  # waits for a0
    with LedgerStore.open(path, ENV) as store:
        assert store.lattice.statistics().pending == 1
        store.add(a0)
        assert store.lattice.state.accounts[w.key("b")].balance == 2


def test_invalid_entry_is_not_stored(tmp_path: Path) -> None:
    w = World(ENV)
    bad = w.make("a", Transfer(w.key("a"), 1))
    path = tmp_path / "ledger.sqlite"
    with LedgerStore.open(path, ENV) as store:
        with pytest.raises(InvalidTransition) as info:
            store.add(bad)
        assert info.value.reason is Reason.SELF_TRANSFER
        assert store.count == 0
        results = store.add_many([bad])
        assert isinstance(results[0][1], InvalidTransition) and store.count == 0


def test_duplicate_is_stored_once(tmp_path: Path) -> None:
    w = World(ENV)
    g = w.make("genesis", GenesisAllocation(w.key("a"), 10))
    with LedgerStore.open(tmp_path / "l.sqlite", ENV) as store:
        store.add(g)
        store.add(g)
        assert store.count == 1


def test_open_missing_without_create(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no ledger database"):
        LedgerStore.open(tmp_path / "nope.sqlite", ENV, create=False)


def test_other_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    LedgerStore.open(path, ENV).close()
    with pytest.raises(StoreError, match="different ledger config"):
        LedgerStore.open(path, make_env(supply_max=5))


def test_corrupted_row_bytes(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    filled(path)[0].close()
    conn = sqlite3.connect(path)
    data = bytearray(conn.execute("SELECT data FROM entries WHERE id = 7").fetchone()[0])
    conn.close()
    data[-1] ^= 1
    sql(path, "UPDATE entries SET data = ? WHERE id = 7", bytes(data))
    with pytest.raises(StoreCorrupted, match="row 7"):
        LedgerStore.open(path, ENV)


def test_corrupted_hash_column(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    filled(path)[0].close()
    sql(path, "UPDATE entries SET hash = ? WHERE id = 3", b"\x01" * 32)
    with pytest.raises(StoreCorrupted, match="row 3 does not match its hash"):
        LedgerStore.open(path, ENV)


def test_lost_row(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    filled(path)[0].close()
    sql(path, "DELETE FROM entries WHERE id = (SELECT max(id) FROM entries)")
    with pytest.raises(StoreCorrupted, match="rows lost"):
        LedgerStore.open(path, ENV)


def test_root_differs_from_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    filled(path)[0].close()
    sql(path, "UPDATE meta SET value = ? WHERE key = 'root'", b"\x02" * 32)
    with pytest.raises(StoreCorrupted, match="state root differs"):
        LedgerStore.open(path, ENV)


def test_forged_signature_found_by_verify(tmp_path: Path) -> None:
    """The hash excludes the signature, so only a full verify catches a forged one."""
    path = tmp_path / "ledger.sqlite"
    store, _ = filled(path)
    conn = sqlite3.connect(path)
    data = bytearray(conn.execute("SELECT data FROM entries WHERE id = 5").fetchone()[0])
    conn.close()
    sig_at = 1 + 34 + 1 + 34  # array, account, seq (fixint), prev, then height
    sig_at += 1 if data[sig_at] < 0x80 else 2  # height is a small int here
    data[sig_at + 2] ^= 0xFF  # first signature byte after the bin8 header
    sql(path, "UPDATE entries SET data = ? WHERE id = 5", bytes(data))
    store.close(checkpoint=False)
    with LedgerStore.open(path, ENV) as reopened, pytest.raises(StoreCorrupted, match="row 5"):
        reopened.verify()


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreCorrupted):
        LedgerStore.open(path, ENV)


def test_truncated_database(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    filled(path, steps=120)[0].close()
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(StoreCorrupted):
        LedgerStore.open(path, ENV)


ACK_TIMEOUT_S = 30.0


def read_ack(stream: IO[bytes], timeout_s: float) -> str:
    """The writer's next acknowledgement line; waits on the pipe (never sleeps), bounded."""
    line = b""
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([stream], [], [], timeout_s)
        assert ready, f"no acknowledgement from the writer within {timeout_s} s"
        byte = stream.read(1)
        assert byte, "writer exited early"
        line += byte
    return line.decode().strip()


@pytest.mark.slow
def test_entries_are_durable_across_sigkill(tmp_path: Path) -> None:
    """A writer process acks each entry after `add` returns; we SIGKILL it after a random number
    of acks, reopen, and require every acked entry and a verifying store, for 20 rounds."""
    path = tmp_path / "ledger.sqlite"
    rng = random.Random(0xD5)
    acked: list[bytes] = []
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for _ in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.ledger.writer_proc", str(path)],
            stdout=subprocess.PIPE,
            bufsize=0,  # unbuffered, so select() sees exactly what is unread
            cwd=ROOT,
            env=env,
        )
        try:
            assert proc.stdout is not None
            for _ in range(rng.randrange(1, 40)):
                acked.append(bytes.fromhex(read_ack(proc.stdout, ACK_TIMEOUT_S)))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=30)
            assert proc.stdout is not None
            proc.stdout.close()
        with LedgerStore.open(path, ENV) as store:
            missing = [h.hex() for h in acked if store.lattice.get_entry(h) is None]
            assert not missing, f"acknowledged entries lost: {missing[:3]}"
            store.verify()
    assert len(acked) >= 20


def test_build_entry_for_unknown_chain_is_pending(tmp_path: Path) -> None:
    entry = build_entry(identity("z"), 3, b"\x05" * 32, 9, Transfer(identity("y").public_key, 1))
    with LedgerStore.open(tmp_path / "l.sqlite", ENV) as store:
        assert store.add(entry).status.value == "pending"


def test_unopenable_path(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a directory"):
        LedgerStore.open(tmp_path / "missing-dir" / "ledger.sqlite", ENV)
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(StoreError):
        LedgerStore.open(tmp_path / "dir.sqlite", ENV)


def test_foreign_sqlite_database(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    sql(path, "CREATE TABLE t (x)")
    with pytest.raises(StoreCorrupted, match="not a ledger database"):
        LedgerStore.open(path, ENV)


@pytest.mark.slow
def test_reader_opens_consistently_while_a_writer_writes(tmp_path: Path) -> None:
    """The CLI opens the node's live database: each open is one consistent snapshot."""
    path = tmp_path / "ledger.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.ledger.writer_proc", str(path), "400"],
        stdout=subprocess.PIPE,
        bufsize=0,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        assert proc.stdout is not None
        acked: list[bytes] = []
        for _ in range(8):
            for _ in range(10):
                acked.append(bytes.fromhex(read_ack(proc.stdout, ACK_TIMEOUT_S)))
            store = LedgerStore.open(path, ENV, create=False)
            try:
                assert all(store.lattice.get_entry(h) is not None for h in acked)
            finally:
                store.close(checkpoint=False)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()
