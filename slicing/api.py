"""The stable API of slicing/ that node/ and the CLI call: plan, build a bundle, witness / prove /
verify one slice, verify a chain, prove a whole chain locally, run a bundle without proving.

Every EZKL step runs in a spawned worker process (slicing.worker), so these functions block only the
calling thread, never hold the GIL during EZKL work, and are safe to call from `trio.to_thread`.
The planner, ONNX loading and onnxruntime execution come from graph.py / plan.py / runner.py.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slicing.bundle import (
    BUILD_TIMEOUT_S,
    BuildOptions,
    Bundle,
    ScalePolicy,
    compute_max_logrows,
    load_bundle,
    write_bundle,
)
from slicing.errors import LinkageError, ProofError
from slicing.linkage import (
    LinkReason,
    SliceLayout,
    compute_felts,
    compute_input_commitment,
    verify_chain,
)
from slicing.progress import NullProgress, ProgressSink
from slicing.prover import EzklProver, EzklVerifier, ProofArtifact, write_input_data
from slicing.srs import compute_file_sha256
from slicing.types import Budget, SliceCost, SlicedModel, SliceSpec, TensorInfo
from slicing.worker import run_job

COST_TIMEOUT_S = 300.0

__all__ = [
    "BuildOptions",
    "ChainReport",
    "EzklCostOracle",
    "build_bundle",
    "compute_job_commitment",
    "compute_max_logrows",
    "get_slice_inputs",
    "get_slice_spec",
    "load_bundle",
    "plan",
    "prove_chain",
    "read_inputs",
    "run_local",
    "verify_proof_chain",
    "verify_slice",
    "witness_chain_many",
    "witness_chain_values",
    "witness_slice",
    "write_bundle",
]


def _model_sha256(model: Any) -> str:
    return hashlib.sha256(model.SerializeToString()).hexdigest()


@dataclass
class EzklCostOracle:
    """`cost_fn` for the planner: EZKL's exact rows (gen_settings) per sub-model, cached by hash.

    `compute_costs` batches many sub-models into one worker process (the spawn is the fixed cost).
    """

    policy: ScalePolicy = field(default_factory=ScalePolicy)
    cache: dict[str, SliceCost] = field(default_factory=dict)
    calls: int = 0

    def compute_costs(self, models: Sequence[Any]) -> list[SliceCost | None]:
        """Cost of each model (None where EZKL cannot build settings: unsupported op)."""
        from slicing.plan_cost import compute_memory_mb

        keys = [_model_sha256(m) for m in models]
        todo = {k: m for k, m in zip(keys, models, strict=True) if k not in self.cache}
        failed: set[str] = set()
        if todo:
            with tempfile.TemporaryDirectory(prefix="dsperse-cost-") as tmp:
                paths = []
                for i, model in enumerate(todo.values()):
                    paths.append(str(Path(tmp, f"m{i}.onnx")))
                    Path(paths[-1]).write_bytes(model.SerializeToString())
                args = {"models": paths, "policy": self.policy.as_dict(), "work_dir": tmp}
                job = run_job("cost_many", args, timeout_s=COST_TIMEOUT_S)
                self.calls += 1
            for key, row in zip(todo, job.value, strict=True):
                if "error" in row:
                    failed.add(key)
                    continue
                lr = int(row["logrows"])
                self.cache[key] = SliceCost(
                    rows=int(row["rows"]),
                    logrows=lr,
                    memory_mb_estimate=compute_memory_mb(lr),
                    exact=True,
                )
        return [None if k in failed else self.cache.get(k) for k in keys]

    def __call__(self, sub_model: Any) -> SliceCost:
        cost = self.compute_costs([sub_model])[0]
        if cost is None:  # EZKL cannot handle it: tell the planner it is over any budget
            return SliceCost(rows=1 << 30, logrows=31, memory_mb_estimate=1 << 30, exact=True)
        return cost


def plan(model_path: Path, budget: Budget, exact_cost: bool = False) -> SlicedModel:
    """Load and slice a model under `budget` (EZKL's exact oracle if `exact_cost`)."""
    from slicing.graph import load_model
    from slicing.plan import slice_model

    model = load_model(Path(model_path))
    return slice_model(model, budget, EzklCostOracle() if exact_cost else None)


def build_bundle(
    model_path: Path,
    input_path: Path,
    out_dir: Path,
    opts: BuildOptions,
    progress: ProgressSink | None = None,
) -> Bundle:
    """Load and plan a model, then write its bundle (see `write_bundle`)."""
    from slicing.graph import load_model
    from slicing.plan import slice_model
    from slicing.runner import read_input_file

    model = load_model(Path(model_path))
    oracle = EzklCostOracle(opts.policy) if opts.exact_cost else None
    sliced = slice_model(model, opts.budget, oracle)
    inputs = read_input_file(Path(input_path), sliced.model_inputs)
    source = {"file": Path(model_path).name, "sha256": compute_file_sha256(Path(model_path))}
    return write_bundle(sliced, inputs, source, Path(out_dir), opts, progress)


# ---- running and proving a bundle ---------------------------------------------------------------


def get_slice_spec(bundle: Bundle, index: int) -> SliceSpec:
    """A SliceSpec (ONNX model + tensors) for slice `index` of a loaded bundle."""
    import onnx

    entry = bundle.manifest["slices"][index]

    def infos(ts: list[dict[str, Any]]) -> tuple[TensorInfo, ...]:
        return tuple(TensorInfo(t["name"], tuple(t["shape"])) for t in ts)

    model = onnx.load(str(bundle.get_path(index, "model.onnx")))
    return SliceSpec(index, model, infos(entry["inputs"]), infos(entry["outputs"]))


def get_model_inputs(bundle: Bundle) -> tuple[TensorInfo, ...]:
    return tuple(
        TensorInfo(t["name"], tuple(t["shape"])) for t in bundle.manifest["model"]["inputs"]
    )


def read_inputs(bundle: Bundle, input_path: Path) -> dict[str, np.ndarray]:
    """A job input file checked against the bundle's model inputs (InputError otherwise)."""
    from slicing.runner import read_input_file

    return read_input_file(Path(input_path), get_model_inputs(bundle))


def get_layouts(bundle: Bundle) -> list[SliceLayout]:
    def pairs(ts: list[dict[str, Any]]) -> tuple[tuple[str, int], ...]:
        return tuple((t["name"], int(t["elements"])) for t in ts)

    return [SliceLayout(e["index"], pairs(e["inputs"]), pairs(e["outputs"])) for e in bundle.slices]


def compute_job_commitment(bundle: Bundle, inputs: Mapping[str, np.ndarray]) -> str:
    """The input commitment of a job on this bundle: hash of the quantised model inputs."""
    flat = {name: np.asarray(v, dtype=np.float64).ravel().tolist() for name, v in inputs.items()}
    return compute_input_commitment(flat, int(bundle.manifest["policy"]["scale"]))


def witness_slice(
    bundle: Bundle, index: int, inputs: Mapping[str, Sequence[float]]
) -> dict[str, Any]:
    """Run slice `index`'s quantised circuit (no proof): instances and rescaled outputs."""
    with tempfile.TemporaryDirectory(prefix="dsperse-witness-") as tmp:
        data = Path(tmp, "input.json")
        write_input_data(data, bundle, index, inputs)
        args = {
            "compiled": str(bundle.get_path(index, "model.compiled")),
            "data": str(data),
            "witness_out": str(Path(tmp, "witness.json")),
        }
        value: dict[str, Any] = run_job("witness", args, timeout_s=BUILD_TIMEOUT_S).value
    return value


def witness_chain_many(
    bundle: Bundle, inputs: Sequence[Mapping[str, np.ndarray]]
) -> list[dict[str, list[float]]]:
    """The quantised chain (what proofs attest, without proving) on many inputs: model outputs.

    One worker per provable slice runs every input; unproven slices run in onnxruntime."""
    from slicing.runner import run_slice

    values = [
        {n: np.asarray(v, dtype=np.float64).ravel().tolist() for n, v in x.items()} for x in inputs
    ]
    for entry in bundle.slices:
        i = entry["index"]
        out_names = [t["name"] for t in entry["outputs"]]
        if entry["proven"]:
            with tempfile.TemporaryDirectory(prefix="dsperse-witness-") as tmp:
                datas = []
                for k, vals in enumerate(values):
                    datas.append(str(Path(tmp, f"in-{k}.json")))
                    write_input_data(Path(datas[-1]), bundle, i, vals)
                args = {
                    "compiled": str(bundle.get_path(i, "model.compiled")),
                    "datas": datas,
                    "work_dir": tmp,
                }
                timeout_s = BUILD_TIMEOUT_S + len(datas)
                results = run_job("witness_many", args, timeout_s=timeout_s).value
        else:
            spec = get_slice_spec(bundle, i)
            results = []
            for vals in values:
                feeds = {t.name: _unflatten(bundle, t.name, vals[t.name]) for t in spec.inputs}
                got = run_slice(spec, feeds)
                results.append([np.asarray(got[n]).ravel().tolist() for n in out_names])
        for vals, outs in zip(values, results, strict=True):
            vals.update(zip(out_names, outs, strict=True))
    names = [t["name"] for t in bundle.manifest["model"]["outputs"]]
    return [{n: vals[n] for n in names} for vals in values]


def witness_chain_values(
    bundle: Bundle, inputs: Mapping[str, np.ndarray]
) -> dict[str, list[float]]:
    """Every tensor value on the quantised chain of one input, flat: the model inputs and each
    slice's rescaled outputs, which are exactly what the next slice's proof takes as its input.

    A requester computes this locally (witnesses only, no proofs) so that every slice of a job can
    be handed to a prover at once: `get_slice_inputs(bundle, i, values)` is slice i's input."""
    from slicing.runner import run_slice

    values = {n: np.asarray(v, dtype=np.float64).ravel().tolist() for n, v in inputs.items()}
    for entry in bundle.slices:
        i = entry["index"]
        out_names = [t["name"] for t in entry["outputs"]]
        if entry["proven"]:
            outs = witness_slice(bundle, i, values)["rescaled_outputs"]
        else:
            spec = get_slice_spec(bundle, i)
            feeds = {t.name: _unflatten(bundle, t.name, values[t.name]) for t in spec.inputs}
            got = run_slice(spec, feeds)
            outs = [np.asarray(got[n], dtype=np.float64).ravel().tolist() for n in out_names]
        values.update(zip(out_names, ([float(v) for v in t] for t in outs), strict=True))
    return values


def get_slice_inputs(
    bundle: Bundle, index: int, values: Mapping[str, Sequence[float]]
) -> dict[str, list[float]]:
    """Slice `index`'s input tensors (by name, flat) out of `witness_chain_values`' result."""
    names = [t["name"] for t in bundle.manifest["slices"][index]["inputs"]]
    missing = [n for n in names if n not in values]
    if missing:
        raise ProofError(f"slice {index}: no value for input(s) {missing}")
    return {n: list(values[n]) for n in names}


def verify_slice(bundle: Bundle, index: int, proof: bytes, cache_dir: Path) -> bool:
    return EzklVerifier({bundle.bundle_id: bundle}, cache_dir).verify_as(bundle, index, proof)


def verify_proof_chain(
    bundle: Bundle,
    artifacts: Mapping[int, ProofArtifact],
    input_commitment: str | None,
    claimed_outputs: Mapping[str, Sequence[float]] | None,
    verifier: EzklVerifier,
) -> None:
    """Raise LinkageError unless `artifacts` (one per slice) prove one linked result."""
    scale = int(bundle.manifest["policy"]["scale"])
    claimed = None
    if claimed_outputs is not None:
        claimed = {n: compute_felts(v, scale) for n, v in claimed_outputs.items()}

    def verify_proof(i: int, j: int) -> bool:
        art = artifacts[i]
        if i == j and art.verified is not None and art.bundle_id == bundle.bundle_id:
            return art.verified
        return verifier.verify_as(bundle, j, art.proof)

    verify_chain(
        get_layouts(bundle),
        {i: a.instances for i, a in artifacts.items()},
        verify_proof,
        [t["name"] for t in bundle.manifest["model"]["inputs"]],
        [t["name"] for t in bundle.manifest["model"]["outputs"]],
        input_commitment,
        claimed,
    )


@dataclass
class ChainReport:
    bundle_id: str
    slices: list[dict[str, Any]]
    outputs: dict[str, dict[str, Any]]
    artifacts: dict[int, ProofArtifact]
    proven_fraction: float
    chain_verified: bool
    linkage: str  # "ok" or the LinkReason / detail
    input_commitment: str

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle_id": self.bundle_id,
            "slices": self.slices,
            "outputs": self.outputs,
            "proven_fraction": self.proven_fraction,
            "chain_verified": self.chain_verified,
            "linkage": self.linkage,
            "input_commitment": self.input_commitment,
        }


