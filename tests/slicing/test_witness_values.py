"""`api.witness_chain_values` / `api.get_slice_inputs`: a requester computes the quantised chain
locally, and every slice proven on its share of it, independently and at once, links up.

The two digits slices are proven in parallel (two threads, each waiting on its own EZKL worker), as
two provers of the market would, from the values alone: no proof waits for another's outputs.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from slicing import api
from slicing.bundle import Bundle
from slicing.errors import ProofError
from slicing.linkage import split_instances
from slicing.prover import EzklProver, EzklVerifier, ProofArtifact

from .conftest import MLP_INPUT, SMALL_POLICY, make_mlp_sliced

pytestmark = pytest.mark.slow


def test_values_cover_the_chain_and_end_in_the_quantised_result(
    digits_bundle: Bundle, digits_inputs: dict[str, np.ndarray]
) -> None:
    values = api.witness_chain_values(digits_bundle, digits_inputs)
    names = ["input"] + [t["name"] for e in digits_bundle.slices for t in e["outputs"]]
    assert sorted(values) == sorted(names)
    for entry in digits_bundle.slices:
        for t in entry["inputs"] + entry["outputs"]:
            assert len(values[t["name"]]) == t["elements"]
    assert values["input"] == digits_inputs["input"].astype(np.float64).ravel().tolist()
    (many,) = api.witness_chain_many(digits_bundle, [digits_inputs])
    assert {"logits": values["logits"]} == many
    boundary = digits_bundle.slices[1]["inputs"][0]["name"]
    assert api.get_slice_inputs(digits_bundle, 1, values) == {boundary: values[boundary]}
    with pytest.raises(ProofError, match="no value"):
        api.get_slice_inputs(digits_bundle, 1, {"input": values["input"]})


def test_slices_proven_apart_from_the_values_link(
    digits_bundle: Bundle, digits_inputs: dict[str, np.ndarray], cache_dir: Path
) -> None:
    values = api.witness_chain_values(digits_bundle, digits_inputs)
    prover = EzklProver(cache_dir)

    def prove(i: int) -> ProofArtifact:
        return prover.prove_slice(digits_bundle, i, api.get_slice_inputs(digits_bundle, i, values))

    with ThreadPoolExecutor(max_workers=2) as pool:
        arts = dict(enumerate(pool.map(prove, range(len(digits_bundle.slices)))))
    assert all(a.verified for a in arts.values())
    layouts = api.get_layouts(digits_bundle)
    for i in range(len(arts) - 1):
        produced = split_instances(layouts[i], arts[i].instances)
        consumed = split_instances(layouts[i + 1], arts[i + 1].instances)
        shared = [t["name"] for t in digits_bundle.slices[i + 1]["inputs"]]
        assert shared and all(produced[f"out:{n}"] == consumed[f"in:{n}"] for n in shared)
        # ... and the rescaled outputs are the very values the next slice was fed.
        outs = [t["name"] for t in digits_bundle.slices[i]["outputs"]]
        assert [list(t) for t in arts[i].rescaled_outputs] == [values[n] for n in outs]
    assert list(arts[len(arts) - 1].rescaled_outputs[0]) == values["logits"]
    # The whole chain checks out: proofs, linkage, job input and the claimed result.
    verifier = EzklVerifier({digits_bundle.bundle_id: digits_bundle}, cache_dir)
    commitment = api.compute_job_commitment(digits_bundle, digits_inputs)
    claimed = {"logits": values["logits"]}
    api.verify_proof_chain(digits_bundle, arts, commitment, claimed, verifier)


def test_unproven_slices_run_in_onnxruntime(tmp_path: Path, cache_dir: Path) -> None:
    sliced = make_mlp_sliced(with_unprovable=True)
    opts = api.BuildOptions(budget=sliced.budget, policy=SMALL_POLICY, cache_dir=cache_dir)
    bundle = api.write_bundle(sliced, {"x": MLP_INPUT}, {"file": "mlp"}, tmp_path / "b", opts)
    assert [e["proven"] for e in bundle.slices] == [True, False, True]
    values = api.witness_chain_values(bundle, {"x": MLP_INPUT})
    assert sorted(values) == ["h", "n", "x", "y"]
    (many,) = api.witness_chain_many(bundle, [{"x": MLP_INPUT}])
    assert many == {"y": values["y"]}
    assert list(api.get_slice_inputs(bundle, 2, values)) == ["n"]
