"""Persistence of a replica's entries in SQLite (WAL), and the integrity check on open.

Only entries are stored (the state is a function of them). Every write is one transaction that
also bumps the stored entry count; `journal_mode=WAL` with `synchronous=FULL` makes SQLite fsync
the WAL on every commit, so once `add` returns (the acknowledgement) the entry survives SIGKILL
and power loss. (NORMAL would only risk the last commits on power loss, but an acknowledgement
must mean durable, and one fsync per commit is cheap next to an ed25519 verify per entry batch.)

On open every row is re-decoded and re-hashed (a row whose bytes do not match its hash is
corruption), the lattice is rebuilt in arrival order (chain links re-checked), the row count is
compared with the stored count, and the state root with the root stored at the last checkpoint.
Any mismatch raises `StoreCorrupted` naming what is wrong.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from ledger.config import LedgerConfig
from ledger.containers import Entry
from ledger.encoding import decode_entry, encode_entry
from ledger.env import LedgerEnv
from ledger.errors import InvalidTransition, LedgerError, StoreCorrupted, StoreError
from ledger.lattice import AddResult, AddStatus, Lattice

FORMAT_VERSION = 1
LEDGER_FILE_NAME = "ledger.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    account BLOB NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL
);
"""


def _connect(path: Path) -> sqlite3.Connection:
    if not path.parent.is_dir():
        raise StoreError(f"cannot open {path}: {path.parent} is not a directory")
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    except sqlite3.OperationalError as exc:
        raise StoreError(f"cannot open {path}: {exc}") from None
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    except sqlite3.OperationalError as exc:
        conn.close()
        raise StoreError(f"cannot use {path}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreCorrupted(f"{path}: not a readable ledger database ({exc})") from None
    return conn


def _meta(conn: sqlite3.Connection, key: str) -> bytes | int | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if row is None:
        return None
    value = row[0]
    return value if isinstance(value, bytes | int) else None


def read_store_config(path: Path) -> LedgerConfig:
    """The ledger config a database was created with (to open it without knowing it)."""
    if not path.is_file():
        raise StoreError(f"no ledger database at {path}")
    conn = _connect(path)
    try:
        raw = _meta(conn, "config")
    except sqlite3.OperationalError as exc:
        raise StoreError(f"{path}: not a ledger database, or still being created ({exc})") from None
    except sqlite3.DatabaseError as exc:
        raise StoreCorrupted(f"{path}: cannot read its config ({exc})") from None
    finally:
        conn.close()
    if not isinstance(raw, bytes):
        raise StoreCorrupted(f"{path}: has no ledger config")
    return LedgerConfig.from_bytes(raw)


class LedgerStore:
    """A replica (`self.lattice`) backed by a SQLite file. One process writes it at a time."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lattice: Lattice) -> None:
        self.path = path
        self.lattice = lattice
        self._conn = conn
        self._count = 0

    @classmethod
    def open(cls, path: Path, env: LedgerEnv, *, create: bool = True) -> LedgerStore:
        """Open (or create) the database and rebuild the replica from it, checking integrity."""
        path = Path(path)
        if not path.exists() and not create:
            raise StoreError(f"no ledger database at {path}")
        conn = _connect(path)
        store = cls(path, conn, Lattice(env))
        try:
            store._init_or_check_meta(env.config)
            store._load()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreCorrupted(f"{path}: database is damaged ({exc})") from None
        except LedgerError:
            conn.close()
            raise
        return store

    def _init_or_check_meta(self, config: LedgerConfig) -> None:
        conn = self._conn
        if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise StoreCorrupted(f"{self.path}: SQLite quick_check failed")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            # Schema and meta rows in one transaction: a reader never sees half a database.
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.executemany(
                    "INSERT OR IGNORE INTO meta VALUES (?, ?)",
                    [("format", FORMAT_VERSION), ("config", config.to_bytes()), ("count", 0)],
                )
        elif not {"meta", "entries"} <= tables:
            raise StoreCorrupted(f"{self.path}: is not a ledger database (tables {tables})")
        if _meta(conn, "format") != FORMAT_VERSION:
            raise StoreError(f"{self.path}: unsupported ledger format")
        if _meta(conn, "config") != config.to_bytes():
            raise StoreError(f"{self.path}: was created for a different ledger config")

    def _load(self) -> None:
        # One read transaction: rows and counters come from the same snapshot even while
        # another process (the node) keeps writing.
        self._conn.execute("BEGIN")
        try:
            self._load_snapshot()
        finally:
            self._conn.execute("ROLLBACK")

    def _load_snapshot(self) -> None:
        proof_max = self.lattice.env.config.proof_bytes_max
        rows = self._conn.execute("SELECT id, hash, data FROM entries ORDER BY id")
        for row_id, h, data in rows:
            try:
                entry = decode_entry(data, proof_max)
            except InvalidTransition as exc:
                raise StoreCorrupted(
                    f"{self.path}: entry row {row_id} is unreadable ({exc})"
                ) from None
            if entry.hash != h:
                raise StoreCorrupted(f"{self.path}: entry row {row_id} does not match its hash")
            try:
                result = self.lattice.add(entry, verified=True)
            except InvalidTransition as exc:
                raise StoreCorrupted(
                    f"{self.path}: entry row {row_id} is invalid ({exc})"
                ) from None
            if result.status is AddStatus.DUPLICATE:
                raise StoreCorrupted(f"{self.path}: entry row {row_id} is a duplicate")
            self._count += 1
        if _meta(self._conn, "count") != self._count:
            raise StoreCorrupted(
                f"{self.path}: holds {self._count} entries but recorded "
                f"{_meta(self._conn, 'count')!r} (rows lost or added behind its back)"
            )
        root = _meta(self._conn, "root")
        checkpointed = root is not None and _meta(self._conn, "root_count") == self._count
        if checkpointed and self.lattice.compute_root() != root:
            raise StoreCorrupted(f"{self.path}: state root differs from its checkpoint")

    # ------------------------------------------------------------------ writing

    def add(self, entry: Entry) -> AddResult:
        """Validate, apply and durably store one entry; returns once it is on disk.
        Raises `InvalidTransition` for an invalid entry (nothing stored)."""
        [(_, result)] = self.add_many([entry], raise_invalid=True)
        assert isinstance(result, AddResult)  # raise_invalid: refusals were raised
        return result

    def add_many(
        self, entries: Iterable[Entry], *, raise_invalid: bool = False, verified: bool = False
    ) -> list[tuple[bytes, AddResult | InvalidTransition]]:
        """Add a batch in one transaction; each entry's result or the reason it was refused.
        `verified=True`: the caller already ran the entry-only checks (`verify_entry`) on
        exactly these entries (a gossip validator does), so they are not run twice."""
        results: list[tuple[bytes, AddResult | InvalidTransition]] = []
        rows = []
        for entry in entries:
            try:
                result = self.lattice.add(entry, verified=verified)
            except InvalidTransition as exc:
                if raise_invalid:
                    raise
                results.append((entry.hash, exc))
                continue
            results.append((entry.hash, result))
            if result.status is not AddStatus.DUPLICATE:
                h = entry.header
                rows.append((entry.hash, h.account, h.seq, encode_entry(entry)))
        if rows:
            self._write(rows)
        return results

    def _write(self, rows: list[tuple[bytes, bytes, int, bytes]]) -> None:
        try:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(
                    "INSERT INTO entries (hash, account, seq, data) VALUES (?, ?, ?, ?)", rows
                )
                self._conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'count'", (self._count + len(rows),)
                )
        except sqlite3.Error as exc:
            # The replica in memory is now ahead of the disk: the owner must reopen the store.
            raise StoreError(f"{self.path}: write failed ({exc}); reopen the store") from None
        self._count += len(rows)

    def checkpoint(self) -> bytes:
        """Record the current state root (checked on the next open); returns it."""
        root = self.lattice.compute_root()
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [("root", root), ("root_count", self._count)],
            )
        return root

    # ------------------------------------------------------------------ reading

    @property
    def count(self) -> int:
        return self._count

    def verify(self, env: LedgerEnv | None = None) -> bytes:
        """Full re-check: every entry again with signatures and proofs (entry-only checks) into a
        fresh replica; its root must equal ours. Returns the root."""
        fresh = Lattice(env or self.lattice.env)
        proof_max = fresh.env.config.proof_bytes_max
        self._conn.execute("BEGIN")
        try:
            rows = self._conn.execute(
                "SELECT id, data FROM entries ORDER BY id LIMIT ?", (self._count,)
            ).fetchall()
        finally:
            self._conn.execute("ROLLBACK")
        for row_id, data in rows:
            try:
                fresh.add(decode_entry(data, proof_max))
            except InvalidTransition as exc:
                raise StoreCorrupted(f"{self.path}: entry row {row_id} fails ({exc})") from None
        root = fresh.compute_root()
        if root != self.lattice.compute_root():
            raise StoreCorrupted(f"{self.path}: recomputed state root differs")
        return root

    def close(self, *, checkpoint: bool = True) -> None:
        if checkpoint:
            self.checkpoint()
        self._conn.close()

    def __enter__(self) -> LedgerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(checkpoint=exc[0] is None)


def open_data_dir_store(data_dir: Path, env: LedgerEnv) -> LedgerStore:
    """The replica of a node's data dir (`<data dir>/ledger.sqlite`)."""
    os.makedirs(data_dir, exist_ok=True)
    return LedgerStore.open(Path(data_dir) / LEDGER_FILE_NAME, env)
