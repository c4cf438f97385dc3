"""Build the project's CIFAR-size LeNet (slicing/models/cifar_lenet.onnx), seeded random weights.

No CIFAR data is available offline, so the weights are He-initialised from a fixed seed: the model
exists to measure slicing and proving cost (the benchmark), not to classify. Architecture: input
"input" [1, 3, 32, 32] -> Conv(3->6, 5x5) -> Relu -> MaxPool(2) -> Conv(6->16, 5x5) -> Relu ->
MaxPool(2) -> Flatten -> Gemm(400->120) -> Relu -> Gemm(120->84) -> Relu -> Gemm(84->10) ->
"logits" [1, 10]; 62,006 parameters. Also writes cifar_sample.json (a seeded random image in EZKL
input format). Run: `python -m slicing.models.make_cifar`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
SEED = 1


def make_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    def he(shape: tuple[int, ...]) -> np.ndarray:
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    def bias(n: int) -> np.ndarray:
        return (rng.standard_normal(n) * 0.05).astype(np.float32)

    return {
        "conv1_w": he((6, 3, 5, 5)),
        "conv1_b": bias(6),
        "conv2_w": he((16, 6, 5, 5)),
        "conv2_b": bias(16),
        "fc1_w": he((120, 400)),
        "fc1_b": bias(120),
        "fc2_w": he((84, 120)),
        "fc2_b": bias(84),
        "fc3_w": he((10, 84)),
        "fc3_b": bias(10),
    }


def build(params: dict[str, np.ndarray]) -> onnx.ModelProto:
    conv: dict[str, Any] = {
        "kernel_shape": [5, 5],
        "pads": [0, 0, 0, 0],
        "strides": [1, 1],
        "dilations": [1, 1],
    }
    pool: dict[str, Any] = {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0]}
    nodes = [
        helper.make_node("Conv", ["input", "conv1_w", "conv1_b"], ["c1"], name="conv1", **conv),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", **pool),
        helper.make_node("Conv", ["p1", "conv2_w", "conv2_b"], ["c2"], name="conv2", **conv),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p2"], name="pool2", **pool),
        helper.make_node("Flatten", ["p2"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc1_w", "fc1_b"], ["h1"], name="fc1", transB=1),
        helper.make_node("Relu", ["h1"], ["h1r"], name="relu3"),
        helper.make_node("Gemm", ["h1r", "fc2_w", "fc2_b"], ["h2"], name="fc2", transB=1),
        helper.make_node("Relu", ["h2"], ["h2r"], name="relu4"),
        helper.make_node("Gemm", ["h2r", "fc3_w", "fc3_b"], ["logits"], name="fc3", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cifar_lenet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        initializer=[numpy_helper.from_array(v, k) for k, v in sorted(params.items())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    model.producer_name = "dsperse-node slicing/models/make_cifar.py"
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    rng = np.random.default_rng(SEED)
    params = make_params(rng)
    model = build(params)
    onnx.save(model, str(HERE / "cifar_lenet.onnx"))
    image = rng.uniform(0.0, 1.0, size=3 * 32 * 32).astype(np.float32)
    sample = {"input_data": [[round(float(v), 6) for v in image]]}
    (HERE / "cifar_sample.json").write_text(json.dumps(sample) + "\n")
    count = sum(int(v.size) for v in params.values())
    print(f"cifar_lenet.onnx: {count} parameters")


if __name__ == "__main__":
    main()
