"""Input-split of a dense layer fed by a channel-split layer: their joint tensor is never built.

A conv layer split into channel groups ends in a Concat; when that Concat is followed by
Flatten (or Reshape to [1, N]) → Gemm (the usual conv → dense hand-over), Flatten of a channel
range is a contiguous range of the flat vector. So `Gemm(Flatten(Concat(g_0..g_P)))` equals
`Σ_k Gemm_k(Flatten(g_k))` with `Gemm_k` using the rows of the weight for that range (the bias
once). Each partial product sits next to its group, only the partials (N values each) cross to
the slice that adds them, and the large concatenated tensor is never materialised. Used only
when the Concat alone would not fit a slice.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from slicing.onnx_split import GraphIndex
from slicing.plan_cost import CONCAT_ROWS_PER_ELEM, INPUT_ROWS_PER_ELEM, OUTPUT_ROWS_PER_ELEM


def find_flatten_dense(
    index: GraphIndex, tensor: str, inits: dict[str, onnx.TensorProto]
) -> tuple[int, int] | None:
    """(Flatten, Gemm) node indices when `tensor` feeds only Flatten(axis=1) → Gemm(weights).

    A Reshape to [1, N] (batch 1, everything else flattened) counts as that Flatten.
    """
    flat_i = _sole_reader(index, tensor)
    if flat_i is None:
        return None
    flat = index.nodes[flat_i]
    flat_shape = index.shapes[flat.output[0]].shape if flat.output[0] in index.shapes else ()
    if flat.op_type == "Reshape":
        if flat.input[0] != tensor or len(flat_shape) != 2 or flat_shape[0] != 1:
            return None
    elif flat.op_type != "Flatten" or _attr_int(flat, "axis", 1) != 1:
        return None
    gemm_i = _sole_reader(index, flat.output[0])
    if gemm_i is None:
        return None
    gemm = index.nodes[gemm_i]
    bias_ok = len(gemm.input) < 3 or not gemm.input[2] or gemm.input[2] in inits
    if (
        gemm.op_type != "Gemm"
        or gemm.input[0] != flat.output[0]
        or gemm.input[1] not in inits
        or _attr_int(gemm, "transA", 0) != 0
        or not bias_ok
    ):
        return None
    return flat_i, gemm_i


def is_concat_too_big(index: GraphIndex, tensor: str, capacity: float) -> bool:
    """Whether a slice holding only the Concat that makes `tensor` would exceed `capacity`."""
    elems = math.prod(index.shapes[tensor].shape)
    per_elem = CONCAT_ROWS_PER_ELEM + INPUT_ROWS_PER_ELEM + OUTPUT_ROWS_PER_ELEM
    return per_elem * elems > capacity


def fuse_into_dense(
    index: GraphIndex,
    nodes: list[onnx.NodeProto],
    groups: list[tuple[int, int]],
    flat_i: int,
    gemm_i: int,
    inits: dict[str, onnx.TensorProto],
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Replace the final channel Concat of a rewritten layer by per-group partial Gemms and Adds.

    `groups` are the channel ranges [c0, c1) of the Concat's inputs, in order.
    """
    concat = nodes[-1]
    out = concat.output[0]
    spatial = math.prod(index.shapes[out].shape[2:])
    flat, gemm = index.nodes[flat_i], index.nodes[gemm_i]
    weight = numpy_helper.to_array(inits[gemm.input[1]])
    trans_b = _attr_int(gemm, "transB", 0)
    result = list(nodes[:-1])
    new_inits: list[onnx.TensorProto] = []
    partials: list[str] = []
    for k, (group, (c0, c1)) in enumerate(zip(concat.input, groups, strict=True)):
        r0, r1 = c0 * spatial, c1 * spatial
        rows = weight[:, r0:r1] if trans_b else weight[r0:r1, :]
        w_name = f"{gemm.input[1]}@{gemm.name}_k{r0}_{r1}"
        new_inits.append(numpy_helper.from_array(np.ascontiguousarray(rows), w_name))
        tag = f"split: {gemm.name} inputs {r0}-{r1 - 1}"
        f_out = f"{flat.output[0]}@k{k}"
        y_out = f"{gemm.output[0]}@k{k}"
        gemm_inputs = [f_out, w_name]
        if k == 0 and len(gemm.input) > 2 and gemm.input[2]:
            gemm_inputs.append(gemm.input[2])
        part = [
            helper.make_node("Flatten", [group], [f_out], name=f"{flat.name}/k{k}", axis=1,
                             doc_string=tag),  # a Reshape to [1, N] is this Flatten too
            helper.make_node("Gemm", gemm_inputs, [y_out], name=f"{gemm.name}/k{k}",
                             doc_string=tag),
        ]  # fmt: skip
        part[1].attribute.extend(a for a in gemm.attribute)
        at = result.index(_producer(result, group)) + 1
        result[at:at] = part
        partials.append(y_out)
    acc = partials[0]
    for k, name in enumerate(partials[1:], start=1):
        target = gemm.output[0] if k == len(partials) - 1 else f"{gemm.output[0]}@sum{k}"
        result.append(
            helper.make_node("Add", [acc, name], [target], name=f"{gemm.name}/sum{k}",
                             doc_string=f"split: {gemm.name} sum")
        )  # fmt: skip
        acc = target
    return result, new_inits


def _producer(nodes: list[onnx.NodeProto], tensor: str) -> onnx.NodeProto:
    for node in nodes:
        if tensor in node.output:
            return node
    raise KeyError(tensor)


def _sole_reader(index: GraphIndex, tensor: str) -> int | None:
    readers = index.consumers.get(tensor, ())
    if tensor in index.model_outputs or len(readers) != 1:
        return None
    return readers[0]


def _attr_int(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(helper.get_attribute_value(a))
    return default
