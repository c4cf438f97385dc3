"""Train the project's digits CNN with plain numpy and export it (slicing/models/digits_cnn.onnx).

Data: scikit-learn's bundled 8x8 digits (offline), pixels scaled to [0, 1] (value / 16), a fixed
75/25 stratified train/test split (seed 0). Architecture (EZKL-friendly ops only):
Conv(1->8, 3x3, pad 1) -> Relu -> MaxPool(2) -> Conv(8->16, 3x3, pad 1) -> Relu -> MaxPool(2) ->
Flatten -> Gemm(64->32) -> Relu -> Gemm(32->10). Forward and backward passes are written here
(im2col), trained with Adam. Writes digits_cnn.onnx, digits_heldout.npz (held-out images and
labels) and digits_sample.json (one held-out image in EZKL input format).
Run: `python -m slicing.models.make_digits` (scikit-learn needed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
SEED = 0
EPOCHS = 20
BATCH = 32
LR = 3e-3
C1, C2, HID = 8, 16, 32  # channels of conv1, conv2; hidden units of fc1


def im2col(x: np.ndarray, k: int, pad: int) -> np.ndarray:
    """(N, C, H, W) -> (N, H*W, C*k*k) patches for a stride-1 'same' convolution."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((n, c, k, k, h, w), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = xp[:, :, i : i + h, j : j + w]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n, h * w, c * k * k)


def col2im(cols: np.ndarray, shape: tuple[int, ...], k: int, pad: int) -> np.ndarray:
    n, c, h, w = shape
    cols = cols.reshape(n, h, w, c, k, k).transpose(0, 3, 4, 5, 1, 2)
    xp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=cols.dtype)
    for i in range(k):
        for j in range(k):
            xp[:, :, i : i + h, j : j + w] += cols[:, :, i, j]
    return xp[:, :, pad : pad + h, pad : pad + w]


def conv_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, _, h, wd = x.shape
    cols = im2col(x, w.shape[2], 1)
    out = cols @ w.reshape(w.shape[0], -1).T + b
    return out.transpose(0, 2, 1).reshape(n, w.shape[0], h, wd), cols


def conv_backward(
    dout: np.ndarray, cols: np.ndarray, x_shape: tuple[int, ...], w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, co = dout.shape[:2]
    d = dout.reshape(n, co, -1).transpose(0, 2, 1)  # (N, HW, Co)
    dw = np.einsum("npo,npk->ok", d, cols).reshape(w.shape)
    db = d.sum(axis=(0, 1))
    dcols = d @ w.reshape(co, -1)
    return col2im(dcols, x_shape, w.shape[2], 1), dw, db


def pool_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, c, h, w = x.shape
    r = x.reshape(n, c, h // 2, 2, w // 2, 2)
    out = r.max(axis=(3, 5))
    mask = r == out[:, :, :, None, :, None]
    return out, mask


def pool_backward(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    n, c, h2, _, w2, _ = mask.shape
    d = mask * dout[:, :, :, None, :, None]
    return d.reshape(n, c, h2 * 2, w2 * 2)


def init_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    def he(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return {
        "conv1_w": he((C1, 1, 3, 3), 9),
        "conv1_b": np.zeros(C1, np.float32),
        "conv2_w": he((C2, C1, 3, 3), 9 * C1),
        "conv2_b": np.zeros(C2, np.float32),
        "fc1_w": he((HID, 4 * C2), 4 * C2),
        "fc1_b": np.zeros(HID, np.float32),
        "fc2_w": he((10, HID), HID),
        "fc2_b": np.zeros(10, np.float32),
    }


def forward(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    c: dict[str, np.ndarray] = {"x": x}
    z1, c["cols1"] = conv_forward(x, p["conv1_w"], p["conv1_b"])
    a1 = np.maximum(z1, 0)
    c["z1"] = z1
    p1, c["m1"] = pool_forward(a1)
    c["p1"] = p1
    z2, c["cols2"] = conv_forward(p1, p["conv2_w"], p["conv2_b"])
    c["z2"] = z2
    p2, c["m2"] = pool_forward(np.maximum(z2, 0))
    f = p2.reshape(x.shape[0], -1)
    c["f"] = f
    h = f @ p["fc1_w"].T + p["fc1_b"]
    c["h"] = h
    ha = np.maximum(h, 0)
    c["ha"] = ha
    return ha @ p["fc2_w"].T + p["fc2_b"], c


def backward(
    p: dict[str, np.ndarray], c: dict[str, np.ndarray], logits: np.ndarray, y: np.ndarray
) -> dict[str, np.ndarray]:
    n = y.shape[0]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    prob = e / e.sum(axis=1, keepdims=True)
    d = prob
    d[np.arange(n), y] -= 1
    d /= n
    g = {"fc2_w": d.T @ c["ha"], "fc2_b": d.sum(0)}
    dh = (d @ p["fc2_w"]) * (c["h"] > 0)
    g["fc1_w"], g["fc1_b"] = dh.T @ c["f"], dh.sum(0)
    df = (dh @ p["fc1_w"]).reshape(n, C2, 2, 2)
    dz2 = pool_backward(df, c["m2"]) * (c["z2"] > 0)
    dp1, g["conv2_w"], g["conv2_b"] = conv_backward(dz2, c["cols2"], c["p1"].shape, p["conv2_w"])
    dz1 = pool_backward(dp1, c["m1"]) * (c["z1"] > 0)
    _, g["conv1_w"], g["conv1_b"] = conv_backward(dz1, c["cols1"], c["x"].shape, p["conv1_w"])
    return g


def train(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    p = init_params(rng)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(val) for k, val in p.items()}
    step = 0
    for _ in range(EPOCHS):
        order = rng.permutation(len(x))
        for i in range(0, len(x), BATCH):
            idx = order[i : i + BATCH]
            logits, cache = forward(p, x[idx])
            grads = backward(p, cache, logits, y[idx])
            step += 1
            for k in p:
                m[k] = 0.9 * m[k] + 0.1 * grads[k]
                v[k] = 0.999 * v[k] + 0.001 * grads[k] ** 2
                mh = m[k] / (1 - 0.9**step)
                vh = v[k] / (1 - 0.999**step)
                p[k] = (p[k] - LR * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
    return p


def export(p: dict[str, np.ndarray], path: Path) -> onnx.ModelProto:
    conv: dict[str, Any] = {
        "kernel_shape": [3, 3],
        "pads": [1, 1, 1, 1],
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
        helper.make_node("Gemm", ["h1r", "fc2_w", "fc2_b"], ["logits"], name="fc2", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        initializer=[numpy_helper.from_array(v, k) for k, v in sorted(p.items())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    model.producer_name = "dsperse-node slicing/models/make_digits.py"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return model


def main() -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)
    p = train(x_tr, y_tr)
    acc_tr = float((forward(p, x_tr)[0].argmax(1) == y_tr).mean())
    acc_te = float((forward(p, x_te)[0].argmax(1) == y_te).mean())
    export(p, HERE / "digits_cnn.onnx")
    np.savez_compressed(HERE / "digits_heldout.npz", x=x_te, y=y_te)
    sample = {"input_data": [[round(float(v), 6) for v in x_te[0].ravel()]]}
    (HERE / "digits_sample.json").write_text(json.dumps(sample) + "\n")
    print(f"train accuracy {acc_tr:.4f} ({len(y_tr)})")
    print(f"held-out accuracy {acc_te:.4f} ({len(y_te)})")


if __name__ == "__main__":
    main()
