"""graph.load_model: bad files give one specific ModelError; good models come out normalised."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from slicing.errors import ModelError, SlicingError
from slicing.graph import get_model_inputs, get_tensor_shapes, load_model, normalise_model
from slicing.models import DIGITS_MODEL
from slicing.runner import run_whole
from tests.slicing.conftest_graph import make_model, random_weights


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def test_digits_loads_with_concrete_shapes_and_defaults() -> None:
    model = load_model(DIGITS_MODEL)
    assert get_model_inputs(model)[0].shape == (1, 1, 8, 8)
    shapes = get_tensor_shapes(model)
    for node in model.graph.node:
        assert node.output[0] in shapes
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    names = {a.name for a in conv.attribute}
    assert {"kernel_shape", "strides", "pads", "dilations"} <= names


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "nope.onnx")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        load_model(tmp_path / "e.onnx")


def test_text_file_is_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "t.onnx"
    path.write_text("this is not a model\n" * 10)
    with pytest.raises(ModelError, match="not an ONNX model"):
        load_model(path)


@pytest.mark.parametrize("keep", [0.3, 0.5, 0.9, 0.999])
def test_truncated_file(tmp_path: Path, keep: float) -> None:
    data = DIGITS_MODEL.read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "r.onnx"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(SlicingError):
        load_model(path)


def test_invalid_graph_reports_the_checker(tmp_path: Path) -> None:
    node = helper.make_node("Relu", ["undefined_tensor"], ["y"], name="r")
    model = make_model([node], {"x": [1, 4]}, ["y"], {})
    with pytest.raises(ModelError, match="invalid ONNX model"):
        load_model(save(model, tmp_path / "bad.onnx"))


def test_conv_defaults_are_spelled_out(tmp_path: Path) -> None:
    weights = random_weights(np.random.default_rng(0), w=(2, 1, 3, 3))
    node = helper.make_node("Conv", ["x", "w"], ["y"])  # no name, no strides/pads/dilations
    model = load_model(
        save(make_model([node], {"x": [1, 1, 6, 6]}, ["y"], weights), tmp_path / "c.onnx")
    )
    conv = model.graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    assert attrs["strides"] == [1, 1]
    assert attrs["pads"] == [0, 0, 0, 0]
    assert attrs["dilations"] == [1, 1]
    assert attrs["kernel_shape"] == [3, 3]
    assert conv.name


def test_auto_pad_becomes_explicit_pads_with_same_result() -> None:
    weights = random_weights(np.random.default_rng(0), w=(2, 1, 4, 4))
    node = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])
    raw = make_model([node], {"x": [1, 1, 9, 9]}, ["y"], weights)
    model = normalise_model(raw)
    attrs = {a.name: helper.get_attribute_value(a) for a in model.graph.node[0].attribute}
    assert "auto_pad" not in attrs
    assert attrs["pads"] == [1, 1, 2, 2]
    x = {"x": np.random.default_rng(1).standard_normal((1, 1, 9, 9)).astype(np.float32)}
    np.testing.assert_allclose(run_whole(model, x)["y"], run_whole(raw, x)["y"], atol=1e-6)


def test_symbolic_batch_is_fixed_to_one() -> None:
    node = helper.make_node("Relu", ["x"], ["y"])
    raw = make_model([node], {"x": ["N", 5]}, ["y"], {})  # type: ignore[dict-item]
    model = normalise_model(raw)
    assert get_model_inputs(model)[0].shape == (1, 5)


def test_symbolic_inner_dimension_is_rejected() -> None:
    node = helper.make_node("Relu", ["x"], ["y"])
    raw = make_model([node], {"x": [1, "L"]}, ["y"], {})  # type: ignore[list-item]
    with pytest.raises(ModelError, match="symbolic dimension 1"):
        normalise_model(raw)


def test_node_names_are_made_unique() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="dup"),
        helper.make_node("Relu", ["a"], ["b"], name="dup"),
        helper.make_node("Relu", ["b"], ["y"]),
    ]
    model = normalise_model(make_model(nodes, {"x": [1, 3]}, ["y"], {}))
    names = [n.name for n in model.graph.node]
    assert len(set(names)) == 3 and all(names)


def test_constants_are_folded_into_initializers() -> None:
    shape = helper.make_tensor("shape", onnx.TensorProto.INT64, [2], [1, 6])
    nodes = [
        helper.make_node("Constant", [], ["k"], value=helper.make_tensor(
            "k", onnx.TensorProto.FLOAT, [6], [1, 2, 3, 4, 5, 6])),
        helper.make_node("Constant", [], ["s"], value=shape),
        helper.make_node("Reshape", ["k", "s"], ["k2"]),
        helper.make_node("Mul", ["x", "k2"], ["y"]),
    ]  # fmt: skip
    model = normalise_model(make_model(nodes, {"x": [1, 6]}, ["y"], {}))
    assert [n.op_type for n in model.graph.node] == ["Mul"]
    x = {"x": np.ones((1, 6), np.float32)}
    np.testing.assert_array_equal(run_whole(model, x)["y"], [[1, 2, 3, 4, 5, 6]])


def test_initializers_listed_as_inputs_are_not_model_inputs() -> None:
    weights = random_weights(np.random.default_rng(0), w=(3, 3))
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    raw = make_model([node], {"x": [1, 3]}, ["y"], weights)
    raw.graph.input.append(helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [3, 3]))
    model = normalise_model(raw)
    assert [t.name for t in get_model_inputs(model)] == ["x"]


def test_control_flow_is_rejected() -> None:
    branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["o"])], "b", [],
        [helper.make_tensor_value_info("o", onnx.TensorProto.FLOAT, [1, 2])],
    )  # fmt: skip
    cond = helper.make_node("Constant", [], ["c"], value=helper.make_tensor(
        "c", onnx.TensorProto.BOOL, [], [True]))  # fmt: skip
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    with pytest.raises(ModelError, match="control flow"):
        normalise_model(make_model([cond, node], {"x": [1, 2]}, ["y"], {}))
