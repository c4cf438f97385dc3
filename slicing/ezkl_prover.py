"""Every call into EZKL: the only module of the project that imports `ezkl`.

Each public function here is an *operation* (registered in `OPS`) that runs inside a spawned worker
process (`slicing.worker`), takes JSON-able arguments (file paths, numbers) and returns JSON-able
results. Nothing in the parent process imports this module (EZKL holds the GIL and breaks after
fork).

Scale policy (linkage needs a producer's output scale to equal its consumer's input scale): every
slice of a bundle uses one fixed `scale` for inputs and parameters, and `scale_rebase_multiplier =
1`, so EZKL rebases every output back to `scale`. Calibration only sizes the circuit (lookup
ranges, logrows) on the activations that really reach the slice. `decomp_base`/`decomp_legs` set
the range-check table size, which bounds logrows from below (2^14 -> logrows 15, 2^10 -> logrows
11).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ezkl as _ezkl

# EZKL's bundled stubs omit its keyword defaults and PyRunArgs' fields: call it untyped.
ezkl: Any = _ezkl

EZKL_VERSION: str = ezkl.__version__
CALIBRATION_TARGET = "resources"


def _run_args(policy: dict[str, Any], logrows: int | None = None) -> Any:
    ra = ezkl.PyRunArgs()
    ra.input_visibility = "public"
    ra.output_visibility = "public"
    ra.param_visibility = "fixed"
    ra.input_scale = int(policy["scale"])
    ra.param_scale = int(policy["scale"])
    ra.scale_rebase_multiplier = 1
    ra.decomp_base = int(policy["decomp_base"])
    ra.decomp_legs = int(policy["decomp_legs"])
    if logrows is not None:
        ra.logrows = logrows
    return ra


def compute_min_logrows(rows: int, decomp_base: int) -> int:
    """Smallest logrows holding `rows` rows and the range-check table, plus blinding rows."""
    return max(1, math.ceil(math.log2(max(rows, decomp_base) + 64)))


def _summary(settings_path: Path) -> dict[str, Any]:
    s = json.loads(settings_path.read_text())
    return {
        "logrows": s["run_args"]["logrows"],
        "rows": s["num_rows"],
        "input_scales": s["model_input_scales"],
        "output_scales": s["model_output_scales"],
        "instance_shapes": s["model_instance_shapes"],
        "ezkl_version": EZKL_VERSION,
    }


def cost_many(models: list[str], policy: dict[str, Any], work_dir: str) -> list[dict[str, Any]]:
    """gen_settings on each model (cheap, no data): its row count and the logrows that needs."""
    out: list[dict[str, Any]] = []
    for i, model in enumerate(models):
        settings = Path(work_dir, f"cost-{i}.json")
        try:
            ezkl.gen_settings(model, str(settings), py_run_args=_run_args(policy))
        except (RuntimeError, ValueError) as exc:
            out.append({"error": " ".join(str(exc).split())[:300]})
            continue
        rows = int(json.loads(settings.read_text())["num_rows"])
        out.append({"rows": rows, "logrows": compute_min_logrows(rows, policy["decomp_base"])})
    return out


def build_circuit(
    model: str, calibration_data: str, out_dir: str, policy: dict[str, Any], max_logrows: int
) -> dict[str, Any]:
    """gen_settings -> calibrate (fixed scales, on the chained activations) -> compile."""
    settings, compiled = Path(out_dir, "settings.json"), Path(out_dir, "model.compiled")
    scale = int(policy["scale"])
    t0 = time.perf_counter()
    ezkl.gen_settings(model, str(settings), py_run_args=_run_args(policy))
    ezkl.calibrate_settings(
        calibration_data,
        model,
        str(settings),
        CALIBRATION_TARGET,
        scales=[scale],
        scale_rebase_multiplier=[1],
        max_logrows=max_logrows,
    )
    _canonicalize_settings(settings)
    t1 = time.perf_counter()
    ezkl.compile_circuit(model, str(compiled), str(settings))
    t2 = time.perf_counter()
    summary = _summary(settings)
    summary.update(calibrate_s=t1 - t0, compile_s=t2 - t1)
    return summary


def _canonicalize_settings(settings: Path) -> None:
    """Make settings a function of the model, sample and policy alone, so the same inputs give
    the same bundle id: EZKL stamps them with the wall clock and writes some sets (range checks,
    lookups) in hash order. Neither plays a part in proving: zero the stamp, sort the sets."""
    doc = json.loads(settings.read_text())
    if "timestamp" in doc:
        doc["timestamp"] = 0  # EZKL wants a number here (null does not parse)
    for key in ("required_range_checks", "required_lookups"):
        if isinstance(doc.get(key), list):
            doc[key] = sorted(doc[key], key=lambda v: json.dumps(v, sort_keys=True))
    settings.write_text(json.dumps(doc, sort_keys=True))


def gen_srs(srs_path: str, logrows: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    ezkl.gen_srs(srs_path, logrows)
    return {"srs_s": time.perf_counter() - t0}


def setup(compiled: str, srs: str, vk_out: str, pk_out: str) -> dict[str, Any]:
    """Derive vk and pk (deterministic for a given compiled circuit and SRS)."""
    t0 = time.perf_counter()
    ezkl.setup(compiled, vk_out, pk_out, srs_path=srs)
    return {"setup_s": time.perf_counter() - t0}


def _witness_view(witness: dict[str, Any]) -> dict[str, Any]:
    rescaled = witness["pretty_elements"]["rescaled_outputs"]
    return {
        "inputs": witness["inputs"],
        "outputs": witness["outputs"],
        "rescaled_outputs": [[float(v) for v in t] for t in rescaled],
    }


def witness(compiled: str, data: str, witness_out: str) -> dict[str, Any]:
    """Run the quantised circuit: input/output field elements and the rescaled (float) outputs."""
    t0 = time.perf_counter()
    ezkl.gen_witness(data, compiled, witness_out)
    # The file, not the returned object: the JSON file is what `prove` reads.
    view = _witness_view(json.loads(Path(witness_out).read_text()))
    view["witness_s"] = time.perf_counter() - t0
    return view


def witness_many(compiled: str, datas: list[str], work_dir: str) -> list[list[list[float]]]:
    """Rescaled outputs of the quantised circuit on many input files (one process for all)."""
    out = []
    for i, data in enumerate(datas):
        path = Path(work_dir, f"witness-{i}.json")
        ezkl.gen_witness(data, compiled, str(path))
        out.append(_witness_view(json.loads(path.read_text()))["rescaled_outputs"])
        path.unlink()
    return out


def verify(proof: str, settings: str, vk: str, srs: str) -> dict[str, Any]:
    """Check one proof; an invalid proof is a result (False with the reason), not an error."""
    t0 = time.perf_counter()
    try:
        ok = bool(ezkl.verify(proof, settings, vk, srs_path=srs))
        reason = "" if ok else "verify returned false"
    except (RuntimeError, ValueError) as exc:
        ok, reason = False, " ".join(str(exc).split())[:300]
    return {"verified": ok, "reason": reason, "verify_s": time.perf_counter() - t0}


def prove(
    compiled: str,
    data: str,
    pk: str,
    srs: str,
    settings: str,
    vk: str,
    out_dir: str,
    check: bool = True,
) -> dict[str, Any]:
    """witness -> prove (-> verify): timings, the proof file, its instances and rescaled outputs."""
    out = Path(out_dir)
    result = witness(compiled, data, str(out / "witness.json"))
    proof_path = out / "proof.json"
    t0 = time.perf_counter()
    ezkl.prove(str(out / "witness.json"), compiled, pk, str(proof_path), srs_path=srs)
    result["prove_s"] = time.perf_counter() - t0
    result["proof"] = str(proof_path)
    result["proof_bytes"] = proof_path.stat().st_size
    result["rows"] = json.loads(Path(settings).read_text())["num_rows"]
    if check:
        result.update(verify(str(proof_path), settings, vk, srs))
    return result


OPS: dict[str, Callable[..., Any]] = {
    "cost_many": cost_many,
    "build_circuit": build_circuit,
    "gen_srs": gen_srs,
    "setup": setup,
    "witness": witness,
    "witness_many": witness_many,
    "prove": prove,
    "verify": verify,
}
