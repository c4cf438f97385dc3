"""Intra-layer splits: rewrite a layer too big for one slice into parts whose outputs concatenate.

A "layer" is a linear node (Conv with group 1, Gemm, MatMul with a weight initializer) plus the
chain of per-channel nodes that follows it alone (Relu-like activations, BatchNormalization, a bias
Add, and for Conv also MaxPool/AveragePool). When its heuristic cost exceeds the capacity, the layer
is cut into parts by output channel groups (weights and per-channel parameters sliced into new
initializers) and, for a 2-D Conv, into tiles of the layer's output rows: each tile reads its
input rows plus the halo the conv and pool windows need (a Slice node, emitted before the parts)
with the padding recomputed so that the tile computes exactly the rows of the whole layer
(split_rows). A Concat (tiles along H, then groups along channels) rebuilds the original output
tensor under its original name, so the rest of the graph is unchanged; when that tensor would be
too big for a slice and feeds Flatten → Gemm, the Gemm is split by inputs instead (split_dense).
Part nodes carry `doc_string = "split: ..."`, which the planner shows as notes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx
from onnx import helper

from slicing.graph import get_opset, infer_shapes
from slicing.graph_fold import remove_dead_nodes
from slicing.onnx_split import GraphIndex, compute_graph_index
from slicing.plan_cost import (
    GATHER_ROWS_PER_ELEM,
    OUTPUT_ROWS_PER_ELEM,
    compute_input_rows,
    compute_node_rows,
    compute_output_rows,
)
from slicing.split_dense import find_flatten_dense, fuse_into_dense, is_concat_too_big
from slicing.split_rewrite import Part, rewrite_layer
from slicing.split_rows import ChainRows, get_chain_rows, is_tileable_pool

PARTS_COUNT_MAX = 4096
CHAIN_ACTIVATIONS = frozenset({"Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "Elu"})
CHAIN_POOLS = frozenset({"MaxPool", "AveragePool"})


@dataclass(frozen=True)
class Layer:
    node: int  # the linear node
    chain: tuple[int, ...]  # per-channel nodes after it, in order
    axis: int  # channel axis of the layer's output
    channels: int
    rows: float  # heuristic rows of node + chain + its output (the input is counted apart)


def split_oversized_layers(model: onnx.ModelProto, rows_max: int) -> onnx.ModelProto:
    """The model with every layer over `rows_max` (heuristic) rewritten into parts."""
    index = compute_graph_index(model)
    capacity = float(rows_max)
    opset = get_opset(model)
    inits = {t.name: t for t in model.graph.initializer}
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    absorbed: set[int] = set()
    changed = False
    for i, node in enumerate(index.nodes):
        if i in absorbed:
            continue
        layer = find_layer(index, i, inits)
        parts = plan_parts(index, layer, capacity) if layer is not None else None
        if layer is None or parts is None:
            new_nodes.append(node)
            continue
        nodes, tensors = rewrite_layer(index, layer_nodes(index, layer), layer.axis, parts, inits,
                                       opset)  # fmt: skip
        groups = sorted({(p.c0, p.c1) for p in parts})
        layer_out = index.nodes[layer.chain[-1] if layer.chain else layer.node].output[0]
        dense = find_flatten_dense(index, layer_out, inits) if len(groups) > 1 else None
        if dense is not None and layer.axis == 1 and is_concat_too_big(index, layer_out, capacity):
            nodes, more = fuse_into_dense(index, nodes, groups, *dense, inits)
            tensors += more
            absorbed.update(dense)
        new_nodes.extend(nodes)
        new_inits.extend(tensors)
        absorbed.update(layer.chain)
        changed = True
    if not changed:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    out.graph.initializer.extend(new_inits)
    del out.graph.value_info[:]
    remove_dead_nodes(out)  # drops the original weights no part reads any more
    return infer_shapes(out, "rewritten model")


def layer_nodes(index: GraphIndex, layer: Layer) -> list[onnx.NodeProto]:
    return [index.nodes[layer.node], *(index.nodes[j] for j in layer.chain)]


def find_layer(index: GraphIndex, i: int, inits: dict[str, onnx.TensorProto]) -> Layer | None:
    """The splittable layer that starts at node `i`, or None."""
    node = index.nodes[i]
    if len(node.input) < 2 or node.input[1] not in inits or node.input[0] in index.constants:
        return None
    out = index.shapes.get(node.output[0])
    if out is None:
        return None
    if node.op_type == "Conv":
        if _int(node, "group", 1) != 1 or len(out.shape) < 3:
            return None
        axis = 1
    elif node.op_type == "Gemm":
        if len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
            return None
        axis = 1
    elif node.op_type == "MatMul":
        if len(inits[node.input[1]].dims) != 2 or len(out.shape) < 2:
            return None
        axis = len(out.shape) - 1
    else:
        return None
    chain = _follow_chain(index, i, axis, inits)
    rows = sum(compute_node_rows(index.nodes[j], index.shapes) for j in (i, *chain))
    last = index.nodes[chain[-1] if chain else i].output[0]
    rows += compute_output_rows([index.shapes[last]])  # the parts' outputs cross a boundary
    return Layer(i, tuple(chain), axis, int(out.shape[axis]), rows)


def _follow_chain(
    index: GraphIndex, i: int, axis: int, inits: dict[str, onnx.TensorProto]
) -> list[int]:
    chain: list[int] = []
    current = index.nodes[i]
    pooled = False
    while True:
        tensor = current.output[0]
        readers = index.consumers.get(tensor, ())
        if tensor in index.model_outputs or len(readers) != 1 or len(current.output) != 1:
            return chain
        nxt = index.nodes[readers[0]]
        if not _is_chain_node(nxt, tensor, axis, inits, index, pooled):
            return chain
        pooled = pooled or nxt.op_type in CHAIN_POOLS
        chain.append(readers[0])
        current = nxt


def _is_chain_node(
    node: onnx.NodeProto,
    tensor: str,
    axis: int,
    inits: dict[str, onnx.TensorProto],
    index: GraphIndex,
    pooled: bool,
) -> bool:
    if node.input[0] != tensor or len([o for o in node.output if o]) != 1:
        return False
    if node.op_type in CHAIN_ACTIVATIONS:
        return len(node.input) == 1
    rank = len(index.shapes[tensor].shape)
    if node.op_type in CHAIN_POOLS:
        return axis == 1 and rank == 4 and not pooled  # per channel; tiles need more (below)
    if node.op_type == "BatchNormalization":
        return axis == 1 and all(n in inits for n in node.input[1:5])
    if node.op_type == "Add" and len(node.input) == 2 and node.input[1] in inits:
        bias = inits[node.input[1]]
        channels = index.shapes[tensor].shape[axis]
        want = [channels] + [1] * (rank - 1 - axis)
        dims = list(bias.dims)
        return dims[-len(want) :] == want and all(d == 1 for d in dims[: -len(want)])
    return False


def _ints(node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    for a in node.attribute:
        if a.name == name:
            return [int(v) for v in helper.get_attribute_value(a)]
    return default


def _int(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(helper.get_attribute_value(a))
    return default


def plan_parts(index: GraphIndex, layer: Layer, capacity: float) -> list[Part] | None:
    """Channel groups × row tiles giving the fewest slices, then the fewest rows; None = leave it.

    A tiled layer also needs Slice nodes that cut each tile (with halo) out of the input; they
    share slices, as many per slice as fit next to the input they read.
    """
    node = index.nodes[layer.node]
    x = index.shapes[node.input[0]]
    x_rows = compute_input_rows([x])
    if layer.rows + x_rows <= capacity:
        return None
    pools = [index.nodes[j] for j in layer.chain if index.nodes[j].op_type in CHAIN_POOLS]
    can_tile = node.op_type == "Conv" and len(x.shape) == 4
    can_tile = can_tile and all(is_tileable_pool(p) for p in pools)
    rows_of = get_chain_rows(index, layer_nodes(index, layer)) if can_tile else None
    best: tuple[int, float, int, int] | None = None  # (slices, rows, -height, group size)
    heights = range(rows_of.out_h - 1, 0, -1) if rows_of is not None else range(0)
    for th in [0, *heights]:
        fraction, in_fraction = 1.0, 1.0
        if rows_of is not None and th:
            conv_rows = rows_of.conv_rows(th)
            fraction = min(1.0, conv_rows / index.shapes[node.output[0]].shape[2])
            in_fraction = rows_of.conv.span(conv_rows) / x.shape[2]
        per_channel = layer.rows / layer.channels * fraction
        room = capacity - x_rows * in_fraction
        if room < per_channel:
            continue
        g = min(layer.channels, int(room // per_channel))
        tiles = math.ceil(rows_of.out_h / th) if rows_of is not None and th else 1
        parts = math.ceil(layer.channels / g) * tiles
        part_rows = per_channel * g + x_rows * in_fraction
        slices, rows = parts, parts * part_rows
        if th:
            tile_elems = _numel(x.shape) * in_fraction
            cut_rows = (GATHER_ROWS_PER_ELEM + OUTPUT_ROWS_PER_ELEM) * tile_elems
            per_slice = int((capacity - x_rows) // cut_rows)
            if per_slice < 1:
                continue  # even one tile cut does not fit a slice
            cut_slices = math.ceil(tiles / per_slice)
            slices += cut_slices
            rows += cut_slices * x_rows + tiles * cut_rows
        key = (slices, rows, -th, g)
        if best is None or key < best:
            best = key
    if best is None or best[0] > PARTS_COUNT_MAX:
        return None
    return _make_parts(layer, best[3], -best[2], rows_of)


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _merge_padding_tiles(rows_of: ChainRows, tiles: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge a tile that would read only padding (pads wider than the window) into a neighbour."""
    merged: list[tuple[int, int]] = []
    for r0, r1 in tiles:
        if merged and rows_of.tile(*merged[-1]) is None:
            merged[-1] = (merged[-1][0], r1)
        else:
            merged.append((r0, r1))
    while len(merged) > 1 and rows_of.tile(*merged[-1]) is None:
        last = merged.pop()
        merged[-1] = (merged[-1][0], last[1])
    return merged


def _make_parts(layer: Layer, g: int, th: int, rows_of: ChainRows | None) -> list[Part]:
    groups_count = math.ceil(layer.channels / g)
    bounds = [round(k * layer.channels / groups_count) for k in range(groups_count + 1)]
    tiles = [(0, 0)]
    if th and rows_of is not None:
        tiles = _merge_padding_tiles(
            rows_of, [(r, min(rows_of.out_h, r + th)) for r in range(0, rows_of.out_h, th)]
        )
    return [
        Part(c0=bounds[k], c1=bounds[k + 1], r0=r0, r1=r1)
        for k in range(groups_count)
        for (r0, r1) in tiles
    ]
