"""Shared test vocabulary for ledger tests: keys, a deterministic fake verifier, a little world.

`FakeVerifier` is the only stand-in (allowed for protocol-logic tests): a proof "verifies" iff it
is `fake_proof(statement)`. Identities and signatures are real ed25519 (`node.identity`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ledger.builders import ChainWriter, get_award_record, sign_statement
from ledger.config import LedgerConfig, minimal_config
from ledger.containers import (
    Award,
    AwardRecord,
    Entry,
    LedgerState,
    Operation,
    ProofStatement,
    SignedStatement,
)
from ledger.encoding import pack, statement_to_array
from ledger.env import LedgerEnv
from ledger.interfaces import ProofStatementView
from ledger.lattice import Lattice
from node.identity import Ed25519Scheme, NodeIdentity


def fake_proof(statement: ProofStatementView) -> bytes:
    fields = [
        statement.bundle_id,
        statement.slice_index,
        statement.input_commitment,
        statement.output_commitment,
        statement.instances_hash,
    ]
    return b"fake-proof:" + hashlib.sha256(pack(fields)).digest()


class FakeVerifier:
    """Deterministic: the one valid proof of a statement is `fake_proof(statement)`."""

    def verify(self, statement: ProofStatementView, proof: bytes) -> bool:
        return proof == fake_proof(statement)


def h32(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def identity(name: str) -> NodeIdentity:
    return NodeIdentity.from_seed(h32("identity", name))


GENESIS = identity("genesis")


def make_config(**overrides: int) -> LedgerConfig:
    base = minimal_config(GENESIS.public_key)
    if not overrides:
        return base
    fields = {f: getattr(base, f) for f in base.__slots__}  # type: ignore[attr-defined]
    fields.update(overrides)
    return LedgerConfig(**fields)


def make_env(*, signatures: bool = True, **overrides: int) -> LedgerEnv:
    return LedgerEnv(make_config(**overrides), Ed25519Scheme(), FakeVerifier(), signatures)


@dataclass
class World:
    """A replica plus one chain writer per named account; entries are added as they are made."""

    env: LedgerEnv
    lattice: Lattice = field(init=False)
    writers: dict[str, ChainWriter] = field(default_factory=dict)
    log: list[Entry] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lattice = Lattice(self.env)
        self.writers["genesis"] = ChainWriter(GENESIS)

    def key(self, name: str) -> bytes:
        return self.writer(name).account

    def writer(self, name: str) -> ChainWriter:
        if name not in self.writers:
            self.writers[name] = ChainWriter(identity(name))
        return self.writers[name]

    def make(self, name: str, op: Operation, *, observe: bool = True) -> Entry:
        """A signed entry of `name`'s chain, at a height above everything made so far (or, with
        `observe=False`, above only `name`'s own entries: a concurrent entry)."""
        w = self.writer(name)
        if observe:
            w.observe_height(max((e.header.height for e in self.log), default=0))
        entry = w.append(op)
        self.log.append(entry)
        return entry

    def do(self, name: str, op: Operation) -> Entry:
        entry = self.make(name, op)
        self.lattice.add(entry)
        return entry

    @property
    def state(self) -> LedgerState:
        return self.lattice.state

    def statement(
        self,
        prover: str,
        award: Entry,
        *,
        input_commitment: bytes | None = None,
        output: bytes = b"out",
        bundle: bytes | None = None,
        slice_index: int | None = None,
    ) -> tuple[SignedStatement, bytes]:
        """A signed statement for `award` and its (fake) proof."""
        assert isinstance(award.op, Award)
        statement = ProofStatement(
            award_ref=award.hash,
            bundle_id=bundle if bundle is not None else h32("bundle"),
            slice_index=award.op.slice_index if slice_index is None else slice_index,
            input_commitment=(
                award.op.input_commitment if input_commitment is None else input_commitment
            ),
            output_commitment=h32("output", output),
            instances_hash=h32("instances", output),
        )
        proof = fake_proof(statement)
        return sign_statement(identity(prover), statement, proof), proof


def award_record(entry: Entry) -> AwardRecord:
    return get_award_record(entry)


def statement_array(s: ProofStatement) -> list[object]:
    return statement_to_array(s)