def _unflatten(bundle: Bundle, name: str, flat: Sequence[float]) -> np.ndarray:
    shapes = {t["name"]: t["shape"] for e in bundle.slices for t in e["inputs"] + e["outputs"]}
    shapes.update({t["name"]: t["shape"] for t in bundle.manifest["model"]["inputs"]})
    return np.asarray(flat, dtype=np.float32).reshape(shapes[name])


def prove_chain(
    bundle: Bundle,
    inputs: Mapping[str, np.ndarray],
    prover: EzklProver,
    progress: ProgressSink | None = None,
) -> ChainReport:
    """Prove every provable slice in order, each on its producer's quantised outputs; run the
    rest in onnxruntime (unproven); then verify every proof and the linkage of the whole chain."""
    from slicing.runner import run_slice

    progress = progress or NullProgress()
    values: dict[str, list[float]] = {
        n: np.asarray(v, dtype=np.float64).ravel().tolist() for n, v in inputs.items()
    }
    artifacts: dict[int, ProofArtifact] = {}
    rows: list[dict[str, Any]] = []
    progress.start(len(bundle.slices), "prove")
    for entry in bundle.slices:
        i = entry["index"]
        out_names = [t["name"] for t in entry["outputs"]]
        if entry["proven"]:
            progress.step(f"slice {i}: setup/witness/prove/verify")
            art = prover.prove_slice(bundle, i, values)
            artifacts[i] = art
            outs = [list(t) for t in art.rescaled_outputs]
            rows.append({"index": i, "proven": True, "verified": art.verified, **art.figures})
        else:
            progress.step(f"slice {i}: onnxruntime (unproven)")
            spec = get_slice_spec(bundle, i)
            feeds = {t.name: _unflatten(bundle, t.name, values[t.name]) for t in spec.inputs}
            result = run_slice(spec, feeds)
            outs = [np.asarray(result[n], dtype=np.float64).ravel().tolist() for n in out_names]
            rows.append({"index": i, "proven": False, "fallback": entry["fallback"]})
        values.update(zip(out_names, outs, strict=True))
        progress.advance()
    out_meta = bundle.manifest["model"]["outputs"]
    outputs = {t["name"]: {"shape": t["shape"], "data": values[t["name"]]} for t in out_meta}
    commitment = compute_job_commitment(bundle, inputs)
    proven = len(artifacts)
    linkage = "ok"
    if proven < len(bundle.slices):
        linkage = (
            f"{LinkReason.MISSING_PROOF.value}: {len(bundle.slices) - proven} unproven slice(s)"
        )
    else:
        verifier = EzklVerifier({bundle.bundle_id: bundle}, prover.cache_dir, prover.srs_file)
        claimed = {n: o["data"] for n, o in outputs.items()}
        try:
            verify_proof_chain(bundle, artifacts, commitment, claimed, verifier)
        except LinkageError as exc:
            linkage = str(exc)
    return ChainReport(
        bundle_id=bundle.bundle_id,
        slices=rows,
        outputs=outputs,
        artifacts=artifacts,
        proven_fraction=proven / max(1, len(bundle.slices)),
        chain_verified=linkage == "ok",
        linkage=linkage,
        input_commitment=commitment,
    )


def run_local(bundle: Bundle, inputs: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Run the bundle's slices chained in onnxruntime (no proofs): {output name: shape, data}."""
    from slicing.runner import run_chain

    specs = tuple(get_slice_spec(bundle, e["index"]) for e in bundle.slices)
    sliced = SlicedModel(specs, get_model_inputs(bundle), (), Budget())
    values = run_chain(sliced, dict(inputs))
    out_meta = bundle.manifest["model"]["outputs"]
    return {
        t["name"]: {
            "shape": t["shape"],
            "data": np.asarray(values[t["name"]], dtype=np.float64).ravel().tolist(),
        }
        for t in out_meta
    }
