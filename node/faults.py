"""Named fault-injection switches for tests and the simnet: `dsperse-node run --fault NAME`.

A production node runs with none. Each switch makes the node misbehave in one named, observable
way, so tests and the simnet can exercise the protocol's defences with real processes (never a
fake prover or a stand-in network). Unknown names are refused, so a typo never passes silently.
"""

from __future__ import annotations

from collections.abc import Iterable

from node.errors import ConfigError

FAULTS = {
    "drop-ledger-gossip": "ignore every ledger gossip message: anti-entropy alone must carry "
    "the ledger to this node",
    "tamper-proofs": "publish proof statements whose proofs do not verify (a byte flipped in "
    "each real proof): requesters must slash it and re-award the slice",
    "fork-own-chain": "sign the next own transfer or bond twice at one seq (a byzantine "
    "node): honest replicas must slash it exactly once",
}


def parse_faults(names: Iterable[str]) -> frozenset[str]:
    faults = frozenset(names)
    unknown = sorted(faults - FAULTS.keys())
    if unknown:
        raise ConfigError(f"unknown fault {unknown[0]!r}; known: {', '.join(sorted(FAULTS))}")
    return faults
