"""Fallback: a slice EZKL cannot build runs in onnxruntime, is marked unproven, and the report says
so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from slicing import api
from slicing.bundle import ScalePolicy
from slicing.prover import EzklProver
from slicing.types import Budget, SlicedModel, SliceSpec, TensorInfo

pytestmark = pytest.mark.slow


def _model(
    nodes: list[onnx.NodeProto],
    inits: list[np.ndarray],
    names: list[str],
    src: TensorInfo,
    dst: TensorInfo,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(src.name, TensorProto.FLOAT, src.shape)],
        [helper.make_tensor_value_info(dst.name, TensorProto.FLOAT, dst.shape)],
        initializer=[numpy_helper.from_array(a, n) for a, n in zip(inits, names, strict=True)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _sliced() -> SlicedModel:
    """x -> [MatMul+Relu] -> h -> [LpNormalization: no EZKL circuit] -> n -> [MatMul] -> y."""
    rng = np.random.default_rng(1)
    w1 = (rng.normal(size=(8, 16)) * 0.5).astype(np.float32)
    w2 = (rng.normal(size=(16, 4)) * 0.5).astype(np.float32)
    x, h = TensorInfo("x", (1, 8)), TensorInfo("h", (1, 16))
    n, y = TensorInfo("n", (1, 16)), TensorInfo("y", (1, 4))
    s0 = _model(
        [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["h"])],
        [w1],
        ["w1"],
        x,
        h,
    )
    s1 = _model([helper.make_node("LpNormalization", ["h"], ["n"], axis=1, p=2)], [], [], h, n)
    s2 = _model([helper.make_node("MatMul", ["n", "w2"], ["y"])], [w2], ["w2"], n, y)
    specs = tuple(
        SliceSpec(i, m, (a,), (b,), note=note)
        for i, (m, a, b, note) in enumerate(
            [(s0, x, h, "fc1"), (s1, h, n, "lpnorm"), (s2, n, y, "fc2")]
        )
    )
    return SlicedModel(specs, (x,), (y,), Budget(max_logrows=15))


def test_unbuildable_slice_runs_unproven(tmp_path: Path, cache_dir: Path) -> None:
    sliced = _sliced()
    inputs = {"x": np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8)}
    # A small range-check table (2^10) lets these tiny slices use logrows 11: fast to prove.
    policy = ScalePolicy(decomp_base=1024, decomp_legs=3)
    opts = api.BuildOptions(budget=sliced.budget, policy=policy, cache_dir=cache_dir)
    bundle = api.write_bundle(sliced, inputs, {"file": "mlp"}, tmp_path / "b", opts)
    assert [e["proven"] for e in bundle.slices] == [True, False, True]
    assert "EZKL cannot build this slice" in bundle.slices[1]["fallback"]
    assert set(bundle.slices[1]["files"]) == {"model.onnx"}
    assert bundle.slices[0]["logrows"] < 15

    report = api.prove_chain(bundle, inputs, EzklProver(cache_dir))
    assert report.proven_fraction == pytest.approx(2 / 3)
    assert not report.chain_verified and "missing proof" in report.linkage
    assert [r["proven"] for r in report.slices] == [True, False, True]
    assert report.slices[0]["verified"] and report.slices[2]["verified"]
    whole = api.run_local(bundle, inputs)["y"]["data"]
    assert np.max(np.abs(np.asarray(report.outputs["y"]["data"]) - whole)) < 0.1
