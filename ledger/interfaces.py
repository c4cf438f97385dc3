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
