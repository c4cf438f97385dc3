"""Materialise slices: from a normalised model and a partition of its nodes, standalone ONNX models.

Each slice model holds its nodes in the original (topological) order, the initializers they read
(weights stay initializers), the constant nodes they need (copied in, see graph_fold), and has as
inputs and outputs exactly its boundary tensors, named as in the whole model, with concrete shapes.
A boundary tensor is produced by one slice (or is a model input) and read by later slices (or is a
model output); one slice may have several inputs and outputs, so DAGs (skip connections, several
model inputs and outputs) need nothing special.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from slicing.errors import ModelError
from slicing.graph import get_tensor_shapes
from slicing.types import TensorInfo


@dataclass(frozen=True)
class GraphIndex:
    """Who produces and who reads each tensor of a model, and which nodes are constant."""

    nodes: tuple[onnx.NodeProto, ...]
    producer: dict[str, int]  # tensor -> index of the node that makes it
    consumers: dict[str, tuple[int, ...]]  # tensor -> indices of the nodes that read it
    constants: frozenset[str]  # initializers and outputs of constant nodes
    constant_nodes: frozenset[int]  # nodes computed from constants only (not scheduled)
    model_inputs: tuple[str, ...]
    model_outputs: tuple[str, ...]
    shapes: dict[str, TensorInfo]


def compute_graph_index(model: onnx.ModelProto) -> GraphIndex:
    nodes = tuple(model.graph.node)
    producer: dict[str, int] = {}
    consumers: dict[str, list[int]] = {}
    constants = {t.name for t in model.graph.initializer}
    constant_nodes: set[int] = set()
    for i, node in enumerate(nodes):
        for name in node.input:
            if name:
                consumers.setdefault(name, []).append(i)
        ins = [n for n in node.input if n]
        if all(n in constants for n in ins) and node.op_type not in (
            "RandomNormal",
            "RandomUniform",
        ):
            constant_nodes.add(i)
            constants.update(o for o in node.output if o)
        for name in node.output:
            if name:
                producer[name] = i
    inits = {t.name for t in model.graph.initializer}
    return GraphIndex(
        nodes=nodes,
        producer=producer,
        consumers={k: tuple(v) for k, v in consumers.items()},
        constants=frozenset(constants),
        constant_nodes=frozenset(constant_nodes),
        model_inputs=tuple(vi.name for vi in model.graph.input if vi.name not in inits),
        model_outputs=tuple(vi.name for vi in model.graph.output),
        shapes=get_tensor_shapes(model),
    )


def compute_boundaries(
    index: GraphIndex, segments: Sequence[Sequence[int]]
) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(inputs, outputs) of each segment, each in order of first appearance in the graph."""
    owner: dict[int, int] = {}
    for s, seg in enumerate(segments):
        for i in seg:
            owner[i] = s
    outputs_of_model = set(index.model_outputs)
    result = []
    for s, seg in enumerate(segments):
        produced: set[str] = set()
        ins: list[str] = []
        outs: list[str] = []
        for i in seg:
            for name in index.nodes[i].input:
                fresh = name and name not in produced and name not in ins
                if fresh and name not in index.constants:
                    ins.append(name)
            for name in index.nodes[i].output:
                if not name:
                    continue
                produced.add(name)
                readers = index.consumers.get(name, ())
                if name in outputs_of_model or any(owner.get(r) != s for r in readers):
                    outs.append(name)
        result.append((tuple(ins), tuple(outs)))
    return result


def compute_constant_closure(index: GraphIndex, seg: Sequence[int]) -> list[int]:
    """The constant nodes (and their constant ancestors) that the nodes of `seg` read."""
    need: set[int] = set()
    stack = [n for i in seg for n in index.nodes[i].input if n]
    while stack:
        name = stack.pop()
        p = index.producer.get(name)
        if p is None or p not in index.constant_nodes or p in need:
            continue
        need.add(p)
        stack.extend(n for n in index.nodes[p].input if n)
    return sorted(need)


def extract_sub_model(
    model: onnx.ModelProto,
    index: GraphIndex,
    seg: Sequence[int],
    inputs: Sequence[str],
    outputs: Sequence[str],
    name: str,
) -> onnx.ModelProto:
    """A standalone model of the nodes `seg` with the given boundary inputs and outputs."""
    node_ids = sorted({*seg, *compute_constant_closure(index, seg)})
    nodes = [index.nodes[i] for i in node_ids]
    read = {n for node in nodes for n in node.input if n}
    inits = [t for t in model.graph.initializer if t.name in read]
    produced = {o for node in nodes for o in node.output if o}
    value_info = [
        _value_info(index, t) for t in sorted(produced - set(outputs)) if t in index.shapes
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [_value_info(index, t) for t in inputs],
        [_value_info(index, t) for t in outputs],
        initializer=inits,
        value_info=value_info,
    )
    sub = helper.make_model(graph, opset_imports=list(model.opset_import))
    sub.ir_version = model.ir_version
    sub.producer_name = "dsperse-node slicing"
    return sub


def _value_info(index: GraphIndex, name: str) -> onnx.ValueInfoProto:
    info = index.shapes.get(name)
    if info is None:
        raise ModelError(f"tensor {name!r} has no concrete shape")
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(info.dtype))
    return helper.make_tensor_value_info(name, elem, list(info.shape))
