"""Seams the ledger depends on but does not implement: signature checking and proof verification.

They are `typing.Protocol`s satisfied structurally, so `ledger/` never imports the packages that
implement them (`node.identity` signs with the node's ed25519 key; `slicing` verifies EZKL proofs).
"""

from __future__ import annotations

from typing import Protocol


class SignatureScheme(Protocol):
    """Verifies detached signatures. Implementations must be pure and never raise on bad input."""

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """True iff `signature` is a valid signature of `message` by `public_key`."""
        ...


class Signer(Protocol):
    """Holds a private key and signs messages with it."""

    @property
    def public_key(self) -> bytes:
        """The raw public key (32 bytes for ed25519)."""
        ...

    def sign(self, message: bytes) -> bytes:
        """A detached signature of `message`."""
        ...


class ProofStatementView(Protocol):
    """The fields of a proof statement a verifier needs (satisfied by `ledger.containers`)."""

    @property
    def bundle_id(self) -> bytes: ...

    @property
    def slice_index(self) -> int: ...

    @property
    def input_commitment(self) -> bytes: ...

    @property
    def output_commitment(self) -> bytes: ...

    @property
    def instances_hash(self) -> bytes: ...


class ProofVerifier(Protocol):
    """Verifies a slice proof against a statement. Must be deterministic (the same inputs always
    give the same verdict on every replica) and never raise on bad input.

    It answers None when it cannot decide *yet* (e.g. the bundle's verifying key is not available
    locally): "cannot check" must never be reported as "invalid", or an honest prover could be
    slashed by a replica that lacks the bundle. The ledger then refuses the entry for now with
    `Reason.PROOF_UNDECIDED` (an IGNORE, not a REJECT: fetch it again once the bundle is here)."""

    def verify(self, statement: ProofStatementView, proof: bytes) -> bool | None:
        """True iff `proof` proves `statement`; False if it does not; None if undecidable now."""
        ...
