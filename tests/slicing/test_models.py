"""The project's shipped models: they load, their figures match the README, their samples fit."""

from __future__ import annotations

import numpy as np
import onnx

from slicing.graph import get_model_inputs, load_model
from slicing.models import (
    CIFAR_MODEL,
    CIFAR_SAMPLE,
    DIGITS_HELDOUT,
    DIGITS_MODEL,
    DIGITS_SAMPLE,
    MODELS_DIR,
)
from slicing.plan import slice_model
from slicing.runner import read_input_file, run_chain, run_whole
from slicing.types import Budget


def test_digits_held_out_accuracy_matches_the_readme() -> None:
    model = load_model(DIGITS_MODEL)
    held = np.load(DIGITS_HELDOUT)
    x, y = held["x"], held["y"]
    assert x.shape == (450, 1, 8, 8)
    predictions = [int(run_whole(model, {"input": img[None]})["logits"].argmax()) for img in x]
    accuracy = float(np.mean(np.array(predictions) == y))
    assert round(accuracy * 100, 2) == 97.56  # the figure in slicing/models/README.md
    assert "97.56 %" in (MODELS_DIR / "README.md").read_text()


def test_sliced_digits_agree_with_the_float_model_on_held_out_images() -> None:
    model = load_model(DIGITS_MODEL)
    sliced = slice_model(model, Budget(max_logrows=15))
    held = np.load(DIGITS_HELDOUT)
    for img in held["x"][:40]:
        feeds = {"input": img[None]}
        chained = run_chain(sliced, feeds)["logits"]
        np.testing.assert_allclose(chained, run_whole(model, feeds)["logits"], atol=1e-5)


def test_cifar_lenet_shape_and_parameter_count() -> None:
    model = load_model(CIFAR_MODEL)
    assert get_model_inputs(model)[0].shape == (1, 3, 32, 32)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    assert params == 62_006
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 2 and ops.count("Gemm") == 3


def test_samples_fit_their_models() -> None:
    for model_path, sample in ((DIGITS_MODEL, DIGITS_SAMPLE), (CIFAR_MODEL, CIFAR_SAMPLE)):
        model = load_model(model_path)
        feeds = read_input_file(sample, get_model_inputs(model))
        logits = run_whole(model, feeds)["logits"]
        assert logits.shape == (1, 10) and np.all(np.isfinite(logits))


def test_shipped_models_are_fully_spelled_out() -> None:
    for path in (DIGITS_MODEL, CIFAR_MODEL):
        raw = onnx.load(str(path))
        onnx.checker.check_model(raw, full_check=True)
        for node in raw.graph.node:
            if node.op_type in ("Conv", "MaxPool"):
                assert {"kernel_shape", "strides", "pads"} <= {a.name for a in node.attribute}
