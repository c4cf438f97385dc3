"""Chained == whole on the real models shipped in the installed `onnx` package's backend test data.

- `pytorch-converted/`, `pytorch-operator/`, `simple/`: models with reference inputs and outputs.
  The whole normalised model must reproduce the shipped outputs, and the chain of one node per
  slice (the most demanding cut) and the budgeted plan must equal the whole model. A model that
  onnxruntime itself cannot run is skipped with its reason; one we do not support (sequences,
  strings) must be refused by `load_model` with a specific ModelError.
- `light/`: real ImageNet architectures (AlexNet, ResNet-50, Inception, DenseNet, ...) whose weights
  ship as constants. Their weights are redrawn from a seed so that outputs depend on the input, and
  every boundary tensor of the chain is compared with the same tensor in the whole model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from slicing.errors import ModelError
from slicing.graph import get_model_inputs, load_model
from slicing.onnx_split import compute_graph_index
from slicing.plan import build_sliced_model, slice_model
from slicing.runner import run_chain, run_whole
from slicing.types import Budget, SlicedModel

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
CASES = sorted(
    p.parent
    for group in ("pytorch-converted", "pytorch-operator", "simple")
    for p in (DATA / group).glob("*/model.onnx")
    if (p.parent / "test_data_set_0").is_dir()
)
LIGHT = sorted((DATA / "light").glob("light_*.onnx"))
UNSUPPORTED = ("works on sequences", "only numeric tensors")


def read_tensors(folder: Path, pattern: str) -> list[np.ndarray]:
    out = []
    for path in sorted(folder.glob(pattern)):
        proto = onnx.TensorProto()
        proto.ParseFromString(path.read_bytes())
        out.append(numpy_helper.to_array(proto))
    return out


def run_raw(model: onnx.ModelProto, inputs: list[np.ndarray]) -> list[np.ndarray] | str:
    """The unmodified model in onnxruntime, or why onnxruntime cannot run it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        names = [i.name for i in session.get_inputs()]
        return [np.asarray(v) for v in session.run(None, dict(zip(names, inputs, strict=True)))]
    except Exception as exc:  # onnxruntime's exception classes are not exported
        return str(exc).splitlines()[0]


def max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray], names: list[str]) -> float:
    diffs = [0.0]
    for name in names:
        x, y = a[name].astype(np.float64), b[name].astype(np.float64)
        both_nan = np.isnan(x) & np.isnan(y)
        diffs.append(float(np.max(np.where(both_nan, 0.0, np.abs(x - y)), initial=0.0)))
    return max(diffs)


def one_node_per_slice(model: onnx.ModelProto) -> SlicedModel:
    index = compute_graph_index(model)
    segments = [[i] for i in range(len(index.nodes)) if i not in index.constant_nodes]
    return build_sliced_model(model, segments, Budget())


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_backend_case_chained_equals_whole(case: Path) -> None:
    raw = onnx.load(str(case / "model.onnx"))
    inputs = read_tensors(case / "test_data_set_0", "input_*.pb")
    reference = run_raw(raw, inputs)
    if isinstance(reference, str):
        pytest.skip(f"onnxruntime cannot run this model whole: {reference}")
    try:
        model = load_model(case / "model.onnx")
    except ModelError as exc:
        assert any(reason in str(exc) for reason in UNSUPPORTED), str(exc)
        return
    infos = get_model_inputs(model)
    feeds = {t.name: x.reshape(t.shape) for t, x in zip(infos, inputs, strict=True)}
    whole = run_whole(model, feeds)
    outputs = [o.name for o in model.graph.output]
    expected = dict(
        zip(outputs, read_tensors(case / "test_data_set_0", "output_*.pb"), strict=True)
    )
    for name in outputs:
        np.testing.assert_allclose(
            whole[name].reshape(expected[name].shape), expected[name], rtol=1e-3, atol=1e-5
        )
    for sliced in (one_node_per_slice(model), slice_model(model, Budget(max_logrows=15))):
        chained = run_chain(sliced, feeds)
        assert max_diff(chained, whole, outputs) <= 1e-4


def redraw_weights(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """Seeded He-style weights for every float initializer (1-D ones in [0.5, 1.5])."""
    rng = np.random.default_rng(seed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for k, init in enumerate(out.graph.initializer):
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        shape = tuple(init.dims)
        if len(shape) >= 2:
            fan_in = int(np.prod(shape[1:]))
            value = rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))
        else:
            value = rng.uniform(0.5, 1.5, shape)
        out.graph.initializer[k].CopyFrom(
            numpy_helper.from_array(value.astype(np.float32), init.name)
        )
    return out


def run_whole_exposing(model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: list[str]):
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    shapes = {vi.name: vi for vi in probe.graph.value_info}
    for name in names:
        if name not in have:
            probe.graph.output.append(shapes[name])
    return run_whole(probe, feeds)


@pytest.mark.parametrize("path", LIGHT, ids=lambda p: p.stem)
def test_light_model_boundaries_equal_whole(path: Path) -> None:
    model = redraw_weights(load_model(path), seed=len(path.stem))
    sliced = slice_model(model, Budget(max_logrows=24))
    assert len(sliced.slices) > 10
    assert sliced.meta["nodes_rewritten"] > 0  # some layer was split inside
    rng = np.random.default_rng(0)
    feeds = {t.name: rng.standard_normal(t.shape).astype(np.float32) for t in sliced.model_inputs}
    chained = run_chain(sliced, feeds)
    boundaries = sorted({t.name for s in sliced.slices for t in s.outputs})
    whole = run_whole_exposing(sliced.rewritten, feeds, boundaries)
    outputs = [o.name for o in sliced.model_outputs]
    # 1e-4 absolute for values of magnitude <= 1, relative beyond (float32 keeps ~7 digits; the
    # redrawn DenseNet's outputs reach 1e4, where one float32 ulp is already 1e-3).
    reference = run_whole(model, feeds)
    scale = max(1.0, *(float(np.max(np.abs(reference[n]))) for n in outputs))
    assert max_diff(chained, reference, outputs) <= 1e-4 * scale
    for name in boundaries:
        scale = max(1.0, float(np.max(np.abs(whole[name]))))
        assert max_diff(chained, whole, [name]) <= 1e-4 * scale, name
    assert float(np.std(whole[outputs[0]])) > 0  # the redrawn model's output depends on input
