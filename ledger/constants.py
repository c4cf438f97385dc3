"""Protocol constants of the ledger: sizes, limits and hashing domains (never per network)."""

from __future__ import annotations

from typing import Final

HASH_BYTES: Final = 32
KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
ZERO_HASH: Final = bytes(HASH_BYTES)

AMOUNT_MAX: Final = 2**63 - 1  # every amount, balance and sum fits a signed 64-bit integer
HEIGHT_MAX: Final = 2**62  # Lamport heights; leaves room for `height + unbond delay`
SEQ_MAX: Final = 2**40
SLICE_INDEX_MAX: Final = 2**16 - 1
ROUND_MAX: Final = 1024  # re-awards of one slice
ENTRY_OVERHEAD_BYTES_MAX: Final = 64 * 1024  # an entry's bytes besides its proof
UNBONDINGS_MAX: Final = 64  # concurrent unbondings per account (bounds slash and withdraw work)

# Domain separation: a signature or hash made for one purpose never verifies for another.
DOMAIN_ENTRY: Final = b"dsperse-ledger/entry/v1\x00"
DOMAIN_BODY: Final = b"dsperse-ledger/body/v1\x00"
DOMAIN_STATEMENT: Final = b"dsperse-ledger/statement/v1\x00"
DOMAIN_PROOF: Final = b"dsperse-ledger/proof/v1\x00"
DOMAIN_OFFENCE: Final = b"dsperse-ledger/offence/v1\x00"
DOMAIN_STATE: Final = b"dsperse-ledger/state/v1\x00"
