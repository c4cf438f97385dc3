"""Helpers for the graph/plan/split/runner tests: synthetic models and the chained==whole check.

Not a conftest (tests/slicing/conftest.py belongs to the EZKL side); import what you need.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from slicing.graph import normalise_model
from slicing.plan import slice_model
from slicing.runner import run_chain, run_whole
from slicing.types import Budget, SlicedModel

TOLERANCE = 1e-4


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: dict[str, list[int]],
    outputs: Sequence[str],
    weights: dict[str, np.ndarray],
    opset: int = 13,
) -> onnx.ModelProto:
    """A float32 model; output shapes come from ONNX shape inference."""
    graph = helper.make_graph(
        list(nodes),
        "synthetic",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {vi.name: vi for vi in [*inferred.graph.value_info, *inferred.graph.output]}
    for out in model.graph.output:  # give the outputs their inferred shapes, as exporters do
        if out.name in known:
            out.CopyFrom(known[out.name])
    return model


def random_weights(rng: np.random.Generator, **shapes: tuple[int, ...]) -> dict[str, np.ndarray]:
    return {k: rng.standard_normal(s).astype(np.float32) * 0.5 for k, s in shapes.items()}


def random_inputs(sliced: SlicedModel, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {t.name: rng.standard_normal(t.shape).astype(t.dtype) for t in sliced.model_inputs}


def compute_max_diff(model: onnx.ModelProto, sliced: SlicedModel, seed: int = 0) -> float:
    """Largest |chained - whole| over the model outputs, on a seeded random input."""
    feeds = random_inputs(sliced, seed)
    whole = run_whole(model, feeds)
    chained = run_chain(sliced, feeds)
    return max(float(np.max(np.abs(chained[k] - v))) if v.size else 0.0 for k, v in whole.items())


def check_sliced(model: onnx.ModelProto, budget: Budget) -> SlicedModel:
    """Slice `model` (already normalised) and require chained == whole and a topological plan."""
    sliced = slice_model(model, budget)
    check_topological(sliced)
    diff = compute_max_diff(model, sliced)
    if diff > TOLERANCE:
        raise AssertionError(f"chained differs from whole by {diff}")
    return sliced


def check_topological(sliced: SlicedModel) -> None:
    """Every slice input is a model input or an output of an earlier slice; every node once."""
    known = {t.name for t in sliced.model_inputs}
    for spec in sliced.slices:
        missing = [t.name for t in spec.inputs if t.name not in known]
        if missing:
            raise AssertionError(f"slice {spec.index} reads {missing} before they are made")
        known.update(t.name for t in spec.outputs)
    covered = [n for spec in sliced.slices for n in spec.node_names]
    rewritten = sliced.rewritten
    constant = set(sliced.meta["constant_nodes"])
    expected = [n.name for n in rewritten.graph.node if n.name not in constant]
    if sorted(covered) != sorted(expected):
        raise AssertionError("the slices do not cover every node exactly once")
    if [o.name for o in sliced.model_outputs if o.name not in known]:
        raise AssertionError("a model output is never produced")


def skip_model(channels: int = 4, size: int = 12) -> onnx.ModelProto:
    """Conv → Relu → Conv, plus the block input added back (a residual skip connection)."""
    rng = np.random.default_rng(1)
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv_a", **conv),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu_a"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv_b", **conv),
        helper.make_node("Add", ["c2", "x"], ["sum"], name="skip_add"),
        helper.make_node("Relu", ["sum"], ["y"], name="relu_out"),
    ]
    weights = random_weights(
        rng, w1=(channels, channels, 3, 3), b1=(channels,), w2=(channels, channels, 3, 3),
        b2=(channels,),
    )  # fmt: skip
    return normalise_model(make_model(nodes, {"x": [1, channels, size, size]}, ["y"], weights))


def two_input_two_output_model() -> onnx.ModelProto:
    """Two inputs through separate dense branches, merged; the merge and one branch are outputs."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Gemm", ["a", "wa", "ba"], ["ha"], name="dense_a", transB=1),
        helper.make_node("Relu", ["ha"], ["ra"], name="relu_a"),
        helper.make_node("MatMul", ["b", "wb"], ["mb"], name="matmul_b"),
        helper.make_node("Add", ["mb", "bb"], ["hb"], name="bias_b"),
        helper.make_node("Sigmoid", ["hb"], ["sb"], name="sig_b"),
        helper.make_node("Add", ["ra", "sb"], ["merged"], name="merge"),
        helper.make_node("Gemm", ["merged", "wo", "bo"], ["out_main"], name="dense_out"),
    ]
    weights = random_weights(
        rng, wa=(64, 48), ba=(64,), wb=(32, 64), bb=(64,), wo=(64, 10), bo=(10,)
    )
    inputs = {"a": [1, 48], "b": [1, 32]}
    return normalise_model(make_model(nodes, inputs, ["out_main", "ra"], weights))


