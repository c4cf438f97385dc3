"""Building and signing entries and proof statements (for node/, tests, benchmarks, simnet).

A `ChainWriter` tracks one account's own chain (next seq, head, height) so callers only say what
to do; `observe_height` keeps its Lamport height above what the account depends on.

A node must store each entry it signs (`LedgerStore.add` returns after fsync) *before* publishing
it, and rebuild its writer from the store's head on restart: signing a different entry at a seq
it already published (say, after a crash) is a fork, and forks are slashed.
"""

from __future__ import annotations

from ledger.constants import HEIGHT_MAX, ZERO_HASH
from ledger.containers import (
    Award,
    AwardRecord,
    Entry,
    EntryHeader,
    Operation,
    ProofStatement,
    SignedStatement,
)
from ledger.encoding import (
    compute_body_hash,
    compute_entry_hash,
    compute_proof_hash,
    compute_statement_digest,
)
from ledger.errors import LedgerError
from ledger.interfaces import Signer


def build_entry(signer: Signer, seq: int, prev: bytes, height: int, op: Operation) -> Entry:
    """A signed entry of `signer`'s chain."""
    account = signer.public_key
    body_hash = compute_body_hash(op)
    h = compute_entry_hash(account, seq, prev, height, body_hash)
    header = EntryHeader(account, seq, prev, height, body_hash, signer.sign(h))
    return Entry(header, op, h)


def sign_statement(signer: Signer, statement: ProofStatement, proof: bytes) -> SignedStatement:
    proof_hash = compute_proof_hash(proof)
    signature = signer.sign(compute_statement_digest(statement, proof_hash))
    return SignedStatement(statement, proof_hash, signer.public_key, signature)


def get_award_record(entry: Entry) -> AwardRecord:
    """The self-contained form of an award entry that evidence carries."""
    if not isinstance(entry.op, Award):
        raise LedgerError("not an award entry")
    return AwardRecord(entry.header, entry.op)


class ChainWriter:
    """Appends to one account's chain: seq, prev and a Lamport height are filled in."""

    def __init__(
        self, signer: Signer, seq: int = 0, head: bytes = ZERO_HASH, height: int = 0
    ) -> None:
        self.signer = signer
        self.seq = seq
        self.head = head
        self.height = height

    @property
    def account(self) -> bytes:
        return self.signer.public_key

    def observe_height(self, height: int) -> None:
        """Lamport rule: our next entry sorts after anything we have seen."""
        self.height = max(self.height, height)

    def append(self, op: Operation) -> Entry:
        if self.height + 1 > HEIGHT_MAX:
            raise LedgerError(
                f"height {self.height + 1} exceeds {HEIGHT_MAX}: do not observe heights of "
                "entries you do not depend on (a peer may inflate them)"
            )
        entry = build_entry(self.signer, self.seq, self.head, self.height + 1, op)
        self.seq, self.head, self.height = self.seq + 1, entry.hash, self.height + 1
        return entry
