"""Fallback: a slice EZKL cannot build runs in onnxruntime, is marked unproven, and the report says
so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slicing import api
from slicing.prover import EzklProver

from .conftest import SMALL_POLICY, make_mlp_sliced

pytestmark = pytest.mark.slow


def test_unbuildable_slice_runs_unproven(tmp_path: Path, cache_dir: Path) -> None:
    sliced = make_mlp_sliced(with_unprovable=True)
    inputs = {"x": np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8)}
    opts = api.BuildOptions(budget=sliced.budget, policy=SMALL_POLICY, cache_dir=cache_dir)
    bundle = api.write_bundle(sliced, inputs, {"file": "mlp"}, tmp_path / "b", opts)
    assert [e["proven"] for e in bundle.slices] == [True, False, True]
    assert "EZKL cannot build this slice" in bundle.slices[1]["fallback"]
    assert set(bundle.slices[1]["files"]) == {"model.onnx"}
    assert bundle.slices[0]["logrows"] < 15
    # Build figures of the two provable slices (setup really ran: a fresh cache would show it).
    assert [s["index"] for s in opts.stats] == [0, 2]
    assert all(s["pk_bytes"] > s["vk_bytes"] > 0 for s in opts.stats)

    report = api.prove_chain(bundle, inputs, EzklProver(cache_dir))
    assert report.proven_fraction == pytest.approx(2 / 3)
    assert not report.chain_verified and "missing proof" in report.linkage
    assert [r["proven"] for r in report.slices] == [True, False, True]
    assert report.slices[0]["verified"] and report.slices[2]["verified"]
    whole = api.run_local(bundle, inputs)["y"]["data"]
    assert np.max(np.abs(np.asarray(report.outputs["y"]["data"]) - whole)) < 0.1
