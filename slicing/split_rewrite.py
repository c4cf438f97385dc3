"""Rewrite one layer (a linear node and its per-channel chain) into parts plus Concat nodes.

Used by split_layers, which decides the parts. Each part computes output channels [c0, c1) and,
when tiled, rows [r0, r1) of the layer's output: its weights and per-channel parameters are
slices of the original initializers, its input is a Slice of the layer input (the rows the tile
reads, with halo), and its conv and pool padding is recomputed (split_rows) so that border tiles
pad like the whole layer and inner tiles do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from slicing.onnx_split import GraphIndex
from slicing.split_rows import TileRows, get_chain_rows


@dataclass(frozen=True)
class Part:
    c0: int
    c1: int
    r0: int = 0  # conv output rows [r0, r1); r1 == 0 means all rows (no tiling)
    r1: int = 0


def rewrite_layer(
    index: GraphIndex,
    nodes: list[onnx.NodeProto],
    axis: int,
    parts: list[Part],
    inits: dict[str, onnx.TensorProto],
    opset: int,
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes (tile Slices first, then the parts, then Concats) and new initializers."""
    lead = nodes[0]
    rows_of = get_chain_rows(index, nodes) if any(p.r1 for p in parts) else None
    new_inits: dict[str, onnx.TensorProto] = {}
    slices: list[onnx.NodeProto] = []
    tile_inputs: dict[tuple[int, int], str] = {}
    body: list[onnx.NodeProto] = []
    outputs: list[str] = []
    for k, part in enumerate(parts):
        x = lead.input[0]
        tile = rows_of.tile(part.r0, part.r1) if rows_of is not None and part.r1 else None
        if tile is not None:
            key = (tile.i0, tile.i1)
            if key not in tile_inputs:
                tile_inputs[key] = _make_tile_input(lead, tile, opset, slices, new_inits)
            x = tile_inputs[key]
        tag = f"{lead.name} ch {part.c0}-{part.c1 - 1}"
        if part.r1:
            tag += f" rows {part.r0}-{part.r1 - 1}"
        prev = x
        for m, node in enumerate(nodes):
            new = onnx.NodeProto()
            new.CopyFrom(node)
            new.name = f"{node.name}/p{k}"
            new.doc_string = f"split: {tag}"
            new.input[0] = prev
            new.output[0] = f"{node.output[0]}@p{k}"
            for j in range(1, len(new.input)):
                new.input[j] = _param_part(node, j, m, axis, part, inits, new_inits, index)
            if tile is not None and m == 0:
                _set_pads(node, new, tile.conv_pads)
            if tile is not None and rows_of is not None and node.name == rows_of.pool_node:
                _set_pads(node, new, tile.pool_pads)
            body.append(new)
            prev = new.output[0]
        outputs.append(prev)
    concats = _concat_parts(lead.name, parts, outputs, nodes[-1].output[0], axis)
    return [*slices, *body, *concats], list(new_inits.values())


def _param_part(
    node: onnx.NodeProto,
    j: int,
    m: int,
    axis: int,
    part: Part,
    inits: dict[str, onnx.TensorProto],
    new_inits: dict[str, onnx.TensorProto],
    index: GraphIndex,
) -> str:
    """Input j of `node` for this part: a channel slice of an initializer, or the shared input."""
    name = node.input[j]
    if not name or name not in inits:
        return name
    value = numpy_helper.to_array(inits[name])
    sliced = _slice_param(node, j, m, axis, part, value, index)
    if sliced is None:
        return name
    new_name = f"{name}@{node.name}_c{part.c0}_{part.c1}"
    if new_name not in new_inits:
        new_inits[new_name] = numpy_helper.from_array(np.ascontiguousarray(sliced), new_name)
    return new_name


