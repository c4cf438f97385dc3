"""The project's own ONNX models (built by the scripts beside them; see README.md here)."""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
DIGITS_MODEL = MODELS_DIR / "digits_cnn.onnx"
DIGITS_SAMPLE = MODELS_DIR / "digits_sample.json"
DIGITS_HELDOUT = MODELS_DIR / "digits_heldout.npz"
CIFAR_MODEL = MODELS_DIR / "cifar_lenet.onnx"
CIFAR_SAMPLE = MODELS_DIR / "cifar_sample.json"
