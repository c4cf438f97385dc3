"""Intra-layer splits (placeholder: rewrites nothing yet)."""

from __future__ import annotations

import onnx


def split_oversized_layers(model: onnx.ModelProto, rows_max: int) -> onnx.ModelProto:
    return model
