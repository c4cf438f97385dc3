"""Heuristic EZKL cost model: circuit rows of a sub-graph, its logrows and proving memory.

Calibrated against `ezkl.gen_settings` num_rows (EZKL 23.0.5, default run args: scales 7,
num_inner_cols 2) on single layers and small graphs, measured in a throwaway script. A slice's rows
are about `5.5 * input elements + 9.5 * output elements + the sum over its nodes`:

- a public input element costs ~5.5 rows and a public output element ~9.5 (quantisation and range
  checks); this is why boundaries are not free and cheap neighbours are merged;
- a linear op (Conv, Gemm, MatMul) costs about `0.5 * K + 25.5` rows per output element, where K is
  the dot-product length (Cin/group * kernel area, or the inner dimension): two inner columns hold
  the K multiply-adds, plus a fixed cost per output for rescaling;
- ReLU ~8 rows per element, Add ~1, Mul/BatchNorm ~24.5, MaxPool ~`9 * window + 1` per output;
- data movement (Slice, Concat, Reshape, Flatten, ...) ~1 or nothing.

Examples (estimate / EZKL): Conv(3→6, 5×5)+ReLU on 3×32×32: 395,627 / 395,568;
Conv(6→16, 5×5)+ReLU+MaxPool on 6×14×14: 198,668 / 198,480; Gemm(400→120)+ReLU: 31,372 / 31,040;
BatchNorm on 4×16×16: 40,448 / 40,448. Rows do not depend on the scales (same at 7, 10 and 13).
After `calibrate_settings(target="resources")` EZKL needs fewer rows still (e.g. 28,280 for that
Gemm) and never fewer than logrows 15 (its 14-bit range-check table), hence `MIN_LOGROWS`.
Proving memory follows logrows (measured 0.35 GB at 15, 1.4 GB at 17, 5.7 GB at 18, 11.4 GB at 19).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import onnx
from onnx import helper

from slicing.types import SliceCost, TensorInfo

MIN_LOGROWS = 15
RESERVED_ROWS = 512  # blinding and padding rows EZKL keeps free at the bottom of the circuit
PROVE_MB_AT_MIN_LOGROWS = 350
INPUT_ROWS_PER_ELEM = 5.5
OUTPUT_ROWS_PER_ELEM = 9.5
LINEAR_ROWS_PER_MAC = 0.5
LINEAR_ROWS_PER_OUTPUT = 25.5
ACTIVATION_ROWS_PER_ELEM = 8.0
RESCALE_ROWS_PER_ELEM = 24.5  # an op whose result is rescaled (Mul, Div, BatchNorm, ...)
GATHER_ROWS_PER_ELEM = 1.75  # Slice/Gather/Split: measured 1.5-1.7 per element
GATHER_OPS = frozenset({"Slice", "Gather", "Split"})
CONCAT_ROWS_PER_ELEM = 0.5
POOL_ROWS_PER_WINDOW_ELEM = 9.0  # MaxPool 2×2: 37 rows per output

LINEAR_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
FREE_OPS = frozenset(
    {"Reshape", "Flatten", "Transpose", "Identity", "Dropout", "Squeeze", "Unsqueeze",
     "Pad", "Expand", "Tile", "Shape", "Constant", "ConstantOfShape", "Cast"}
)  # fmt: skip
ACTIVATION_OPS = frozenset(
    {"Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "Abs",
     "Sign", "Elu", "Selu", "Softplus", "Softsign", "Exp", "Log", "Sqrt", "Erf", "Gelu", "Neg",
     "Floor", "Ceil", "Round", "Max", "Min"}
)  # fmt: skip
CHEAP_ELEMENTWISE_OPS = frozenset({"Add", "Sub", "Sum"})
RESCALE_OPS = frozenset({"Mul", "Div", "BatchNormalization", "Pow", "Reciprocal"})


def compute_logrows(rows: int) -> int:
    return max(MIN_LOGROWS, math.ceil(math.log2(rows + RESERVED_ROWS)))


# Peak proving RSS per logrows (docs/ezkl-pitfalls.md E4); beyond the table, doubling per logrow.
PROVE_MB_BY_LOGROWS = {15: 350, 16: 700, 17: 1_400, 18: 5_700, 19: 11_400}


def compute_memory_mb(logrows: int) -> int:
    """Estimated peak memory (MB) to prove a circuit of `logrows` (setup needs about half)."""
    if logrows in PROVE_MB_BY_LOGROWS:
        return PROVE_MB_BY_LOGROWS[logrows]
    if logrows < MIN_LOGROWS:
        return PROVE_MB_AT_MIN_LOGROWS
    top = max(PROVE_MB_BY_LOGROWS)
    return PROVE_MB_BY_LOGROWS[top] << (logrows - top)


def compute_rows_max(logrows: int) -> int:
    """The most rows a circuit of `logrows` can hold under this model."""
    return (1 << logrows) - RESERVED_ROWS


def compute_cost(rows: float) -> SliceCost:
    rows_int = math.ceil(rows)
    logrows = compute_logrows(rows_int)
    return SliceCost(rows=rows_int, logrows=logrows, memory_mb_estimate=compute_memory_mb(logrows))


def _numel(shape: Iterable[int]) -> int:
    return int(np.prod(tuple(shape), dtype=np.int64))


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def compute_node_rows(node: onnx.NodeProto, shapes: Mapping[str, TensorInfo]) -> float:
    """Estimated rows of one node, from the shapes of its inputs and outputs."""
    op = node.op_type
    out = shapes.get(node.output[0]) if node.output else None
    out_elems = _numel(out.shape) if out is not None else 0
    if op in FREE_OPS:
        return 0.0
    if op in GATHER_OPS:
        outs = [shapes.get(o) for o in node.output if o]
        return GATHER_ROWS_PER_ELEM * sum(_numel(t.shape) for t in outs if t is not None)
    if op == "Concat":
        return CONCAT_ROWS_PER_ELEM * out_elems
    if op in LINEAR_OPS:
        return out_elems * (
            LINEAR_ROWS_PER_MAC * _dot_length(node, shapes) + LINEAR_ROWS_PER_OUTPUT
        )
    if op in ACTIVATION_OPS:
        return ACTIVATION_ROWS_PER_ELEM * out_elems
    if op in CHEAP_ELEMENTWISE_OPS:
        return 1.0 * out_elems
    if op == "MaxPool":
        window = _numel(_attr(node, "kernel_shape", [1]))  # type: ignore[arg-type]
        return (POOL_ROWS_PER_WINDOW_ELEM * window + 1.0) * out_elems
    if op in ("AveragePool", "GlobalAveragePool", "ReduceMean", "ReduceSum"):
        first = shapes.get(node.input[0])
        in_elems = _numel(first.shape) if first is not None else out_elems
        ratio = in_elems / max(out_elems, 1)
        return (0.5 * ratio + RESCALE_ROWS_PER_ELEM) * out_elems
    if op in ("Softmax", "LogSoftmax", "LRN"):
        return 6 * RESCALE_ROWS_PER_ELEM * out_elems
    # Mul, Div, BatchNormalization and anything unknown: one rescaled op per element.
    return RESCALE_ROWS_PER_ELEM * out_elems


def _dot_length(node: onnx.NodeProto, shapes: Mapping[str, TensorInfo]) -> int:
    weight = shapes.get(node.input[1]) if len(node.input) > 1 else None
    if weight is None:
        return 1
    if node.op_type == "Conv":
        return _numel(weight.shape[1:])
    if node.op_type == "ConvTranspose":
        return _numel(weight.shape[:1]) * _numel(weight.shape[2:])
    if node.op_type == "Gemm":
        first = shapes.get(node.input[0])
        if first is None:
            return 1
        trans_a = int(_attr(node, "transA", 0))  # type: ignore[call-overload]
        return int(first.shape[0] if trans_a else first.shape[-1])
    first = shapes.get(node.input[0])  # MatMul
    return int(first.shape[-1]) if first is not None and first.shape else 1


def compute_input_rows(inputs: Iterable[TensorInfo]) -> float:
    return INPUT_ROWS_PER_ELEM * sum(_numel(t.shape) for t in inputs)


def compute_output_rows(outputs: Iterable[TensorInfo]) -> float:
    return OUTPUT_ROWS_PER_ELEM * sum(_numel(t.shape) for t in outputs)


def estimate_cost(sub_model: onnx.ModelProto) -> SliceCost:
    """Heuristic cost of a standalone sub-model with concrete shapes (e.g. a SliceSpec.model)."""
    from slicing.graph import get_model_inputs, get_model_outputs, get_tensor_shapes, infer_shapes

    shapes = get_tensor_shapes(sub_model)
    if any(o not in shapes for n in sub_model.graph.node for o in n.output if o):
        shapes = get_tensor_shapes(infer_shapes(sub_model, "sub-model"))
    rows = compute_input_rows(get_model_inputs(sub_model))
    rows += compute_output_rows(get_model_outputs(sub_model))
    rows += sum(compute_node_rows(node, shapes) for node in sub_model.graph.node)
    return compute_cost(rows)