def _slice_param(
    node: onnx.NodeProto,
    j: int,
    m: int,
    axis: int,
    part: Part,
    value: np.ndarray,
    index: GraphIndex,
) -> np.ndarray | None:
    c = slice(part.c0, part.c1)
    op = node.op_type
    if m == 0 and op == "Conv":
        return value[c]  # weight [Cout, ...] and bias [Cout]
    if m == 0 and op == "Gemm":
        channels = index.shapes[node.output[0]].shape[1]
        if j == 1:
            trans_b = _attr_int(node, "transB", 0)
            return value[c] if trans_b else value[:, c]
        if value.ndim >= 1 and value.shape[-1] == channels and channels > 1:
            return value[..., c]
        return None  # a broadcast scalar bias is shared
    if m == 0 and op == "MatMul":
        return value[:, c]
    if op == "BatchNormalization":
        return value[c]
    if op == "Add":
        rank = len(index.shapes[node.input[0]].shape)
        position = value.ndim - (rank - axis)
        if position < 0:
            return None
        sl = [slice(None)] * value.ndim
        sl[position] = c
        return value[tuple(sl)]
    return None


def _attr_int(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(helper.get_attribute_value(a))
    return default


def _attr_ints(node: onnx.NodeProto, name: str) -> list[int]:
    for a in node.attribute:
        if a.name == name:
            return [int(v) for v in helper.get_attribute_value(a)]
    raise KeyError(name)  # graph.load_model spells every conv attribute out


def _make_tile_input(
    conv: onnx.NodeProto,
    tile: TileRows,
    opset: int,
    slices: list[onnx.NodeProto],
    new_inits: dict[str, onnx.TensorProto],
) -> str:
    """A Slice node cutting input rows [i0, i1) (the tile and its halo) out of the conv input."""
    start, end = tile.i0, tile.i1
    x = conv.input[0]
    name = f"{x}@{conv.name}_rows{start}_{end}"
    node_name = f"{conv.name}/rows{start}_{end}"
    doc = f"split: {conv.name} input rows {start}-{end - 1}"
    if opset >= 10:
        args = []
        for what, val in (("starts", start), ("ends", end), ("axes", 2)):
            tname = f"{node_name}/{what}"
            new_inits[tname] = numpy_helper.from_array(np.array([val], dtype=np.int64), tname)
            args.append(tname)
        node = helper.make_node("Slice", [x, *args], [name], name=node_name, doc_string=doc)
    else:
        node = helper.make_node(
            "Slice", [x], [name], name=node_name, doc_string=doc, starts=[start], ends=[end],
            axes=[2],
        )  # fmt: skip
    slices.append(node)
    return name


def _set_pads(orig: onnx.NodeProto, new: onnx.NodeProto, top_bottom: tuple[int, int]) -> None:
    """Give `new` the padding of `orig` with its top and bottom (H) replaced."""
    pads = _attr_ints(orig, "pads")
    half = len(pads) // 2
    pads[0], pads[half] = top_bottom
    keep = [a for a in new.attribute if a.name != "pads"]
    del new.attribute[:]
    new.attribute.extend(keep)
    new.attribute.append(helper.make_attribute("pads", pads))


def _concat_parts(
    layer: str, parts: list[Part], outputs: list[str], final: str, axis: int
) -> list[onnx.NodeProto]:
    """Concat tiles along H within each channel group, then the groups along the channel axis."""
    groups: dict[tuple[int, int], list[str]] = {}
    for part, name in zip(parts, outputs, strict=True):
        groups.setdefault((part.c0, part.c1), []).append(name)
    tiled = len(next(iter(groups.values()))) > 1
    if not tiled:
        return [_concat(f"{layer}/concat", outputs, final, axis, layer)]
    if len(groups) == 1:
        return [_concat(f"{layer}/concat", outputs, final, 2, layer)]
    nodes = []
    merged = []
    for (c0, c1), names in groups.items():
        tensor = f"{final}@c{c0}_{c1}"
        nodes.append(_concat(f"{layer}/concat_c{c0}_{c1}", names, tensor, 2, layer))
        merged.append(tensor)
    nodes.append(_concat(f"{layer}/concat", merged, final, axis, layer))
    return nodes


def _concat(name: str, inputs: list[str], output: str, axis: int, layer: str) -> onnx.NodeProto:
    return helper.make_node(
        "Concat", inputs, [output], name=name, axis=axis, doc_string=f"split: {layer} concat"
    )
