"""Row geometry of a tiled layer: which rows each stage of a conv (→ pool) chain reads for a tile.

A tile is a range [o0, o1) of rows of the layer's final output. Walking back through the chain's
sliding windows (an optional pool, then the conv) gives, for each stage, the rows of its input
the tile needs and the padding the tile must add at its top and bottom: padding only where the
whole layer pads, real rows (a halo) where it does not. Computing those rows with that padding
gives exactly the rows of the whole layer, overlapping windows included.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import helper

from slicing.onnx_split import GraphIndex

TILE_POOLS = frozenset({"MaxPool", "AveragePool"})


@dataclass(frozen=True)
class Window:
    """A sliding window along H: kernel, stride, dilation, top padding, input height."""

    kernel: int
    stride: int
    dilation: int
    pad_top: int
    size_in: int

    def input_rows(self, o0: int, o1: int) -> tuple[int, int, int, int]:
        """(first, end, pad top, pad bottom) of the input rows that output rows [o0, o1) read."""
        want_start = o0 * self.stride - self.pad_top
        want_end = (o1 - 1) * self.stride - self.pad_top + (self.kernel - 1) * self.dilation + 1
        start, end = max(0, want_start), min(self.size_in, want_end)
        return start, end, start - want_start, want_end - end

    def span(self, rows: int) -> int:
        """Input rows (with halo, clipped) that `rows` consecutive output rows read at most."""
        return min(self.size_in, (rows - 1) * self.stride + (self.kernel - 1) * self.dilation + 1)


@dataclass(frozen=True)
class TileRows:
    """What one tile computes: input rows [i0, i1), conv rows [c0, c1), output rows [o0, o1)."""

    i0: int
    i1: int
    conv_pads: tuple[int, int]
    c0: int
    c1: int
    pool_pads: tuple[int, int]


def _ints(node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    for a in node.attribute:
        if a.name == name:
            return [int(v) for v in helper.get_attribute_value(a)]
    return default


def window_of(node: onnx.NodeProto, size_in: int) -> Window:
    kernel = _ints(node, "kernel_shape", [1, 1])
    return Window(
        kernel=kernel[0],
        stride=_ints(node, "strides", [1] * len(kernel))[0],
        dilation=_ints(node, "dilations", [1] * len(kernel))[0],
        pad_top=_ints(node, "pads", [0] * 2 * len(kernel))[0],
        size_in=size_in,
    )


def is_tileable_pool(node: onnx.NodeProto) -> bool:
    """A 2-D pool whose output rows depend only on a window of rows (no ceil mode, no dilation)."""
    kernel = _ints(node, "kernel_shape", [])
    ceil_mode = any(a.name == "ceil_mode" and a.i for a in node.attribute)
    dilations = _ints(node, "dilations", [1] * len(kernel))
    return len(kernel) == 2 and not ceil_mode and all(d == 1 for d in dilations)


@dataclass(frozen=True)
class ChainRows:
    """The sliding windows of a conv chain along H, and the height of its final output."""

    conv: Window
    pool: Window | None
    pool_node: str | None
    out_h: int

    def tile(self, o0: int, o1: int) -> TileRows | None:
        """The rows a tile of final-output rows [o0, o1) needs; None if it reads only padding."""
        c0, c1, pool_pads = o0, o1, (0, 0)
        if self.pool is not None:
            c0, c1, top, bottom = self.pool.input_rows(o0, o1)
            pool_pads = (top, bottom)
            if c1 <= c0:
                return None
        i0, i1, top, bottom = self.conv.input_rows(c0, c1)
        if i1 <= i0:
            return None
        return TileRows(i0, i1, (top, bottom), c0, c1, pool_pads)

    def conv_rows(self, height: int) -> int:
        """Conv output rows a tile of `height` final rows computes at most."""
        return self.pool.span(height) if self.pool is not None else height


def get_chain_rows(index: GraphIndex, nodes: list[onnx.NodeProto]) -> ChainRows:
    """Row geometry of a layer given its nodes (the conv first, then its chain)."""
    conv = nodes[0]
    conv_w = window_of(conv, index.shapes[conv.input[0]].shape[2])
    pool_node = next((n for n in nodes[1:] if n.op_type in TILE_POOLS), None)
    pool_w = None
    if pool_node is not None:
        pool_w = window_of(pool_node, index.shapes[pool_node.input[0]].shape[2])
    out_h = index.shapes[nodes[-1].output[0]].shape[2]
    name = pool_node.name if pool_node is not None else None
    return ChainRows(conv_w, pool_w, name, out_h)
