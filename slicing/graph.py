"""Load and normalise an ONNX model so it can be cut into slices and handed to EZKL.

`load_model` is the single door for model files: it rejects what is missing, not ONNX, truncated
or unsupported with a one-line `ModelError`, then normalises the graph: batch fixed to 1,
initializers no longer listed as graph inputs, small constant sub-graphs folded into initializers,
dead nodes dropped, the ONNX defaults EZKL needs spelled out (Conv/pool kernel_shape, strides,
pads, dilations; auto_pad made explicit), a unique name on every node, and a concrete shape for
every tensor (static inference, then onnxruntime as a fallback). The helpers below read tensor
facts off such a model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from slicing.errors import ModelError
from slicing.graph_fold import fold_constants, remove_dead_nodes
from slicing.types import TensorInfo

MODEL_BYTES_MAX = 1 << 31  # protobuf's own limit; larger models need external data we do not take
NODES_COUNT_MAX = 100_000
CONV_OPS = ("Conv",)
SEQUENCE_OP_PREFIXES = ("Sequence", "Optional")
SEQUENCE_OPS = frozenset({"SplitToSequence", "ConcatFromSequence"})
_T = onnx.TensorProto
NUMERIC_TYPES = frozenset(
    {_T.FLOAT, _T.DOUBLE, _T.FLOAT16, _T.BFLOAT16, _T.INT8, _T.INT16, _T.INT32, _T.INT64,
     _T.UINT8, _T.UINT16, _T.UINT32, _T.UINT64, _T.BOOL}
)  # fmt: skip
POOL_OPS = ("MaxPool", "AveragePool")


def load_model(path: Path) -> onnx.ModelProto:
    """Read, check and normalise an ONNX model file (see the module docstring)."""
    path = Path(path)
    model = _read_model(path)
    return normalise_model(model, source=str(path))


def normalise_model(model: onnx.ModelProto, source: str = "model") -> onnx.ModelProto:
    """Check and normalise an in-memory model (what `load_model` does after reading the file)."""
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise ModelError(f"{source}: not an ONNX model (no graph or no nodes)")
    if len(model.graph.node) > NODES_COUNT_MAX:
        raise ModelError(f"{source}: {len(model.graph.node)} nodes, more than {NODES_COUNT_MAX}")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"{source}: invalid ONNX model: {_first_line(exc)}") from None
    model = _copy(model)
    _require_supported(model, source)
    _drop_initializer_inputs(model)
    _fix_batch(model, source)
    _name_nodes(model)
    model = fold_constants(model)
    remove_dead_nodes(model)  # a node whose result nobody reads would make a slice with no output
    if len(model.graph.node) == 0:
        raise ModelError(f"{source}: no node contributes to the model outputs")
    model = infer_shapes(model, source)
    _fill_defaults(model)
    return model


def _read_model(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    size = path.stat().st_size
    if size == 0:
        raise ModelError(f"{path}: empty file, not an ONNX model")
    if size > MODEL_BYTES_MAX:
        raise ModelError(f"{path}: {size} bytes, more than {MODEL_BYTES_MAX}")
    try:
        return onnx.load(str(path))
    except DecodeError as exc:
        raise ModelError(f"{path}: not an ONNX model or truncated ({_first_line(exc)})") from None
    except (ValueError, OSError, RuntimeError) as exc:
        raise ModelError(f"{path}: cannot read ONNX model ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _require_supported(model: onnx.ModelProto, source: str) -> None:
    domains = {op.domain for op in model.opset_import}
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") and node.domain not in domains:
            raise ModelError(f"{source}: node {node.name!r} uses unknown domain {node.domain!r}")
        for attr in node.attribute:
            if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                raise ModelError(
                    f"{source}: node {node.name or node.op_type!r} ({node.op_type}) has a "
                    "sub-graph; control flow is not supported"
                )
        if node.op_type.startswith(SEQUENCE_OP_PREFIXES) or node.op_type in SEQUENCE_OPS:
            raise ModelError(
                f"{source}: node {node.name or node.op_type!r} ({node.op_type}) works on "
                "sequences or optionals; only tensors are supported"
            )
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for vi in values:
            if not vi.type.HasField("tensor_type"):
                raise ModelError(f"{source}: {kind} {vi.name!r} is not a tensor")
            elem = vi.type.tensor_type.elem_type
            if elem not in NUMERIC_TYPES:
                name = onnx.TensorProto.DataType.Name(elem)
                raise ModelError(
                    f"{source}: {kind} {vi.name!r} has element type {name}; only numeric "
                    "tensors are supported"
                )


def _drop_initializer_inputs(model: onnx.ModelProto) -> None:
    """IR < 4 lists initializers as graph inputs; they are weights, not inputs a user feeds."""
    inits = {t.name for t in model.graph.initializer}
    keep = [vi for vi in model.graph.input if vi.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(keep)


def _fix_batch(model: onnx.ModelProto, source: str) -> None:
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        for i, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            if i != 0:
                raise ModelError(
                    f"{source}: input {vi.name!r} has a symbolic dimension {i} "
                    f"({dim.dim_param or '?'}); only the batch (first) dimension may be symbolic"
                )
            dim.Clear()
            dim.dim_value = 1


def _name_nodes(model: onnx.ModelProto) -> None:
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        base = node.name or f"{node.op_type.lower()}_{i}"
        name = base
        k = 1
        while name in seen:
            name = f"{base}_{k}"
            k += 1
        node.name = name
        seen.add(name)


def infer_shapes(model: onnx.ModelProto, source: str = "model") -> onnx.ModelProto:
    """Give every tensor a concrete shape: ONNX inference, then onnxruntime for the rest."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        raise ModelError(f"{source}: shape inference failed: {_first_line(exc)}") from None
    shapes = get_tensor_shapes(inferred)
    missing = [t for t in iter_node_outputs(inferred) if t not in shapes]
    if missing:
        _measure_shapes(inferred, missing, source)
    return inferred


