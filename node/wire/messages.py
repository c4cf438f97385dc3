"""Protocol message bodies. Each is a frozen dataclass registered under a (type, version).

Add a message here (or in a module imported by `node.wire`) with `@message("name", version)`;
every field needs a type the schema supports and, for anything unbounded, a `limit(...)`.
The signer of the envelope is the author: bodies never repeat the author's key or peer id.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.wire.registry import message
from node.wire.schema import Limits, limit

MULTIADDR_LEN_MAX = 256


@message("capacity_advert", 1)
@dataclass(frozen=True, slots=True)
class CapacityAdvert:
    """A prover's signed statement of what it can take on now, gossiped at a low rate."""

    free_slots: int = limit(value_max=1024)
    total_slots: int = limit(value_min=1, value_max=1024)
    price_per_slice: int = limit(value_max=2**63 - 1)  # smallest ledger unit per slice proof
    max_logrows: int = limit(value_min=1, value_max=32)  # largest circuit it will prove
    memory_mb_max: int = limit(value_min=1, value_max=2**32)
    software_version: str = limit(length_min=1, length_max=32)
    ezkl_version: str = limit(length_max=32)
    listen_addrs: tuple[str, ...] = limit(
        length_max=8, item=Limits(length_min=1, length_max=MULTIADDR_LEN_MAX)
    )

    def __post_init__(self) -> None:
        if self.free_slots > self.total_slots:
            raise ValueError("free_slots exceeds total_slots")