def conv_stack_model(
    cin: int = 3,
    cout: int = 8,
    size: int = 20,
    kernel: int = 3,
    stride: int = 1,
    pad: int = 1,
    dilation: int = 1,
    pool: bool = True,
    pool_kernel: int = 2,
    pool_stride: int = 2,
    pool_pad: int = 0,
) -> onnx.ModelProto:
    """Conv (given geometry) → BatchNorm → Relu → [MaxPool (given geometry)] → Flatten → Gemm."""
    rng = np.random.default_rng(3)
    conv = {
        "kernel_shape": [kernel, kernel], "pads": [pad] * 4, "strides": [stride, stride],
        "dilations": [dilation, dilation],
    }  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", **conv),
        helper.make_node("BatchNormalization", ["c", "s", "bn_b", "m", "v"], ["n"], name="bn"),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
    ]
    last = "r"
    out = (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    if pool:
        nodes.append(
            helper.make_node("MaxPool", ["r"], ["p"], name="pool",
                             kernel_shape=[pool_kernel] * 2, strides=[pool_stride] * 2,
                             pads=[pool_pad] * 4)
        )  # fmt: skip
        last, out = "p", (out + 2 * pool_pad - pool_kernel) // pool_stride + 1
    nodes.append(helper.make_node("Flatten", [last], ["f"], name="flatten"))
    nodes.append(helper.make_node("Gemm", ["f", "wd", "bd"], ["y"], name="dense", transB=1))
    weights = random_weights(
        rng, w=(cout, cin, kernel, kernel), b=(cout,), s=(cout,), bn_b=(cout,), m=(cout,),
        wd=(10, cout * out * out), bd=(10,),
    )  # fmt: skip
    weights["v"] = np.abs(rng.standard_normal(cout)).astype(np.float32) + 0.5
    return normalise_model(make_model(nodes, {"x": [1, cin, size, size]}, ["y"], weights))


def random_dag_model(
    seed: int, nodes_count: int, two_inputs: bool, channels: int = 4, size: int = 8
) -> onnx.ModelProto:
    """A random DAG on [1, C, H, H] tensors: convs, activations, skip Adds, Muls, pools, concats.

    Every node reads one or two earlier tensors (any of them, so skips are common); the last
    tensor and one random earlier tensor are the model outputs.
    """
    rng = np.random.default_rng(seed)
    tensors = ["x0", "x1"] if two_inputs else ["x0"]
    nodes: list[onnx.NodeProto] = []
    weights: dict[str, np.ndarray] = {}
    for k in range(nodes_count):
        a = tensors[int(rng.integers(len(tensors)))]
        b = tensors[int(rng.integers(len(tensors)))]
        out = f"t{k}"
        kind = int(rng.integers(6))
        if kind == 0:
            weights[f"w{k}"] = rng.standard_normal((channels, channels, 3, 3)).astype(np.float32)
            weights[f"w{k}"] *= 0.3 / np.sqrt(channels / 4)
            weights[f"b{k}"] = rng.standard_normal(channels).astype(np.float32) * 0.1
            nodes.append(helper.make_node("Conv", [a, f"w{k}", f"b{k}"], [out], name=f"n{k}",
                                          kernel_shape=[3, 3], pads=[1, 1, 1, 1]))  # fmt: skip
        elif kind == 1:
            nodes.append(helper.make_node("Relu", [a], [out], name=f"n{k}"))
        elif kind == 2:
            nodes.append(helper.make_node("Add", [a, b], [out], name=f"n{k}"))
        elif kind == 3:
            weights[f"m{k}"] = rng.uniform(0.5, 1.5, (1, channels, 1, 1)).astype(np.float32)
            nodes.append(helper.make_node("Mul", [a, f"m{k}"], [out], name=f"n{k}"))
        elif kind == 4:
            nodes.append(helper.make_node("MaxPool", [a], [out], name=f"n{k}",
                                          kernel_shape=[3, 3], pads=[1, 1, 1, 1]))  # fmt: skip
        else:
            weights[f"w{k}"] = rng.standard_normal((channels, 2 * channels, 1, 1)).astype(
                np.float32
            )
            weights[f"w{k}"] *= 0.3 / np.sqrt(channels / 4)
            nodes.append(helper.make_node("Concat", [a, b], [f"{out}c"], name=f"n{k}c", axis=1))
            nodes.append(helper.make_node("Conv", [f"{out}c", f"w{k}"], [out], name=f"n{k}",
                                          kernel_shape=[1, 1]))  # fmt: skip
        tensors.append(out)
    outputs = [tensors[-1]]
    extra = tensors[int(rng.integers(len(tensors) - 1))]
    if extra not in outputs and not extra.startswith("x"):
        outputs.append(extra)
    inputs = {name: [1, channels, size, size] for name in tensors if name.startswith("x")}
    used = {i for n in nodes for i in n.input}
    inputs = {k: v for k, v in inputs.items() if k in used or k == "x0"}
    return normalise_model(make_model(nodes, inputs, outputs, weights))