def _measure_shapes(model: onnx.ModelProto, names: list[str], source: str) -> None:
    """Run the model once on zeros with the unknown tensors exposed, and record their shapes."""
    import onnxruntime as ort

    probe = _copy(model)
    known = {o.name for o in probe.graph.output}
    for name in names:
        if name not in known:
            probe.graph.output.append(helper.make_empty_tensor_value_info(name))
    feeds = {ti.name: np.zeros(ti.shape, dtype=ti.dtype) for ti in get_model_inputs(model)}
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(
            probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        values = session.run(names, feeds)
    except Exception as exc:  # onnxruntime raises its own unexported exception classes
        raise ModelError(f"{source}: cannot determine tensor shapes: {_first_line(exc)}") from None
    for name, value in zip(names, values, strict=True):
        arr = np.asarray(value)
        elem = helper.np_dtype_to_tensor_dtype(arr.dtype)
        model.graph.value_info.append(helper.make_tensor_value_info(name, elem, list(arr.shape)))


def is_normalised(model: onnx.ModelProto) -> bool:
    """Whether every tensor has a concrete shape and every node a unique name (load_model)."""
    shapes = get_tensor_shapes(model)
    names = [n.name for n in model.graph.node]
    return (
        all(names)
        and len(set(names)) == len(names)
        and all(o in shapes for o in iter_node_outputs(model))
        and all(vi.name in shapes for vi in model.graph.input)
    )


def iter_node_outputs(model: onnx.ModelProto) -> Iterable[str]:
    for node in model.graph.node:
        yield from (o for o in node.output if o)


def get_tensor_shapes(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """Every tensor with a fully concrete shape: inputs, outputs, value_info and initializers."""
    out: dict[str, TensorInfo] = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        info = _tensor_info(vi)
        if info is not None:
            out[vi.name] = info
    for init in model.graph.initializer:
        dtype = helper.tensor_dtype_to_np_dtype(init.data_type)
        out[init.name] = TensorInfo(init.name, tuple(int(d) for d in init.dims), str(dtype))
    return out


def _tensor_info(vi: onnx.ValueInfoProto) -> TensorInfo | None:
    if not vi.type.HasField("tensor_type"):
        return None
    tt = vi.type.tensor_type
    if not tt.HasField("shape") or tt.elem_type == 0:
        return None
    dims = []
    for d in tt.shape.dim:
        if not d.HasField("dim_value") or d.dim_value < 0:
            return None
        dims.append(int(d.dim_value))
    return TensorInfo(vi.name, tuple(dims), str(helper.tensor_dtype_to_np_dtype(tt.elem_type)))


def get_model_inputs(model: onnx.ModelProto) -> tuple[TensorInfo, ...]:
    """The inputs a user feeds (initializers excluded), with concrete shapes."""
    inits = {t.name for t in model.graph.initializer}
    shapes = get_tensor_shapes(model)
    return tuple(shapes[vi.name] for vi in model.graph.input if vi.name not in inits)


def get_model_outputs(model: onnx.ModelProto) -> tuple[TensorInfo, ...]:
    shapes = get_tensor_shapes(model)
    return tuple(shapes[vi.name] for vi in model.graph.output)


def get_opset(model: onnx.ModelProto) -> int:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return int(op.version)
    return 1


def _fill_defaults(model: onnx.ModelProto) -> None:
    """Spell out the attribute defaults EZKL requires (it rejects a Conv without `strides`)."""
    shapes = get_tensor_shapes(model)
    opset = get_opset(model)
    for node in model.graph.node:
        if node.op_type not in CONV_OPS + POOL_OPS:
            continue
        in_shape = shapes[node.input[0]].shape if node.input[0] in shapes else None
        if in_shape is None or len(in_shape) < 3:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        spatial = len(in_shape) - 2
        if "kernel_shape" in attrs:
            kernel = [int(k) for k in attrs["kernel_shape"]]
        elif len(node.input) > 1 and node.input[1] in shapes:
            kernel = [int(k) for k in shapes[node.input[1]].shape[2:]]
        else:
            continue  # a weight of unknown shape: leave the node as it is
        strides = [int(s) for s in attrs.get("strides", [1] * spatial)]
        has_dilations = node.op_type == "Conv" or (node.op_type == "MaxPool" and opset >= 10)
        has_dilations = has_dilations or (node.op_type == "AveragePool" and opset >= 19)
        dilations = [int(d) for d in attrs.get("dilations", [1] * spatial)]
        pads = _explicit_pads(attrs, in_shape[2:], kernel, strides, dilations)
        _set_attrs(node, kernel_shape=kernel, strides=strides, pads=pads)
        if has_dilations:
            _set_attrs(node, dilations=dilations)
        if node.op_type == "Conv":
            _set_attrs(node, group=int(attrs.get("group", 1)))


def _explicit_pads(
    attrs: dict[str, object],
    size: tuple[int, ...],
    kernel: list[int],
    strides: list[int],
    dilations: list[int],
) -> list[int]:
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    n = len(size)
    if auto in ("NOTSET", ""):
        pads = attrs.get("pads", [0] * (2 * n))
        return [int(p) for p in pads]  # type: ignore[attr-defined]
    if auto == "VALID":
        return [0] * (2 * n)
    begin, end = [], []
    for x, k, s, d in zip(size, kernel, strides, dilations, strict=True):
        total = max(0, (math.ceil(x / s) - 1) * s + (k - 1) * d + 1 - x)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return begin + end


def _set_attrs(node: onnx.NodeProto, **values: object) -> None:
    keep = [a for a in node.attribute if a.name not in values and a.name != "auto_pad"]
    del node.attribute[:]
    node.attribute.extend(keep)
    for name, value in sorted(values.items()):
        node.attribute.append(helper.make_attribute(name, value))


def initializer_array(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    return None
