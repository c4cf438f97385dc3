"""A deterministic fake prover and verifier: for protocol unit tests and the simulator ONLY.

It satisfies the `Prover` / `Verifier` seams without EZKL: a "proof" is JSON carrying the statement
(bundle id, slice index, instances) and a tag = sha256 of that statement, so tampering with any
instance makes it fail verification, and the same statement always gives the same bytes. Latency and
failures are drawn from a seeded RNG keyed by the statement, so a simulation replays exactly.
Never use it where a real proof is claimed (house rule: real parts, never stand-ins).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from slicing.errors import ProofError
from slicing.linkage import compute_felts
from slicing.prover import ProofArtifact

FAKE_SCALE = 7


def compute_fake_tag(bundle_id: str, slice_index: int, instances: Sequence[str]) -> str:
    statement = json.dumps([bundle_id, slice_index, list(instances)], separators=(",", ":"))
    return hashlib.sha256(b"dsperse-fake-proof:" + statement.encode()).hexdigest()


def compute_fake_outputs(inputs: Sequence[float], outputs_count: int) -> list[float]:
    """A deterministic stand-in for a slice's function: the input sum plus k, on a 1/4 grid."""
    total = sum(inputs)
    return [math.floor((total + k) * 4.0) / 4.0 for k in range(outputs_count)]


@dataclass
class FakeProver:
    """Seeded fake: `failure_rate` of statements fail; latency in [latency_s_min, latency_s_max]."""

    seed: int = 0
    failure_rate: float = 0.0
    latency_s_min: float = 0.0
    latency_s_max: float = 0.0

    def _rng(self, bundle_id: str, slice_index: int, inputs: Sequence[str]) -> random.Random:
        key = compute_fake_tag(bundle_id, slice_index, inputs) + str(self.seed)
        return random.Random(hashlib.sha256(key.encode()).digest())

    def get_latency_s(self, bundle_id: str, slice_index: int, inputs: Sequence[str]) -> float:
        rng = self._rng(bundle_id, slice_index, inputs)
        return rng.uniform(self.latency_s_min, self.latency_s_max)

    def prove_statement(
        self, bundle_id: str, slice_index: int, inputs: Sequence[float], outputs_count: int = 1
    ) -> ProofArtifact:
        in_felts = compute_felts(inputs, FAKE_SCALE)
        rng = self._rng(bundle_id, slice_index, in_felts)
        if rng.random() < self.failure_rate:
            raise ProofError(f"fake prover: seeded failure on slice {slice_index}")
        outputs = compute_fake_outputs(inputs, outputs_count)
        instances = tuple(in_felts + compute_felts(outputs, FAKE_SCALE))
        doc: dict[str, Any] = {
            "fake": True,
            "instances": [list(instances)],
            "tag": compute_fake_tag(bundle_id, slice_index, instances),
        }
        return ProofArtifact(
            bundle_id=bundle_id,
            slice_index=slice_index,
            proof=json.dumps(doc, separators=(",", ":")).encode(),
            instances=instances,
            rescaled_outputs=(tuple(outputs),),
            verified=True,
            figures={"latency_s": self.get_latency_s(bundle_id, slice_index, in_felts)},
        )

    def prove_slice(
        self, bundle: Any, index: int, inputs: Mapping[str, Sequence[float]]
    ) -> ProofArtifact:
        entry = bundle.manifest["slices"][index]
        flat = [float(v) for t in entry["inputs"] for v in inputs[t["name"]]]
        count = sum(int(t["elements"]) for t in entry["outputs"])
        return self.prove_statement(bundle.bundle_id, index, flat, count)


class FakeVerifier:
    """Accepts exactly the proofs FakeProver makes (any tampering with the statement fails)."""

    def verify(self, bundle_id: str, slice_index: int, proof: bytes) -> bool:
        try:
            doc = json.loads(proof)
            instances = [str(v) for v in doc["instances"][0]]
            tag = doc["tag"]
        except (ValueError, KeyError, TypeError, IndexError):
            return False
        return bool(doc.get("fake")) and tag == compute_fake_tag(bundle_id, slice_index, instances)
