"""split_layers: channel groups and row tiles (with halos) compute exactly what the layer does."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from onnx import helper

from slicing.graph import normalise_model
from slicing.plan import slice_model
from slicing.runner import run_whole
from slicing.split_layers import split_oversized_layers
from slicing.types import Budget
from tests.slicing.conftest_graph import (
    check_sliced,
    conv_stack_model,
    make_model,
    random_weights,
)


def rewritten_ops(model: onnx.ModelProto, rows_max: int) -> list[str]:
    return [n.op_type for n in split_oversized_layers(model, rows_max).graph.node]


def assert_rewrite_is_exact(model: onnx.ModelProto, rows_max: int) -> onnx.ModelProto:
    rewritten = split_oversized_layers(model, rows_max)
    rng = np.random.default_rng(7)
    feeds = {
        vi.name: rng.standard_normal([d.dim_value for d in vi.type.tensor_type.shape.dim]).astype(
            np.float32
        )
        for vi in model.graph.input
    }
    want = run_whole(model, feeds)
    got = run_whole(rewritten, feeds)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, atol=1e-4, rtol=1e-5)
    return rewritten


@pytest.mark.parametrize(
    ("kernel", "stride", "pad", "dilation", "pool"),
    [
        (3, 1, 1, 1, True),
        (5, 1, 0, 1, True),
        (3, 2, 1, 1, False),
        (3, 1, 2, 2, False),
        (4, 3, 2, 1, False),
        (1, 1, 0, 1, True),
    ],
)
def test_conv_tiles_with_halos_are_exact(
    kernel: int, stride: int, pad: int, dilation: int, pool: bool
) -> None:
    model = conv_stack_model(
        cin=3, cout=4, size=24, kernel=kernel, stride=stride, pad=pad, dilation=dilation,
        pool=pool,
    )  # fmt: skip
    for rows_max in (15_000, 30_000, 60_000):
        ops = [n.op_type for n in assert_rewrite_is_exact(model, rows_max).graph.node]
        if rows_max == 15_000:
            assert ops.count("Conv") > 1
            assert "Slice" in ops  # one channel is too much: tiles of rows


def test_channel_groups_only_when_enough() -> None:
    model = conv_stack_model(cin=2, cout=16, size=8, pool=True)
    rewritten = assert_rewrite_is_exact(model, 30_000)
    ops = [n.op_type for n in rewritten.graph.node]
    assert "Slice" not in ops and ops.count("Conv") > 1
    assert ops.count("BatchNormalization") == ops.count("Conv")  # the chain is split too
    assert ops.count("MaxPool") == ops.count("Conv")


def test_layers_that_fit_are_left_alone() -> None:
    model = conv_stack_model()
    assert split_oversized_layers(model, 10_000_000) is model


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_split_by_output_columns(trans_b: int) -> None:
    rng = np.random.default_rng(0)
    w = (96, 200) if trans_b else (200, 96)
    weights = random_weights(rng, w=w, b=(96,))
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="dense", transB=trans_b, alpha=0.5),
        helper.make_node("Relu", ["h"], ["y"], name="relu"),
    ]
    model = normalise_model(make_model(nodes, {"x": [1, 200]}, ["y"], weights))
    rewritten = assert_rewrite_is_exact(model, 5_000)
    assert [n.op_type for n in rewritten.graph.node].count("Gemm") >= 3
    check_sliced(model, Budget(max_logrows=15))


def test_matmul_with_bias_add_split() -> None:
    rng = np.random.default_rng(0)
    weights = random_weights(rng, w=(300, 128), b=(128,))
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
        helper.make_node("Add", ["m", "b"], ["h"], name="bias"),
        helper.make_node("Tanh", ["h"], ["y"], name="tanh"),
    ]
    model = normalise_model(make_model(nodes, {"x": [1, 300]}, ["y"], weights))
    rewritten = assert_rewrite_is_exact(model, 10_000)
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops.count("MatMul") == ops.count("Add") == ops.count("Tanh") >= 2


def test_shared_intermediate_stops_the_chain() -> None:
    rng = np.random.default_rng(0)
    weights = random_weights(rng, w=(8, 3, 3, 3))
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Add", ["c", "r"], ["y"], name="use_both"),
    ]
    model = normalise_model(make_model(nodes, {"x": [1, 3, 16, 16]}, ["y"], weights))
    rewritten = assert_rewrite_is_exact(model, 6_000)
    assert [n.op_type for n in rewritten.graph.node].count("Relu") == 1


def test_opset_9_uses_slice_attributes() -> None:
    model = conv_stack_model(cin=3, cout=4, size=24)
    model.opset_import[0].version = 9
    for node in model.graph.node:
        if node.op_type == "MaxPool":
            del node.attribute[:]
            node.attribute.extend(
                [helper.make_attribute("kernel_shape", [2, 2]),
                 helper.make_attribute("strides", [2, 2]),
                 helper.make_attribute("pads", [0, 0, 0, 0])]
            )  # fmt: skip
    model = normalise_model(model)
    rewritten = assert_rewrite_is_exact(model, 15_000)
    slices = [n for n in rewritten.graph.node if n.op_type == "Slice"]
    assert slices and all(len(n.input) == 1 for n in slices)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(min_value=5, max_value=20),
    kernel=st.integers(min_value=1, max_value=5),
    stride=st.integers(min_value=1, max_value=3),
    pad=st.integers(min_value=0, max_value=3),
    dilation=st.integers(min_value=1, max_value=2),
    cout=st.integers(min_value=1, max_value=6),
    pool=st.sampled_from([None, (2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0), (3, 3, 1)]),
    rows_max=st.integers(min_value=1_500, max_value=40_000),
)
@example(size=6, kernel=1, stride=1, pad=2, dilation=1, cout=2, pool=None, rows_max=1500)
@example(size=6, kernel=2, stride=1, pad=0, dilation=1, cout=1, pool=(2, 2, 0), rows_max=1500)
def test_any_conv_geometry_splits_exactly(
    size: int,
    kernel: int,
    stride: int,
    pad: int,
    dilation: int,
    cout: int,
    pool: tuple[int, int, int] | None,
    rows_max: int,
) -> None:
    out = (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    if out < 2 or (pool is not None and out + 2 * pool[2] < pool[0]):
        return
    model = conv_stack_model(
        cin=2, cout=cout, size=size, kernel=kernel, stride=stride, pad=pad, dilation=dilation,
        pool=pool is not None, pool_kernel=pool[0] if pool else 2,
        pool_stride=pool[1] if pool else 2, pool_pad=pool[2] if pool else 0,
    )  # fmt: skip
    assert_rewrite_is_exact(model, rows_max)


@pytest.mark.parametrize("logrows", [15, 16])
def test_sliced_conv_stack_end_to_end(logrows: int) -> None:
    model = conv_stack_model(cin=3, cout=8, size=24, kernel=3, pad=1)
    sliced = check_sliced(model, Budget(max_logrows=logrows))
    assert sliced.meta["over_budget"] == []
    assert len(slice_model(model, Budget(max_logrows=None)).slices) == 1


@pytest.mark.parametrize("trans_b", [1, 0])
def test_dense_after_split_conv_is_split_by_inputs(trans_b: int) -> None:
    model = conv_stack_model(cin=3, cout=16, size=32, kernel=3, pad=1)  # 4,096 values → dense
    if not trans_b:
        dense = next(n for n in model.graph.node if n.op_type == "Gemm")
        del dense.attribute[:]
        del dense.input[2]  # no bias either
        for k, init in enumerate(model.graph.initializer):
            if init.name == "wd":
                value = onnx.numpy_helper.to_array(init).T.copy()
                model.graph.initializer[k].CopyFrom(onnx.numpy_helper.from_array(value, "wd"))
    sliced = check_sliced(model, Budget(max_logrows=15))
    assert sliced.meta["over_budget"] == []
    notes = " | ".join(s.note for s in sliced.slices)
    assert "dense inputs 0-" in notes and "dense sum" in notes
    ops = [n.op_type for n in sliced.rewritten.graph.node]
    groups = ops.count("Gemm")  # one partial product per channel group of the conv
    assert groups > 1 and ops.count("Flatten") == groups and ops.count("Add") == groups - 1


def test_overlapping_pool_tiles_with_pool_halos() -> None:
    rng = np.random.default_rng(0)
    weights = random_weights(rng, w=(8, 3, 3, 3), b=(8,))
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["y"], name="pool", kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1]),
    ]  # fmt: skip
    model = normalise_model(make_model(nodes, {"x": [1, 3, 16, 16]}, ["y"], weights))
    ops = [n.op_type for n in assert_rewrite_is_exact(model, 50_000).graph.node]
    assert ops.count("MaxPool") == ops.count("Conv") > 1  # the pool is split with its channels
    ops = [n.op_type for n in assert_rewrite_is_exact(model, 12_000).graph.node]
    assert "Slice" in ops  # row tiles whose pooling windows overlap: each tile recomputes a halo


def test_reshape_to_a_row_counts_as_flatten_for_the_dense_split() -> None:
    model = conv_stack_model(cin=3, cout=16, size=32, kernel=3, pad=1)
    flat = next(n for n in model.graph.node if n.op_type == "Flatten")
    flat.op_type = "Reshape"
    del flat.attribute[:]
    flat.input.append("row_shape")
    model.graph.initializer.append(
        onnx.numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "row_shape")
    )
    sliced = check_sliced(normalise_model(model), Budget(max_logrows=15))
    assert sliced.meta["over_budget"] == []
    assert "dense sum" in " | ".join(s.note for s in sliced.slices)
