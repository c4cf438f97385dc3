"""Planner benchmark: `python -m bench.slicing_plan [--json PATH] [--light]`.

For the project's models (and, with --light, ImageNet architectures shipped in the onnx package's
backend test data) under several budgets, measures what the planner produces and what it costs:
slices, nodes added by intra-layer splits, the largest slice's estimated logrows and proving memory,
total estimated rows (boundaries add input rows), the planning time, onnxruntime time of the
chained slices against the whole model, and the largest |chained - whole| on the outputs.
No EZKL here: the whole-vs-sliced proving benchmark is `bench.slicing`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from slicing.graph import load_model
from slicing.models import CIFAR_MODEL, DIGITS_MODEL
from slicing.plan import estimate_cost, slice_model
from slicing.runner import run_chain, run_whole
from slicing.types import Budget

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
REPEATS = 9


def _time_ms(fn: Any, repeats: int = REPEATS) -> float:
    """Median wall time of `repeats` calls, after one warm-up call (session creation)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000


def measure(name: str, model: onnx.ModelProto, logrows: int | None) -> dict[str, Any]:
    start = time.perf_counter()
    sliced = slice_model(model, Budget(max_logrows=logrows))
    plan_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    feeds = {t.name: rng.standard_normal(t.shape).astype(t.dtype) for t in sliced.model_inputs}
    whole = run_whole(model, feeds)
    chained = run_chain(sliced, feeds)
    diff = max(float(np.max(np.abs(chained[k] - v))) for k, v in whole.items())
    costs = [s.cost for s in sliced.slices if s.cost is not None]
    return {
        "model": name,
        "max_logrows": logrows,
        "slices": len(sliced.slices),
        "nodes_added_by_splits": sliced.meta["nodes_rewritten"],
        "over_budget": len(sliced.meta["over_budget"]),
        "slice_logrows_max": max(c.logrows for c in costs),
        "slice_memory_mb_max": max(c.memory_mb_estimate for c in costs),
        "rows_total": sum(c.rows for c in costs),
        "whole_rows": estimate_cost(model).rows,
        "plan_s": round(plan_s, 3),
        "chain_ms": round(_time_ms(lambda: run_chain(sliced, feeds)), 2),
        "whole_ms": round(_time_ms(lambda: run_whole(model, feeds)), 2),
        "max_abs_diff": diff,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slicing_plan")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--light", action="store_true", help="also the onnx ImageNet models")
    args = parser.parse_args(argv)
    cases: list[tuple[str, onnx.ModelProto, list[int | None]]] = [
        ("digits_cnn", load_model(DIGITS_MODEL), [15, 16, None]),
        ("cifar_lenet", load_model(CIFAR_MODEL), [15, 16, 17, 18, None]),
    ]
    if args.light:
        for stem in ("light_squeezenet", "light_resnet50", "light_inception_v1"):
            cases.append((stem, load_model(LIGHT_DIR / f"{stem}.onnx"), [22, 24]))
    rows = [measure(name, model, lr) for name, model, budgets in cases for lr in budgets]
    columns = [
        ("model", 19), ("max_logrows", 11), ("slices", 6), ("nodes_added_by_splits", 11),
        ("over_budget", 5), ("slice_logrows_max", 8), ("slice_memory_mb_max", 9),
        ("rows_total", 10), ("whole_rows", 10), ("plan_s", 7), ("chain_ms", 9), ("whole_ms", 9),
        ("max_abs_diff", 12),
    ]  # fmt: skip
    headers = {
        "nodes_added_by_splits": "+nodes", "over_budget": "over", "slice_logrows_max": "logrows",
        "slice_memory_mb_max": "mem MB", "max_logrows": "budget",
    }  # fmt: skip
    print(" ".join(headers.get(c, c).rjust(w) for c, w in columns))
    for row in rows:
        cells = []
        for c, w in columns:
            v = row[c]
            text = "none" if v is None else f"{v:.1e}" if c == "max_abs_diff" else str(v)
            cells.append(text.rjust(w))
        print(" ".join(cells))
    if args.json:
        args.json.write_text(json.dumps({"runs": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
