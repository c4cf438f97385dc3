"""Replay the generated pre/entry/post vectors, and check they match what the tests generate."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from ledger.accessors import compute_state_array, state_from_array
from ledger.config import LedgerConfig
from ledger.encoding import decode_entry, pack
from ledger.env import LedgerEnv
from ledger.errors import InvalidTransition
from ledger.transition import state_transition
from node.identity import Ed25519Scheme
from tests.ledger.helpers import FakeVerifier
from tests.vectors import VECTORS_DIR, generate

CASES = sorted(p.parent for p in VECTORS_DIR.glob("*/*/entry.msgpack"))


def test_vectors_exist_for_every_kind() -> None:
    kinds = {p.parent.name for p in CASES}
    assert {
        "genesis",
        "transfer",
        "bond",
        "unbond",
        "withdraw",
        "escrow",
        "award",
        "claim",
        "refund",
        "slash",
        "genesis_bond",
    } <= kinds


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_replay(case: Path) -> None:
    config = LedgerConfig.from_bytes((case / "config.msgpack").read_bytes())
    env = LedgerEnv(config, Ed25519Scheme(), FakeVerifier())
    pre = state_from_array(msgpack.unpackb((case / "pre.msgpack").read_bytes()))
    entry = decode_entry((case / "entry.msgpack").read_bytes(), config.proof_bytes_max)
    post_path = case / "post.msgpack"
    if not post_path.exists():
        with pytest.raises(InvalidTransition):
            state_transition(pre, entry, env)
        return
    post = state_transition(pre, entry, env)
    assert pack(compute_state_array(post)) == post_path.read_bytes()


def test_stored_vectors_are_current() -> None:
    """Regenerate in memory: the files on disk are exactly what the spec tests produce."""
    files = generate()
    on_disk = {
        str(p.relative_to(VECTORS_DIR)): p.read_bytes() for p in VECTORS_DIR.rglob("*.msgpack")
    }
    assert on_disk.keys() == files.keys(), "run `python -m tests.vectors`"
    stale = [k for k in files if files[k] != on_disk[k]]
    assert not stale, f"stale vectors (run `python -m tests.vectors`): {stale[:5]}"
