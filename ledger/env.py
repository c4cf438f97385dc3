"""The injected environment of the state machine: config, signature scheme, proof verifier.

`verify_signatures=False` is the spec's `bls_active = False`: a speed switch for tests whose
subject is not signatures. Production code always builds `LedgerEnv` with signatures on.
Nodes run with both switches on.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.config import LedgerConfig
from ledger.interfaces import ProofVerifier, SignatureScheme


@dataclass(frozen=True, slots=True)
class LedgerEnv:
    config: LedgerConfig
    signatures: SignatureScheme
    verifier: ProofVerifier
    verify_signatures: bool = True
    # False only to re-check a store whose proofs were verified on arrival, where no proof
    # verifier is at hand: claims and invalid-proof evidence are then taken as verified
    # (`dsperse-node ledger verify` re-runs the proofs it can on its own afterwards).
    verify_proofs: bool = True

    def is_valid_signature(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        if not self.verify_signatures:
            return True
        return self.signatures.verify(public_key, message, signature)
