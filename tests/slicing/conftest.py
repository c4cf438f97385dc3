"""Shared fixtures for the EZKL side of slicing/: one SRS/pk cache, one digits bundle, one proven
chain.

Building and proving are the expensive parts (real EZKL, ~1 min together), so they are
session-scoped and shared by every test that needs them; tests that tamper with a bundle copy it
first.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from node.cli import main
from slicing import api
from slicing.bundle import Bundle, load_bundle
from slicing.prover import EzklProver
from slicing.types import Budget

MODELS = Path(__file__).resolve().parents[2] / "slicing" / "models"
DIGITS = MODELS / "digits_cnn.onnx"
DIGITS_SAMPLE = MODELS / "digits_sample.json"
DIGITS_BUDGET = Budget(max_logrows=15)  # two slices, each proven in < 1 GB


def write_input(path: Path, *tensors: np.ndarray | list[float]) -> Path:
    path.write_text(json.dumps({"input_data": [np.asarray(t).ravel().tolist() for t in tensors]}))
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ezkl-cache")


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Bundle:
    # Built through the CLI, so `dsperse-node slice` with circuits is exercised once.
    out = tmp_path_factory.mktemp("bundles") / "digits"
    argv = [
        "slice",
        str(DIGITS),
        "--input",
        str(DIGITS_SAMPLE),
        "--out",
        str(out),
        "--quiet",
        "--max-logrows",
        str(DIGITS_BUDGET.max_logrows),
        "--cache-dir",
        str(cache_dir),
    ]
    assert main(argv) == 0
    return load_bundle(out)


@pytest.fixture(scope="session")
def digits_inputs(digits_bundle: Bundle) -> dict[str, np.ndarray]:
    return api.read_inputs(digits_bundle, DIGITS_SAMPLE)


@pytest.fixture(scope="session")
def digits_chain(
    digits_bundle: Bundle, digits_inputs: dict[str, np.ndarray], cache_dir: Path
) -> api.ChainReport:
    return api.prove_chain(digits_bundle, digits_inputs, EzklProver(cache_dir))
