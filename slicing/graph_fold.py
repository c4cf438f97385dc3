"""Constant folding: turn nodes that compute only from constants into initializers.

Slices want weights as initializers (EZKL bakes them into the circuit), but exported models often
make them with Constant, ConstantOfShape or Shape→Gather→Concat chains. Folding evaluates such nodes
once with onnx's reference evaluator. A folded tensor larger than `FOLD_ELEMS_MAX` is left as a node
(the planner copies such constant nodes into each slice that needs them), so folding never blows up
the model's size. Dead nodes and unused initializers are removed afterwards.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

FOLD_ELEMS_MAX = 1 << 20
NONDETERMINISTIC_OPS = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
     "Bernoulli"}
)  # fmt: skip


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constant nodes into initializers (in place on `model`, which is also returned)."""
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    values: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    static = _static_shapes(model)
    kept: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    for node in graph.node:
        outputs = _evaluate(node, values, static, model, ReferenceEvaluator)
        if outputs is None or any(v.size > FOLD_ELEMS_MAX for v in outputs):
            kept.append(node)
            continue
        for name, value in zip(node.output, outputs, strict=True):
            values[name] = value
            new_inits.append(numpy_helper.from_array(value, name))
    if not new_inits:
        return model
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(new_inits)
    _drop_folded_value_info(model, {t.name for t in new_inits})
    remove_dead_nodes(model)
    return model


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        inferred = model
    out: dict[str, tuple[int, ...]] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            out[vi.name] = tuple(int(d.dim_value) for d in dims)
    return out


def _evaluate(
    node: onnx.NodeProto,
    values: dict[str, np.ndarray],
    static: dict[str, tuple[int, ...]],
    model: onnx.ModelProto,
    evaluator: type,
) -> list[np.ndarray] | None:
    if node.op_type in NONDETERMINISTIC_OPS or node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "Shape" and node.input[0] in static and len(node.attribute) == 0:
        return [np.asarray(static[node.input[0]], dtype=np.int64)]
    if not all(name == "" or name in values for name in node.input):
        return None
    if node.op_type == "Constant" and _constant_too_big(node):
        return None
    feeds = {name: values[name] for name in node.input if name}
    if sum(int(v.size) for v in feeds.values()) > FOLD_ELEMS_MAX:
        return None
    inputs = [helper.make_tensor_value_info(n, _elem(v), list(v.shape)) for n, v in feeds.items()]
    outputs = [helper.make_empty_tensor_value_info(o) for o in node.output]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    single = helper.make_model(graph, opset_imports=list(model.opset_import))
    single.ir_version = model.ir_version
    try:
        result = evaluator(single).run(None, feeds)
    except Exception:  # the reference evaluator raises many kinds; not folding is always safe
        return None
    return [np.asarray(r) for r in result]


def _constant_too_big(node: onnx.NodeProto) -> bool:
    for attr in node.attribute:
        if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
            return int(np.prod(attr.t.dims, dtype=np.int64)) > FOLD_ELEMS_MAX
    return False


def _elem(value: np.ndarray) -> int:
    return int(helper.np_dtype_to_tensor_dtype(value.dtype))


def _drop_folded_value_info(model: onnx.ModelProto, names: set[str]) -> None:
    keep = [vi for vi in model.graph.value_info if vi.name not in names]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)


def remove_dead_nodes(model: onnx.ModelProto) -> None:
    """Drop nodes whose outputs nobody uses, and initializers nobody reads."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    keep: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
