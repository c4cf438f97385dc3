"""Linkage: a chain of slice proofs is one verified result only if its public instances line up.

Pure (no EZKL): proof verification is injected. A proof's public instances
(`proof["instances"][0]`) are the quantised input tensors then the output tensors of its slice,
flattened, as little-endian hex field elements. Every slice of a bundle uses one scale, so a
boundary tensor must carry *identical* elements on its producer's output side and on each
consumer's input side. Rules, checked in this order: each proof has the layout of its slice and
verifies (else PROOF_SWAPPED / INVALID_PROOF); model inputs hash to the job's input commitment
(WRONG_JOB_INPUT); boundaries match (TAMPERED_BOUNDARY); model outputs equal the claimed result
(WRONG_RESULT).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from slicing.errors import LinkageError

# The BN254 scalar field modulus: EZKL's field elements live in Z_P.
FIELD_MODULUS = 21888242871839275222246405745257275088548364400416034343698204186575808495617


class LinkReason(StrEnum):
    INVALID_PROOF = "invalid proof"
    PROOF_SWAPPED = "proof swapped between slices"
    MISSING_PROOF = "missing proof"
    WRONG_JOB_INPUT = "wrong job input"
    TAMPERED_BOUNDARY = "tampered boundary tensor"
    WRONG_RESULT = "wrong result"


@dataclass(frozen=True, slots=True)
class SliceLayout:
    """Names and element counts of a slice's public tensors, in instance order."""

    index: int
    inputs: tuple[tuple[str, int], ...]
    outputs: tuple[tuple[str, int], ...]

    @property
    def instances_count(self) -> int:
        return sum(n for _, n in self.inputs) + sum(n for _, n in self.outputs)


def compute_quantised(value: float, scale: int) -> int:
    """EZKL's quantisation: round(value * 2^scale), halves away from zero (Rust's f64::round)."""
    scaled = value * (1 << scale)
    return int(math.copysign(math.floor(abs(scaled) + 0.5), scaled))


def compute_felt_hex(value: int) -> str:
    """An integer as EZKL writes a field element: 32 bytes little-endian, hex, no prefix."""
    return (value % FIELD_MODULUS).to_bytes(32, "little").hex()


def compute_felts(values: Iterable[float], scale: int) -> list[str]:
    return [compute_felt_hex(compute_quantised(float(v), scale)) for v in values]


def compute_commitment(named_felts: Mapping[str, Sequence[str]]) -> str:
    """sha256 over the canonical JSON of {tensor name: field elements}."""
    canonical = json.dumps(
        {k: list(v) for k, v in sorted(named_felts.items())}, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def compute_input_commitment(inputs: Mapping[str, Iterable[float]], scale: int) -> str:
    """The job input commitment: hash of the model inputs quantised at the bundle's scale."""
    return compute_commitment({name: compute_felts(v, scale) for name, v in inputs.items()})


def split_instances(layout: SliceLayout, instances: Sequence[str]) -> dict[str, list[str]]:
    """{("in"|"out", name) flattened -> elements}: keys are "in:NAME" and "out:NAME"."""
    out: dict[str, list[str]] = {}
    pos = 0
    for side, tensors in (("in", layout.inputs), ("out", layout.outputs)):
        for name, count in tensors:
            out[f"{side}:{name}"] = list(instances[pos : pos + count])
            pos += count
    return out


def verify_chain(
    layouts: Sequence[SliceLayout],
    instances: Mapping[int, Sequence[str]],
    verify_proof: Callable[[int, int], bool],
    model_inputs: Sequence[str],
    model_outputs: Sequence[str],
    input_commitment: str | None,
    claimed_outputs: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Raise LinkageError(reason) unless the proofs of every slice in `layouts` form one result.

    `instances[i]` are slice i's proof instances; `verify_proof(i, j)` checks the proof given for
    slice i against slice j's verifying key (j != i only to name a swapped proof). Slices
    missing from `instances` (unproven) break the chain.
    """
    layouts_by_index = {layout.index: layout for layout in layouts}
    for layout in layouts:
        i = layout.index
        if i not in instances:
            raise LinkageError(LinkReason.MISSING_PROOF.value, f"slice {i} has no proof")
        # A proof made for another slice's circuit has another instance layout, or fails our vk.
        if len(instances[i]) != layout.instances_count:
            raise LinkageError(
                LinkReason.PROOF_SWAPPED.value,
                f"slice {i}: {len(instances[i])} instances, its circuit has "
                f"{layout.instances_count}",
            )
        if not verify_proof(i, i):
            others = [o.index for o in layouts if o.index != i]
            others = [j for j in others if layouts_by_index[j].instances_count == len(instances[i])]
            owner = next((j for j in others if verify_proof(i, j)), None)
            if owner is not None:
                raise LinkageError(
                    LinkReason.PROOF_SWAPPED.value, f"proof given for slice {i} is slice {owner}'s"
                )
            raise LinkageError(LinkReason.INVALID_PROOF.value, f"slice {i} does not verify")
    split = {layout.index: split_instances(layout, instances[layout.index]) for layout in layouts}
    producer: dict[str, list[str]] = {}
    for layout in layouts:
        for name, _ in layout.outputs:
            producer[name] = split[layout.index][f"out:{name}"]
    seen_inputs: dict[str, list[str]] = {}
    for layout in layouts:
        for name, _ in layout.inputs:
            got = split[layout.index][f"in:{name}"]
            if name in model_inputs:
                # Every slice reading a model input must read the same committed input.
                if seen_inputs.setdefault(name, got) != got:
                    raise LinkageError(LinkReason.WRONG_JOB_INPUT.value, f"slice {layout.index}")
            elif producer.get(name) != got:
                raise LinkageError(
                    LinkReason.TAMPERED_BOUNDARY.value,
                    f"tensor {name!r} differs between its producer and slice {layout.index}",
                )
    if input_commitment is not None and compute_commitment(seen_inputs) != input_commitment:
        raise LinkageError(LinkReason.WRONG_JOB_INPUT.value, "model inputs != job commitment")
    if claimed_outputs is not None:
        for name in model_outputs:
            if list(claimed_outputs.get(name, ())) != producer.get(name):
                raise LinkageError(LinkReason.WRONG_RESULT.value, f"output {name!r}")
