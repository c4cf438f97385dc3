"""The exact cost oracle: EZKL's own row counts, cached by model hash, batched per worker."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from slicing.api import EzklCostOracle, compute_max_logrows
from slicing.graph import load_model
from slicing.plan import slice_model
from slicing.types import Budget

from .conftest import DIGITS


def _unsupported() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    node = helper.make_node("LpNormalization", ["x"], ["y"], axis=1, p=2)
    graph = helper.make_graph([node], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_costs_are_exact_cached_and_batched() -> None:
    sliced = slice_model(load_model(DIGITS), Budget(max_logrows=15))
    models = [s.model for s in sliced.slices]
    oracle = EzklCostOracle()
    costs = oracle.compute_costs([*models, _unsupported()])
    assert oracle.calls == 1  # one worker process for the whole batch
    assert costs[-1] is None  # EZKL cannot build it
    for cost in costs[:-1]:
        assert cost is not None and cost.exact and cost.rows > 1000
        assert cost.logrows == max(15, (cost.rows + 64 - 1).bit_length())
    assert oracle(models[0]) == costs[0] and oracle.calls == 1  # cached by model hash
    over = oracle(_unsupported())
    assert over.logrows > 26  # reported as over any budget, so the planner will not merge it


def test_planner_uses_the_oracle() -> None:
    oracle = EzklCostOracle()
    sliced = slice_model(load_model(DIGITS), Budget(max_logrows=15), oracle)
    assert oracle.calls >= 1
    assert all(s.cost is not None and s.cost.exact and s.cost.logrows <= 15 for s in sliced.slices)


def test_budget_to_calibration_cap() -> None:
    assert compute_max_logrows(Budget(max_logrows=15)) == 15
    assert compute_max_logrows(Budget(max_logrows=None, max_memory_mb=None)) == 20
    assert compute_max_logrows(Budget(max_logrows=18, max_memory_mb=800)) == 16
