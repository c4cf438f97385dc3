"""Shared vocabulary of slicing/: budgets, costs, tensors, slices and a sliced model.

This is the contract between the planner/splitter (plan.py, onnx_split.py, runner.py) and the
EZKL side (ezkl_prover.py, bundle.py, linkage.py). Keep it stable; extend by adding fields with
defaults. Slices form a DAG: each boundary tensor is produced by exactly one slice (or is a model
input) and consumed by one or more slices (or is a model output).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Budget:
    """What one slice may cost. `None` = no limit on that axis."""

    # 15: a slice proof then peaks near 740 MB, under the 1 GB a network prover is asked for
    # (logrows 16 peaked at 1.45 GB on the CIFAR-size CNN)
    max_logrows: int | None = 15
    max_memory_mb: int | None = None


@dataclass(frozen=True, slots=True)
class SliceCost:
    """Cost of proving one candidate sub-graph: EZKL circuit rows and the logrows they need."""

    rows: int
    logrows: int
    memory_mb_estimate: int = 0
    exact: bool = False  # True when measured by EZKL (gen_settings), False for a heuristic


# A cost oracle: given a standalone ONNX sub-model (onnx.ModelProto), its cost.
CostFn = Callable[[Any], SliceCost]


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class SliceSpec:
    """One slice: a standalone ONNX model whose inputs/outputs are named boundary tensors."""

    index: int
    model: Any  # onnx.ModelProto; input/output names equal the boundary tensor names
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    node_names: tuple[str, ...] = ()  # nodes of the (rewritten) model this slice contains
    cost: SliceCost | None = None
    note: str = ""  # e.g. "conv1 channels 0-7", "tile rows 0-15 (+halo 2)"


@dataclass(frozen=True)
class SlicedModel:
    """A model cut into slices, in a topological order (a slice's inputs come before it)."""

    slices: tuple[SliceSpec, ...]
    model_inputs: tuple[TensorInfo, ...]
    model_outputs: tuple[TensorInfo, ...]
    budget: Budget
    rewritten: Any = None  # the equivalent model after intra-layer splits (onnx.ModelProto)
    meta: dict[str, Any] = field(default_factory=dict)
