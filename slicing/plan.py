"""The planner: cut a normalised ONNX model into slices that each fit a proving budget.

Steps, all deterministic:
1. Budget → a row capacity (`max_logrows` and/or `max_memory_mb`, the stricter wins).
2. Layers too big for the capacity are rewritten into parts inside the layer (split_layers: output
   channel groups and spatial tiles with halos, concatenated after), giving the `rewritten` model.
3. Greedy partition of the nodes in topological order: a slice grows while the heuristic cost
   (plan_cost) of its nodes plus its boundary inputs and outputs fits: cheap neighbours merge.
4. With an exact oracle `cost_fn` (EZKL's own row counts), each slice is measured once (cached by
   the hash of its model, batched when the oracle has `compute_costs`); a slice the oracle finds
   over budget is halved and measured again.
5. Each slice is materialised as a standalone ONNX model (onnx_split).
A single node that cannot fit even after splitting stays one slice, listed in `meta["over_budget"]`
(the EZKL side runs it unproven). `meta` also has "logrows_max", "oracle_calls", "nodes_rewritten"
(nodes added by intra-layer splits), "constant_nodes" (copied into the slices that read them) and
"data_only" (slices of pure data movement, see DATA_MOVEMENT_OPS).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import onnx

from slicing.errors import BudgetError
from slicing.graph import get_model_inputs, get_model_outputs, is_normalised, normalise_model
from slicing.onnx_split import (
    GraphIndex,
    compute_boundaries,
    compute_graph_index,
    extract_sub_model,
)
from slicing.plan_cost import (
    MIN_LOGROWS,
    PROVE_MB_AT_MIN_LOGROWS,
    compute_input_rows,
    compute_memory_mb,
    compute_node_rows,
    compute_output_rows,
    compute_rows_max,
    estimate_cost,
)
from slicing.split_layers import split_oversized_layers
from slicing.types import Budget, CostFn, SliceCost, SlicedModel, SliceSpec

LOGROWS_MAX = 26  # beyond this EZKL's SRS alone does not fit a node (notes: logrows 25 ≈ hours)
ORACLE_CALLS_MAX = 2_000
# Slices made only of these move public values around (tile cuts, concatenations): a verifier
# could recompute them from the boundary values instead of checking a proof (meta["data_only"]).
DATA_MOVEMENT_OPS = frozenset(
    {"Slice", "Concat", "Reshape", "Flatten", "Identity", "Transpose", "Squeeze", "Unsqueeze",
     "Split"}
)  # fmt: skip
HEURISTIC_MARGIN = 0.94  # the heuristic is within ±6 % of EZKL (plan_cost); keep that much free

__all__ = ["build_sliced_model", "compute_logrows_max", "estimate_cost", "slice_model"]


def compute_logrows_max(budget: Budget) -> int | None:
    """The largest logrows a slice may have under `budget`; None = no limit."""
    limits: list[int] = []
    if budget.max_logrows is not None:
        if not MIN_LOGROWS <= budget.max_logrows <= LOGROWS_MAX:
            raise BudgetError(
                f"max_logrows {budget.max_logrows} outside [{MIN_LOGROWS}, {LOGROWS_MAX}] "
                f"(EZKL needs at least {MIN_LOGROWS})"
            )
        limits.append(budget.max_logrows)
    if budget.max_memory_mb is not None:
        if budget.max_memory_mb < PROVE_MB_AT_MIN_LOGROWS:
            raise BudgetError(
                f"max_memory_mb {budget.max_memory_mb} below the {PROVE_MB_AT_MIN_LOGROWS} MB "
                f"that proving the smallest circuit (logrows {MIN_LOGROWS}) needs"
            )
        fitting = [
            lr for lr in range(MIN_LOGROWS, LOGROWS_MAX + 1)
            if compute_memory_mb(lr) <= budget.max_memory_mb
        ]  # fmt: skip
        limits.append(max(fitting))
    return min(limits) if limits else None


def slice_model(
    model: onnx.ModelProto, budget: Budget, cost_fn: CostFn | None = None
) -> SlicedModel:
    """Cut a model from `graph.load_model` into slices that fit `budget` (see module docstring)."""
    logrows_max = compute_logrows_max(budget)
    if not is_normalised(model):  # e.g. straight from onnx.load: normalise it the same way
        model = normalise_model(model)
    rows_max = None
    if logrows_max is not None:
        rows_max = int(compute_rows_max(logrows_max) * HEURISTIC_MARGIN)
    rewritten = split_oversized_layers(model, rows_max) if rows_max is not None else model
    index = compute_graph_index(rewritten)
    order = [i for i in range(len(index.nodes)) if i not in index.constant_nodes]
    segments = partition_greedy(index, order, rows_max)
    oracle = _Oracle(cost_fn)
    if cost_fn is not None and logrows_max is not None:
        segments = _refine_with_oracle(rewritten, index, segments, logrows_max, oracle)
    sliced = build_sliced_model(rewritten, segments, budget, oracle.measure_many, index)
    sliced.meta["oracle_calls"] = oracle.calls
    sliced.meta["nodes_rewritten"] = len(index.nodes) - len(model.graph.node)
    return sliced


def build_sliced_model(
    rewritten: onnx.ModelProto,
    segments: Sequence[Sequence[int]],
    budget: Budget,
    measure_many: Callable[[Sequence[onnx.ModelProto]], list[SliceCost]] | None = None,
    index: GraphIndex | None = None,
) -> SlicedModel:
    """Materialise a partition (node indices of `rewritten`, topological) as a SlicedModel.

    `measure_many` costs the slice models in one batch (default: the heuristic).
    """
    logrows_max = compute_logrows_max(budget)
    index = index or compute_graph_index(rewritten)
    boundaries = compute_boundaries(index, segments)
    subs = [
        extract_sub_model(rewritten, index, seg, ins, outs, f"slice_{k}")
        for k, (seg, (ins, outs)) in enumerate(zip(segments, boundaries, strict=True))
    ]
    costs = measure_many(subs) if measure_many is not None else [estimate_cost(m) for m in subs]
    specs = []
    over_budget = []
    for k, (seg, (ins, outs)) in enumerate(zip(segments, boundaries, strict=True)):
        cost = costs[k]
        if logrows_max is not None and cost.logrows > logrows_max:
            over_budget.append(k)
        specs.append(
            SliceSpec(
                index=k,
                model=subs[k],
                inputs=tuple(index.shapes[t] for t in ins),
                outputs=tuple(index.shapes[t] for t in outs),
                node_names=tuple(index.nodes[i].name for i in seg),
                cost=cost,
                note=_note(index, seg),
            )
        )
    meta = {
        "logrows_max": logrows_max,
        "over_budget": over_budget,
        "data_only": [
            k
            for k, seg in enumerate(segments)
            if all(index.nodes[i].op_type in DATA_MOVEMENT_OPS for i in seg)
        ],
        "oracle_calls": 0,
        "nodes_rewritten": 0,
        "constant_nodes": sorted(index.nodes[i].name for i in index.constant_nodes),
    }
    return SlicedModel(
        slices=tuple(specs),
        model_inputs=get_model_inputs(rewritten),
        model_outputs=get_model_outputs(rewritten),
        budget=budget,
        rewritten=rewritten,
        meta=meta,
    )


def partition_greedy(
    index: GraphIndex, order: Sequence[int], rows_max: int | None
) -> list[list[int]]:
    """Segments of consecutive nodes (in `order`), each grown while its heuristic rows fit.

    A node's outputs count as slice outputs until the node that reads them last joins the same
    segment (then they are internal and their output rows are taken back).
    """
    segments: list[list[int]] = []
    current: list[int] = []
    produced: set[str] = set()
    inputs: set[str] = set()
    rows = 0.0
    for i in order:
        extra = _added_rows(index, i, produced, inputs)
        if current and rows_max is not None and rows + extra > rows_max:
            segments.append(current)
            current, produced, inputs, rows = [], set(), set(), 0.0
            extra = _added_rows(index, i, produced, inputs)
        current.append(i)
        node = index.nodes[i]
        inputs.update(t for t in node.input if t and t not in produced and t not in index.constants)
        produced.update(o for o in node.output if o)
        rows += extra
    if current:
        segments.append(current)
    return segments


def _added_rows(index: GraphIndex, i: int, produced: set[str], inputs: set[str]) -> float:
    """Heuristic rows that node i adds to a segment that made `produced` and reads `inputs`."""
    node = index.nodes[i]
    fresh = sorted(
        {t for t in node.input if t and t not in produced and t not in inputs} - index.constants
    )
    rows = compute_node_rows(node, index.shapes) + compute_input_rows(
        index.shapes[t] for t in fresh
    )
    rows += compute_output_rows(index.shapes[o] for o in node.output if o in index.shapes)
    for t in sorted(set(node.input) & produced):
        if t not in index.model_outputs and max(index.consumers[t]) == i:
            rows -= compute_output_rows([index.shapes[t]])  # now internal to the segment
    return rows


class _Oracle:
    """Calls the exact cost function at most once per distinct sub-model (by content hash).

    If `cost_fn` also has `compute_costs(models) -> list[SliceCost | None]` (a batch form, e.g.
    one EZKL worker process for many sub-models), the planner uses it; None there means EZKL
    cannot build the sub-model, treated as over any budget.
    """

    def __init__(self, cost_fn: Callable[[onnx.ModelProto], SliceCost] | None) -> None:
        self.cost_fn = cost_fn
        self.cache: dict[str, SliceCost] = {}
        self.calls = 0

    def measure_many(self, subs: Sequence[onnx.ModelProto]) -> list[SliceCost]:
        if self.cost_fn is None:
            return [estimate_cost(sub) for sub in subs]
        keys = [_model_hash(sub) for sub in subs]
        todo: dict[str, onnx.ModelProto] = {}
        for key, sub in zip(keys, subs, strict=True):
            if key not in self.cache:
                todo.setdefault(key, sub)
        if todo:
            if self.calls + len(todo) > ORACLE_CALLS_MAX:
                raise BudgetError(f"cost oracle asked for {self.calls + len(todo)} sub-models")
            self.calls += len(todo)
            batch = getattr(self.cost_fn, "compute_costs", None)
            if callable(batch):
                costs = list(batch(list(todo.values())))
            else:
                costs = [self.cost_fn(sub) for sub in todo.values()]
            for key, cost in zip(todo, costs, strict=True):
                self.cache[key] = cost if cost is not None else _UNBUILDABLE
        return [self.cache[key] for key in keys]


_UNBUILDABLE = SliceCost(rows=1 << 30, logrows=31, memory_mb_estimate=1 << 30, exact=True)


def _model_hash(sub: onnx.ModelProto) -> str:
    copy = onnx.ModelProto()
    copy.CopyFrom(sub)
    copy.graph.name = ""  # the same sub-graph at another position costs the same
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def _refine_with_oracle(
    model: onnx.ModelProto,
    index: GraphIndex,
    segments: list[list[int]],
    logrows_max: int,
    oracle: _Oracle,
) -> list[list[int]]:
    """Halve each segment the exact oracle finds over budget until it fits or is one node.

    Measures a whole round of segments in one batch, so a batch oracle is asked O(log n) times.
    """
    current = [list(seg) for seg in segments]
    while True:
        bounds = compute_boundaries(index, current)
        subs = [
            extract_sub_model(model, index, seg, ins, outs, "probe")
            for seg, (ins, outs) in zip(current, bounds, strict=True)
        ]
        costs = oracle.measure_many(subs)
        nxt: list[list[int]] = []
        changed = False
        for seg, cost in zip(current, costs, strict=True):
            if cost.logrows <= logrows_max or len(seg) == 1:
                nxt.append(seg)
                continue
            cut = _balanced_cut(index, seg)
            nxt.extend([seg[:cut], seg[cut:]])
            changed = True
        current = nxt
        if not changed:
            return current


def _balanced_cut(index: GraphIndex, seg: Sequence[int]) -> int:
    """The cut point that splits `seg`'s heuristic node rows most evenly (1 ≤ cut < len)."""
    weights = [compute_node_rows(index.nodes[i], index.shapes) + 1.0 for i in seg]
    total = sum(weights)
    acc = 0.0
    for k, w in enumerate(weights[:-1], start=1):
        acc += w
        if acc >= total / 2:
            return k
    return len(seg) - 1


def _note(index: GraphIndex, seg: Sequence[int]) -> str:
    tags: list[str] = []
    for i in seg:
        tag = index.nodes[i].doc_string
        if tag.startswith("split: ") and tag[7:] not in tags:
            tags.append(tag[7:])
    if tags:
        return "; ".join(tags)
    names = [index.nodes[i].name for i in seg]
    return names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]}"
