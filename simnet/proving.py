"""The simnet's proving workload: slice a shipped model into a bundle and prove it with real EZKL.

Runs on a background thread of the supervisor; every EZKL step runs in a spawned worker process
(slicing.api), so the supervisor's dashboard stays live. Slice states are reported through
`on_slice(index, state, figures)`. The market that hands slices to different nodes over the
network is a later issue: here the supervisor's own prover pool proves them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slicing.api import BuildOptions, build_bundle, prove_chain, read_inputs
from slicing.bundle import load_bundle
from slicing.errors import SlicingError
from slicing.prover import EzklProver
from slicing.types import Budget

MODELS_DIR = Path(__file__).resolve().parent.parent / "slicing" / "models"
MODELS = {
    "digits": ("digits_cnn.onnx", "digits_sample.json"),
    "cifar": ("cifar_lenet.onnx", "cifar_sample.json"),
}

SliceCallback = Callable[[int, str, dict[str, Any]], None]


@dataclass
class ProvingResult:
    ok: bool
    bundle_id: str = ""
    slices: int = 0
    proven_fraction: float = 0.0
    chain_verified: bool = False
    linkage: str = ""
    build_s: float = 0.0
    prove_s_total: float = 0.0
    peak_rss_mb_max: float = 0.0
    error: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)


class _SliceProgress:
    """Maps slicing's progress steps ("slice 3: ...") onto per-slice states."""

    def __init__(self, on_slice: SliceCallback, phase: str) -> None:
        self.on_slice = on_slice
        self.phase = phase
        self.current: int | None = None

    def start(self, total: int, title: str) -> None:
        self.phase = title

    def step(self, description: str) -> None:
        head = description.split(":", 1)[0]
        if head.startswith("slice ") and head[6:].isdigit():
            self.current = int(head[6:])
            state = "proving" if self.phase == "prove" else "building"
            self.on_slice(self.current, state, {"note": description.split(":", 1)[-1].strip()})

    def advance(self) -> None:
        return None

    def note(self, message: str) -> None:
        return None


def get_bundle(
    model: str, workdir: Path, budget: Budget, cache_dir: Path, on_slice: SliceCallback
) -> Any:
    """Build (or reuse, if already built for this budget) the model's bundle."""
    model_file, sample = MODELS[model]
    out = workdir / f"bundle-{model}-l{budget.max_logrows}"
    if (out / "manifest.json").exists():
        try:
            return load_bundle(out)
        except SlicingError:
            shutil.rmtree(out)
    opts = BuildOptions(budget=budget, cache_dir=cache_dir)
    return build_bundle(
        MODELS_DIR / model_file, MODELS_DIR / sample, out, opts, _SliceProgress(on_slice, "build")
    )


def run_proving(
    model: str, workdir: Path, budget: Budget, on_slice: SliceCallback
) -> ProvingResult:
    """Build the bundle, prove every slice, verify proofs and linkage. Never raises SlicingError."""
    import time

    cache_dir = workdir / "ezkl-cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        bundle = get_bundle(model, workdir, budget, cache_dir, on_slice)
        build_s = time.monotonic() - started
        for entry in bundle.slices:
            state = "pending" if entry["proven"] else "unproven"
            figures = {"logrows": entry.get("logrows") or 0, "note": entry.get("note", "")}
            on_slice(entry["index"], state, figures)
        inputs = read_inputs(bundle, MODELS_DIR / MODELS[model][1])
        report = prove_chain(
            bundle, inputs, EzklProver(cache_dir=cache_dir), _SliceProgress(on_slice, "prove")
        )
    except SlicingError as exc:
        return ProvingResult(ok=False, error=f"{type(exc).__name__}: {exc}")
    for row in report.slices:
        state = (
            "verified" if row.get("verified") else ("unproven" if not row["proven"] else "failed")
        )
        on_slice(row["index"], state, row)
    proven = [r for r in report.slices if r["proven"]]
    (workdir / "chain-report.json").write_text(json.dumps(report.to_json(), indent=1))
    return ProvingResult(
        ok=report.chain_verified,
        bundle_id=report.bundle_id,
        slices=len(report.slices),
        proven_fraction=report.proven_fraction,
        chain_verified=report.chain_verified,
        linkage=report.linkage,
        build_s=build_s,
        prove_s_total=sum(float(r.get("prove_s", 0.0)) for r in proven),
        peak_rss_mb_max=max((float(r.get("peak_rss_mb", 0.0)) for r in proven), default=0.0),
        outputs=report.outputs,
    )
