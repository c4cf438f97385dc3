"""Run models and chains of slices with onnxruntime (CPU), and read EZKL-format input files.

`run_chain` feeds each slice from the model inputs and the outputs of earlier slices, in the sliced
model's topological order, and returns every boundary tensor and model output by name. Sessions are
cached per hash of the model bytes (bounded). Graph optimisations are left on; they can change float
results in the last bits, so compare chained and whole results with a tolerance.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from slicing.errors import InputError, ModelError
from slicing.types import SlicedModel, SliceSpec, TensorInfo

INPUT_FILE_BYTES_MAX = 64 << 20
SESSIONS_CACHED_MAX = 256

_sessions: OrderedDict[str, Any] = OrderedDict()


def read_input_file(path: Path, model_inputs: Sequence[TensorInfo]) -> dict[str, np.ndarray]:
    """Read `{"input_data": [[flat values of input 0], ...]}` into arrays of the inputs' shapes."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: input file not found")
    size = path.stat().st_size
    if size > INPUT_FILE_BYTES_MAX:
        raise InputError(f"{path}: {size} bytes, more than {INPUT_FILE_BYTES_MAX}")
    try:
        doc = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not JSON ({exc})") from None
    return parse_input_data(doc, model_inputs, str(path))


def parse_input_data(
    doc: object, model_inputs: Sequence[TensorInfo], source: str = "input"
) -> dict[str, np.ndarray]:
    """Validate a decoded EZKL input document against the model's inputs (see read_input_file)."""
    if not isinstance(doc, dict) or "input_data" not in doc:
        raise InputError(f'{source}: expected an object with key "input_data"')
    data = doc["input_data"]
    if not isinstance(data, list) or not all(isinstance(row, list) for row in data):
        raise InputError(f'{source}: "input_data" must be a list of flat lists of numbers')
    if len(data) != len(model_inputs):
        raise InputError(
            f"{source}: {len(data)} input tensors given, the model takes {len(model_inputs)} "
            f"({', '.join(t.name for t in model_inputs)})"
        )
    feeds: dict[str, np.ndarray] = {}
    for k, (row, info) in enumerate(zip(data, model_inputs, strict=True)):
        want = int(np.prod(info.shape, dtype=np.int64))
        if len(row) != want:
            raise InputError(
                f"{source}: input {k} ({info.name!r}, shape {list(info.shape)}) needs {want} "
                f"values, got {len(row)}"
            )
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise InputError(f"{source}: input {k} value {j} is not a number: {v!r}")
            if isinstance(v, float) and not math.isfinite(v):
                raise InputError(f"{source}: input {k} value {j} is not finite: {v!r}")
        arr = np.asarray(row, dtype=np.float64)
        dtype = np.dtype(info.dtype)
        limit = np.finfo(dtype).max if dtype.kind == "f" else np.iinfo(dtype).max
        if arr.size and float(np.max(np.abs(arr))) > float(limit):
            raise InputError(f"{source}: input {k} has values out of range for {info.dtype}")
        feeds[info.name] = arr.astype(info.dtype).reshape(info.shape)
    return feeds


def get_session(model: onnx.ModelProto) -> Any:
    """An onnxruntime CPU session for `model`, cached by the hash of its bytes."""
    import onnxruntime as ort

    data = model.SerializeToString()
    key = hashlib.sha256(data).hexdigest()
    session = _sessions.get(key)
    if session is not None:
        _sessions.move_to_end(key)
        return session
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's exception classes are not exported
        raise ModelError(f"onnxruntime cannot load {model.graph.name!r}: {_first(exc)}") from None
    _sessions[key] = session
    while len(_sessions) > SESSIONS_CACHED_MAX:
        _sessions.popitem(last=False)
    return session


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = get_session(model)
    wanted = [i.name for i in session.get_inputs()]
    missing = [n for n in wanted if n not in feeds]
    if missing:
        raise InputError(f"{model.graph.name!r}: missing inputs {missing}")
    names = [o.name for o in session.get_outputs()]
    try:
        values = session.run(names, {n: feeds[n] for n in wanted})
    except Exception as exc:  # onnxruntime's exception classes are not exported
        raise InputError(f"{model.graph.name!r}: onnxruntime failed: {_first(exc)}") from None
    return {n: np.asarray(v) for n, v in zip(names, values, strict=True)}


def run_slice(spec: SliceSpec, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run one slice on its boundary inputs; returns its boundary outputs by name."""
    for info in spec.inputs:
        value = feeds.get(info.name)
        if value is None:
            raise InputError(f"slice {spec.index}: missing input {info.name!r}")
        if tuple(value.shape) != info.shape:
            raise InputError(
                f"slice {spec.index}: input {info.name!r} has shape {list(value.shape)}, "
                f"expected {list(info.shape)}"
            )
    return _run(spec.model, {i.name: feeds[i.name] for i in spec.inputs})


def run_chain(sliced: SlicedModel, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run every slice in order; returns the model inputs, every boundary tensor and the outputs."""
    values: dict[str, np.ndarray] = {}
    for info in sliced.model_inputs:
        if info.name not in inputs:
            raise InputError(f"missing model input {info.name!r}")
        values[info.name] = inputs[info.name]
    for spec in sliced.slices:
        values.update(run_slice(spec, values))
    missing = [o.name for o in sliced.model_outputs if o.name not in values]
    if missing:
        raise ModelError(f"the chain did not produce model outputs {missing}")
    return values


def run_whole(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the whole model; returns its outputs by name."""
    return _run(model, inputs)
