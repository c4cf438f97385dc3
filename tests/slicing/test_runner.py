"""runner: EZKL-format input files (every malformed case is a specific InputError) and execution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slicing.errors import InputError
from slicing.graph import load_model
from slicing.models import DIGITS_MODEL, DIGITS_SAMPLE
from slicing.plan import slice_model
from slicing.runner import get_session, read_input_file, run_chain, run_slice, run_whole
from slicing.types import Budget, TensorInfo

INPUTS = (TensorInfo("a", (1, 2, 2)), TensorInfo("b", (1, 3)))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "in.json"
    path.write_text(text)
    return path


def test_reads_two_inputs_in_order(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps({"input_data": [[1, 2, 3, 4.5], [0, -1, 2e-3]]}))
    feeds = read_input_file(path, INPUTS)
    assert feeds["a"].shape == (1, 2, 2) and feeds["a"].dtype == np.float32
    np.testing.assert_allclose(feeds["a"].ravel(), [1, 2, 3, 4.5])
    np.testing.assert_allclose(feeds["b"].ravel(), [0, -1, 2e-3], rtol=1e-6)


def test_digits_sample_matches_the_model() -> None:
    model = load_model(DIGITS_MODEL)
    sliced = slice_model(model, Budget(max_logrows=15))
    feeds = read_input_file(DIGITS_SAMPLE, sliced.model_inputs)
    assert feeds["input"].shape == (1, 1, 8, 8)
    assert float(feeds["input"].min()) >= 0.0 and float(feeds["input"].max()) <= 1.0


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not JSON"),
        ("\xff\xfe", "not JSON"),
        ("[1, 2]", '"input_data"'),
        ('{"data": []}', '"input_data"'),
        ('{"input_data": [1, 2, 3, 4]}', "flat lists"),
        ('{"input_data": [[1, 2, 3, 4]]}', "1 input tensors given, the model takes 2"),
        ('{"input_data": [[1, 2, 3], [1, 2, 3]]}', "needs 4 values, got 3"),
        ('{"input_data": [[1, 2, 3, 4], [1, 2, 3, 4]]}', "needs 3 values, got 4"),
        ('{"input_data": [[1, 2, "x", 4], [1, 2, 3]]}', "not a number: 'x'"),
        ('{"input_data": [[1, 2, null, 4], [1, 2, 3]]}', "not a number: None"),
        ('{"input_data": [[1, 2, true, 4], [1, 2, 3]]}', "not a number: True"),
        ('{"input_data": [[1, 2, [3], 4], [1, 2, 3]]}', "not a number"),
        ('{"input_data": [[1, 2, NaN, 4], [1, 2, 3]]}', "not finite"),
        ('{"input_data": [[1, 2, 3, 4], [1, Infinity, 3]]}', "not finite"),
        ('{"input_data": [[1, 2, 3, 4], [1, 1e300, 3]]}', "out of range for float32"),
    ],
)
def test_bad_input_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "in.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(InputError, match=match):
        read_input_file(path, INPUTS)


def test_missing_input_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_input_file(tmp_path / "absent.json", INPUTS)


def test_run_slice_rejects_a_wrong_shape() -> None:
    sliced = slice_model(load_model(DIGITS_MODEL), Budget(max_logrows=15))
    first = sliced.slices[0]
    with pytest.raises(InputError, match="expected \\[1, 1, 8, 8\\]"):
        run_slice(first, {"input": np.zeros((1, 64), np.float32)})
    with pytest.raises(InputError, match="missing input 'input'"):
        run_slice(first, {})


def test_run_chain_returns_boundaries_and_outputs() -> None:
    model = load_model(DIGITS_MODEL)
    sliced = slice_model(model, Budget(max_logrows=15))
    feeds = read_input_file(DIGITS_SAMPLE, sliced.model_inputs)
    values = run_chain(sliced, feeds)
    for spec in sliced.slices:
        for out in spec.outputs:
            assert values[out.name].shape == out.shape
    np.testing.assert_allclose(values["logits"], run_whole(model, feeds)["logits"], atol=1e-5)


def test_sessions_are_cached_by_model_bytes() -> None:
    model = load_model(DIGITS_MODEL)
    assert get_session(model) is get_session(load_model(DIGITS_MODEL))
