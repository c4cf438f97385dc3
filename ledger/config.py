"""Per-network ledger configuration and its presets (MINIMAL for tests, MAINNET-like defaults).

Constants that never vary live in `constants.py`; what a network chooses lives here. A replica
and its store are bound to one config: the store records it and refuses a different one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgpack

from ledger.constants import AMOUNT_MAX, KEY_BYTES
from ledger.errors import LedgerError


@dataclass(frozen=True, slots=True)
class LedgerConfig:
    """What a network decides. Fractions are integer numerator/denominator pairs (no floats)."""

    genesis_account: bytes  # the only key allowed to sign genesis allocations
    supply_max: int = 10**15  # genesis allocations stop at this total
    unbond_delay_heights: int = 64  # unbonding matures this many Lamport heights later
    slash_numerator: int = 1  # share of stake (bonded + unbonding) taken per offence
    slash_denominator: int = 2
    reporter_numerator: int = 1  # share of the slashed amount paid to the reporter; rest burned
    reporter_denominator: int = 4
    award_bond_min: int = 1  # a prover needs at least this much bonded to be awarded
    proof_bytes_max: int = 1024 * 1024
    pending_max: int = 200_000  # entries waiting for a dependency

    def __post_init__(self) -> None:
        checks = (
            (len(self.genesis_account) == KEY_BYTES, "genesis_account must be 32 bytes"),
            (0 < self.supply_max <= AMOUNT_MAX, "supply_max out of range"),
            (0 <= self.unbond_delay_heights <= 2**40, "unbond_delay_heights out of range"),
            (
                0 < self.slash_numerator <= self.slash_denominator,
                "slash fraction must be in (0, 1]",
            ),
            (
                0 <= self.reporter_numerator <= self.reporter_denominator
                and self.reporter_denominator > 0,
                "reporter fraction must be in [0, 1]",
            ),
            (0 <= self.award_bond_min <= AMOUNT_MAX, "award_bond_min out of range"),
            (0 < self.proof_bytes_max <= 16 * 1024 * 1024, "proof_bytes_max out of range"),
            (0 < self.pending_max <= 10_000_000, "pending_max out of range"),
        )
        for ok, message in checks:
            if not ok:
                raise LedgerError(f"invalid ledger config: {message}")

    def to_bytes(self) -> bytes:
        """Canonical encoding (stored with the database, hashed into its identity)."""
        packed: bytes = msgpack.packb(
            [
                self.genesis_account,
                self.supply_max,
                self.unbond_delay_heights,
                self.slash_numerator,
                self.slash_denominator,
                self.reporter_numerator,
                self.reporter_denominator,
                self.award_bond_min,
                self.proof_bytes_max,
                self.pending_max,
            ],
            use_bin_type=True,
        )
        return packed

    @classmethod
    def from_bytes(cls, data: bytes) -> LedgerConfig:
        try:
            fields = msgpack.unpackb(data, raw=False)
            if not isinstance(fields, list) or not all(type(x) is int for x in fields[1:]):
                raise TypeError("bad field types")
            return cls(bytes(fields[0]), *fields[1:])
        except (ValueError, TypeError, IndexError, msgpack.exceptions.UnpackException) as exc:
            raise LedgerError(f"stored ledger config is unreadable: {exc}") from None

    def digest(self) -> bytes:
        return hashlib.sha256(self.to_bytes()).digest()


def minimal_config(genesis_account: bytes) -> LedgerConfig:
    """Small numbers that make every rule reachable in a few entries (tests, simulator)."""
    return LedgerConfig(
        genesis_account=genesis_account,
        supply_max=10**9,
        unbond_delay_heights=4,
        award_bond_min=1,
        proof_bytes_max=64 * 1024,
        pending_max=100_000,
    )


def mainnet_config(genesis_account: bytes) -> LedgerConfig:
    """The defaults a real network starts from."""
    return LedgerConfig(genesis_account=genesis_account)
