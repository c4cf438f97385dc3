"""Shared fixtures for the EZKL side of slicing/: one SRS/pk cache, one digits bundle, one proven
chain.

Building and proving are the expensive parts (real EZKL, ~1 min together), so they are
session-scoped and shared by every test that needs them; tests that tamper with a bundle copy it
first.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from node.cli import main
from slicing import api
from slicing.bundle import Bundle, ScalePolicy, load_bundle
from slicing.prover import EzklProver
from slicing.types import Budget, SlicedModel, SliceSpec, TensorInfo

MODELS = Path(__file__).resolve().parents[2] / "slicing" / "models"
DIGITS = MODELS / "digits_cnn.onnx"
DIGITS_SAMPLE = MODELS / "digits_sample.json"
DIGITS_BUDGET = Budget(max_logrows=15)  # two slices, each proven in < 1 GB
# A small range-check table (2^10) lets tiny slices use logrows 11: sub-second setup and proof.
SMALL_POLICY = ScalePolicy(decomp_base=1024, decomp_legs=3)
MLP_INPUT = np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8)


def write_input(path: Path, *tensors: np.ndarray | list[float]) -> Path:
    path.write_text(json.dumps({"input_data": [np.asarray(t).ravel().tolist() for t in tensors]}))
    return path


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


def make_mlp_sliced(with_unprovable: bool) -> SlicedModel:
    """x -> [MatMul+Relu] -> h (-> [LpNormalization: no EZKL circuit] -> n) -> [MatMul] -> y."""
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
    mid = n if with_unprovable else h
    s2 = _model([helper.make_node("MatMul", [mid.name, "w2"], ["y"])], [w2], ["w2"], mid, y)
    parts = [(s0, x, h, "fc1"), (s1, h, n, "lpnorm"), (s2, mid, y, "fc2")]
    if not with_unprovable:
        del parts[1]
    specs = tuple(SliceSpec(i, m, (a,), (b,), note=note) for i, (m, a, b, note) in enumerate(parts))
    return SlicedModel(specs, (x,), (y,), Budget(max_logrows=15))


@pytest.fixture(scope="session")
def mlp_bundle(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Bundle:
    """A tiny two-slice MLP bundle (logrows 11): for tests that need any real proven bundle."""
    sliced = make_mlp_sliced(with_unprovable=False)
    opts = api.BuildOptions(budget=sliced.budget, policy=SMALL_POLICY, cache_dir=cache_dir)
    out = tmp_path_factory.mktemp("bundles") / "mlp"
    return api.write_bundle(sliced, {"x": MLP_INPUT}, {"file": "mlp"}, out, opts)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ezkl-cache")


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Bundle:
    # Built through the CLI, so `dsperse-node slice` with circuits is exercised once.
    out = tmp_path_factory.mktemp("bundles") / "digits"
    argv = [
        "slice",
        str(DIGITS),
        "--input",
        str(DIGITS_SAMPLE),
        "--out",
        str(out),
        "--quiet",
        "--max-logrows",
        str(DIGITS_BUDGET.max_logrows),
        "--cache-dir",
        str(cache_dir),
    ]
    assert main(argv) == 0
    return load_bundle(out)


@pytest.fixture(scope="session")
def digits_inputs(digits_bundle: Bundle) -> dict[str, np.ndarray]:
    return api.read_inputs(digits_bundle, DIGITS_SAMPLE)


@pytest.fixture(scope="session")
def digits_chain(
    digits_bundle: Bundle, digits_inputs: dict[str, np.ndarray], cache_dir: Path
) -> api.ChainReport:
    return api.prove_chain(digits_bundle, digits_inputs, EzklProver(cache_dir))
