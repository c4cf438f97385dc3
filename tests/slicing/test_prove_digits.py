"""End to end on the digits CNN with real EZKL: every slice proven, verified and linked; attacks
named.

The chain (conftest `digits_chain`) is proven once per session; the attack tests reuse its proofs
and make at most one extra real proof (the tampered boundary).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from slicing import api
from slicing.bundle import Bundle
from slicing.errors import LinkageError
from slicing.linkage import LinkReason, compute_felts
from slicing.prover import EzklProver, EzklVerifier, ProofArtifact, get_instances
from slicing.runner import run_whole

from .conftest import DIGITS, MODELS

pytestmark = pytest.mark.slow
# Scale 7: each value is a multiple of 2^-7; errors add up over ~5 layers of rescaling.
QUANTISATION_ATOL = 0.5


def _verifier(bundle: Bundle, cache_dir: Path) -> EzklVerifier:
    return EzklVerifier({bundle.bundle_id: bundle}, cache_dir)


def _reason(
    bundle: Bundle,
    arts: dict[int, ProofArtifact],
    cache_dir: Path,
    commitment: str,
    claimed: dict[str, list[float]] | None = None,
) -> str:
    with pytest.raises(LinkageError) as info:
        api.verify_proof_chain(bundle, arts, commitment, claimed, _verifier(bundle, cache_dir))
    return info.value.reason


def test_every_slice_proven_verified_and_linked(digits_chain: api.ChainReport) -> None:
    assert digits_chain.proven_fraction == 1.0
    assert all(row["proven"] and row["verified"] for row in digits_chain.slices)
    assert digits_chain.chain_verified, digits_chain.linkage
    for row in digits_chain.slices:
        assert row["logrows"] <= 15 and row["proof_bytes"] > 0 and row["prove_s"] > 0
        assert 0 < row["peak_rss_mb"] < 1024  # the per-slice target: under 1 GB


def test_output_equals_whole_model_within_quantisation(
    digits_chain: api.ChainReport, digits_inputs: dict[str, np.ndarray]
) -> None:
    whole = run_whole(onnx.load(str(DIGITS)), digits_inputs)["logits"].ravel()
    proven = np.asarray(digits_chain.outputs["logits"]["data"])
    assert np.max(np.abs(proven - whole)) <= QUANTISATION_ATOL
    assert int(np.argmax(proven)) == int(np.argmax(whole))


def test_slice0_instances_are_the_committed_input(
    digits_chain: api.ChainReport, digits_inputs: dict[str, np.ndarray], digits_bundle: Bundle
) -> None:
    # Our pure-Python quantisation reproduces EZKL's input field elements exactly.
    flat = digits_inputs["input"].astype(np.float64).ravel()
    expected = compute_felts(flat, digits_bundle.manifest["policy"]["scale"])
    assert list(digits_chain.artifacts[0].instances[: len(expected)]) == expected


def test_proofs_verify_on_their_own(
    digits_chain: api.ChainReport, digits_bundle: Bundle, cache_dir: Path
) -> None:
    verifier = _verifier(digits_bundle, cache_dir)
    art = digits_chain.artifacts[1]
    assert verifier.verify(digits_bundle.bundle_id, 1, art.proof)
    assert not verifier.verify("0" * 64, 1, art.proof)  # unknown bundle
    assert not verifier.verify(digits_bundle.bundle_id, 0, art.proof)  # another slice's vk


def test_tampered_boundary_is_rejected(
    digits_chain: api.ChainReport, digits_bundle: Bundle, cache_dir: Path
) -> None:
    # A valid proof of slice 1, but on a boundary tensor slice 0 never produced.
    boundary = digits_bundle.slices[1]["inputs"][0]["name"]
    honest = list(digits_chain.artifacts[0].rescaled_outputs[0])
    tampered = [v + 1.0 if k == 0 else v for k, v in enumerate(honest)]
    forged = EzklProver(cache_dir).prove_slice(digits_bundle, 1, {boundary: tampered})
    assert forged.verified
    arts = {0: digits_chain.artifacts[0], 1: forged}
    assert _reason(digits_bundle, arts, cache_dir, digits_chain.input_commitment) == (
        LinkReason.TAMPERED_BOUNDARY.value
    )


def test_swapped_proofs_are_rejected(
    digits_chain: api.ChainReport, digits_bundle: Bundle, cache_dir: Path
) -> None:
    arts = {0: digits_chain.artifacts[1], 1: digits_chain.artifacts[0]}
    assert _reason(digits_bundle, arts, cache_dir, digits_chain.input_commitment) == (
        LinkReason.PROOF_SWAPPED.value
    )


def test_wrong_job_input_is_rejected(
    digits_chain: api.ChainReport, digits_bundle: Bundle, cache_dir: Path
) -> None:
    with np.load(MODELS / "digits_heldout.npz") as held:
        other = {"input": np.asarray(held["x"][1], dtype=np.float32).reshape(1, 1, 8, 8)}
    commitment = api.compute_job_commitment(digits_bundle, other)
    assert commitment != digits_chain.input_commitment
    arts = dict(digits_chain.artifacts)
    assert _reason(digits_bundle, arts, cache_dir, commitment) == LinkReason.WRONG_JOB_INPUT.value


def test_edited_proof_is_invalid(
    digits_chain: api.ChainReport, digits_bundle: Bundle, cache_dir: Path
) -> None:
    art = digits_chain.artifacts[1]
    doc = json.loads(art.proof)
    doc["instances"][0][-1] = compute_felts([3.0], 7)[0]  # claim another logit
    proof = json.dumps(doc).encode()
    edited = ProofArtifact(art.bundle_id, 1, proof, get_instances(proof), art.rescaled_outputs)
    arts = {0: digits_chain.artifacts[0], 1: edited}
    assert _reason(digits_bundle, arts, cache_dir, digits_chain.input_commitment) == (
        LinkReason.INVALID_PROOF.value
    )


def test_wrong_claimed_result_is_rejected(
    digits_chain: api.ChainReport, digits_bundle: Bundle, cache_dir: Path
) -> None:
    claimed = {"logits": [v + 1.0 for v in digits_chain.outputs["logits"]["data"]]}
    arts = dict(digits_chain.artifacts)
    assert _reason(digits_bundle, arts, cache_dir, digits_chain.input_commitment, claimed) == (
        LinkReason.WRONG_RESULT.value
    )
