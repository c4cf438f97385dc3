"""Slicing benchmark: `python -m bench.slicing [--json PATH] [--max-logrows N] [--skip-whole]`.

On the project's CIFAR-size LeNet (slicing/models/cifar_lenet.onnx, 3x32x32), side by side:
- whole: the model as ONE EZKL circuit: calibrate + compile, SRS, setup, prove, each in its own
worker process, capped (default 8 min and 12 GB RSS per step; a capped step is reported as
"exceeded cap" with the time and memory it reached, and later steps as "not reached");
- sliced: the same model cut under `--max-logrows` (default 15) into a bundle, every slice set up
and proven in its own worker, the chain verified (linkage included).
Same scale policy for both (scale 7, calibration target "resources"). Also the argmax agreement of
the sliced *quantised* chain (the computation the proofs attest) with the float model on the digits
held-out set (slicing/models/digits_heldout.npz). Prints a table; `--json PATH` writes the figures
(keys include whole_peak_rss_mb, slice_peak_rss_mb_max, whole_prove_s, sliced_prove_s_total).
Run it alone, with `nice`: the whole-model part takes minutes and ~12 GB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from slicing import api
from slicing.bundle import ScalePolicy
from slicing.errors import WorkerCapExceeded
from slicing.graph import load_model
from slicing.prover import EzklProver
from slicing.runner import read_input_file, run_whole
from slicing.srs import get_cache_dir, get_srs
from slicing.types import Budget
from slicing.worker import run_job

MODELS = Path(__file__).resolve().parents[1] / "slicing" / "models"
CIFAR, CIFAR_SAMPLE = MODELS / "cifar_lenet.onnx", MODELS / "cifar_sample.json"
DIGITS, DIGITS_SAMPLE = MODELS / "digits_cnn.onnx", MODELS / "digits_sample.json"
DIGITS_HELDOUT = MODELS / "digits_heldout.npz"
WHOLE_LOGROWS_MAX = 24


def _capped(op: str, args: dict[str, Any], cap_s: float, cap_mb: float) -> dict[str, Any]:
    """Run one whole-model step; its figures, or what it reached before the cap killed it."""
    try:
        job = run_job(op, args, timeout_s=cap_s, max_rss_mb=cap_mb)
    except WorkerCapExceeded as exc:
        return {
            "status": f"exceeded {exc.kind} cap",
            "s": exc.elapsed_s,
            "peak_rss_mb": exc.peak_rss_mb,
        }
    return {"status": "ok", "s": job.wall_s, "peak_rss_mb": job.peak_rss_mb, "value": job.value}


def run_whole_model(work: Path, cache: Path, cap_s: float, cap_mb: float) -> dict[str, Any]:
    model_path = work / "whole.onnx"
    onnx.save(load_model(CIFAR), str(model_path))
    policy = ScalePolicy().as_dict()
    build = _capped(
        "build_circuit",
        {
            "model": str(model_path),
            "calibration_data": str(CIFAR_SAMPLE),
            "out_dir": str(work),
            "policy": policy,
            "max_logrows": WHOLE_LOGROWS_MAX,
        },
        cap_s,
        cap_mb,
    )
    fig: dict[str, Any] = {"build": {k: v for k, v in build.items() if k != "value"}}
    if build["status"] != "ok":
        return fig
    fig.update(logrows=build["value"]["logrows"], rows=build["value"]["rows"])
    t0 = time.perf_counter()
    srs = get_srs(int(fig["logrows"]), cache)
    fig["srs_s"] = time.perf_counter() - t0  # 0 when cached; not part of setup
    compiled, pk, vk = work / "model.compiled", work / "pk.key", work / "vk.key"
    setup = _capped(
        "setup",
        {"compiled": str(compiled), "srs": str(srs.path), "vk_out": str(vk), "pk_out": str(pk)},
        cap_s,
        cap_mb,
    )
    fig["setup"] = {k: v for k, v in setup.items() if k != "value"}
    fig["pk_bytes"] = pk.stat().st_size if setup["status"] == "ok" else None
    if setup["status"] != "ok":
        fig["prove"] = {"status": "not reached", "s": None, "peak_rss_mb": None}
        return fig
    prove = _capped(
        "prove",
        {
            "compiled": str(compiled),
            "data": str(CIFAR_SAMPLE),
            "pk": str(pk),
            "srs": str(srs.path),
            "settings": str(work / "settings.json"),
            "vk": str(vk),
            "out_dir": str(work),
            "check": True,
        },
        cap_s,
        cap_mb,
    )
    fig["prove"] = {k: v for k, v in prove.items() if k != "value"}
    if prove["status"] == "ok":
        fig["proof_bytes"] = prove["value"]["proof_bytes"]
        fig["prove"]["prove_s"] = prove["value"]["prove_s"]
    pk.unlink(missing_ok=True)  # gigabytes
    return fig


def run_sliced_model(work: Path, cache: Path, max_logrows: int) -> dict[str, Any]:
    bundle_cache = work / "cache"
    bundle_cache.mkdir()
    (bundle_cache / "srs").symlink_to((cache / "srs").resolve(), target_is_directory=True)
    opts = api.BuildOptions(budget=Budget(max_logrows=max_logrows), cache_dir=bundle_cache)
    t0 = time.perf_counter()
    bundle = api.build_bundle(CIFAR, CIFAR_SAMPLE, work / "cifar-bundle", opts)
    build_s = time.perf_counter() - t0
    inputs = read_input_file(CIFAR_SAMPLE, api.get_model_inputs(bundle))
    t0 = time.perf_counter()
    report = api.prove_chain(bundle, inputs, EzklProver(bundle_cache))
    prove_wall_s = time.perf_counter() - t0
    proven = [r for r in report.slices if r["proven"]]
    whole = run_whole(load_model(CIFAR), inputs)
    name = next(iter(report.outputs))
    got = np.asarray(report.outputs[name]["data"])
    want = np.asarray(whole[name]).ravel()
    return {
        "slices": len(bundle.slices),
        "logrows_max": max((s["logrows"] for s in opts.stats), default=None),
        "rows_total": sum(s["rows"] for s in opts.stats),
        "build_s": build_s,
        "setup_s_total": sum(s["setup_s"] for s in opts.stats),
        "setup_peak_rss_mb_max": max((s["setup_peak_rss_mb"] for s in opts.stats), default=0),
        "prove_s_total": sum(r["prove_s"] for r in proven),
        "prove_wall_s": prove_wall_s,
        "prove_peak_rss_mb_max": max((r["peak_rss_mb"] for r in proven), default=0),
        "pk_bytes_total": sum(s["pk_bytes"] for s in opts.stats),
        "pk_bytes_max": max((s["pk_bytes"] for s in opts.stats), default=0),
        "proof_bytes_total": sum(r["proof_bytes"] for r in proven),
        "proven_fraction": report.proven_fraction,
        "chain_verified": report.chain_verified,
        "output_max_abs_diff": float(np.max(np.abs(got - want))),
        "argmax_equal": bool(np.argmax(got) == np.argmax(want)),
        "per_slice": [
            # build figures (setup) win over the prove row's, whose setup was cached
            {**next(r for r in report.slices if r["index"] == s["index"]), **s}
            for s in opts.stats
        ],
    }


def run_digits_agreement(work: Path, cache: Path, limit: int | None) -> dict[str, Any]:
    opts = api.BuildOptions(budget=Budget(max_logrows=15), cache_dir=cache)
    bundle = api.build_bundle(DIGITS, DIGITS_SAMPLE, work / "digits-bundle", opts)
    with np.load(DIGITS_HELDOUT) as held:
        xs, ys = held["x"][:limit], held["y"][:limit]
    name = bundle.manifest["model"]["inputs"][0]["name"]
    feeds = [{name: np.asarray(x, dtype=np.float32).reshape(1, 1, 8, 8)} for x in xs]
    model = load_model(DIGITS)
    floats = np.array([np.argmax(next(iter(run_whole(model, f).values()))) for f in feeds])
    t0 = time.perf_counter()
    quant = np.array(
        [np.argmax(next(iter(o.values()))) for o in api.witness_chain_many(bundle, feeds)]
    )
    return {
        "samples": len(xs),
        "slices": len(bundle.slices),
        "argmax_agreement": float(np.mean(quant == floats)),
        "float_accuracy": float(np.mean(floats == ys)),
        "quantised_accuracy": float(np.mean(quant == ys)),
        "quantised_chain_s": time.perf_counter() - t0,
    }


def _mb(b: float | None) -> str:
    return "-" if b is None else f"{b / 1e6:,.0f} MB" if b >= 1e6 else f"{b / 1e3:,.0f} KB"


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f} s"


def print_table(fig: dict[str, Any]) -> None:
    w, s = fig.get("whole"), fig["sliced"]

    def step(name: str) -> str:
        if not w or name not in w:
            return "skipped"
        x = w[name]
        tail = "" if x["status"] == "ok" else f" ({x['status']})"
        return f"{_s(x['s'])}, {x['peak_rss_mb'] or 0:,.0f} MB{tail}"

    rows = [
        ("circuits", "1", f"{s['slices']}"),
        ("logrows (max)", str(w.get("logrows", "-")) if w else "-", str(s["logrows_max"])),
        ("rows (total)", f"{w['rows']:,}" if w and "rows" in w else "-", f"{s['rows_total']:,}"),
        (
            "setup: time, peak RSS",
            step("setup"),
            f"{_s(s['setup_s_total'])} total, {s['setup_peak_rss_mb_max']:,.0f} MB max",
        ),
        (
            "prove: time, peak RSS",
            step("prove"),
            f"{_s(s['prove_s_total'])} total, {s['prove_peak_rss_mb_max']:,.0f} MB max",
        ),
        (
            "proving key",
            _mb(w.get("pk_bytes")) if w else "-",
            f"{_mb(s['pk_bytes_total'])} total, {_mb(s['pk_bytes_max'])} max",
        ),
        ("proof", _mb(w.get("proof_bytes")) if w else "-", f"{_mb(s['proof_bytes_total'])} total"),
        ("chain verified", "-", f"{s['chain_verified']} (proven {s['proven_fraction']:.0%})"),
        (
            "output vs float",
            "-",
            f"max |diff| {s['output_max_abs_diff']:.3f}, argmax "
            f"{'equal' if s['argmax_equal'] else 'DIFFERENT'}",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    cw = max(len(r[1]) for r in rows)
    print(f"{'cifar_lenet':<{width}}  {'whole model':<{cw}}  sliced")
    for name, a, b in rows:
        print(f"{name:<{width}}  {a:<{cw}}  {b}")
    if fig.get("whole_from"):
        print(f"(whole-model column from an earlier run: {fig['whole_from']})")
    d = fig.get("digits")
    if d:
        print(
            f"digits held-out ({d['samples']}): quantised sliced chain vs float argmax agreement "
            f"{d['argmax_agreement']:.1%}; accuracy float {d['float_accuracy']:.1%}, "
            f"quantised {d['quantised_accuracy']:.1%}"
        )


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.slicing",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", type=Path, default=None, metavar="PATH")
    p.add_argument("--max-logrows", type=int, default=15)
    p.add_argument("--whole-cap-s", type=float, default=480.0)
    p.add_argument("--whole-cap-mb", type=float, default=12288.0)
    p.add_argument("--skip-whole", action="store_true")
    p.add_argument(
        "--whole-from",
        type=Path,
        default=None,
        metavar="JSON",
        help="take the whole-model figures from an earlier run's --json (the whole-model part "
        "needs ~12 GB: run it once)",
    )
    p.add_argument("--digits-samples", type=int, default=None, help="default: all held-out")
    p.add_argument("--cache-dir", type=Path, default=None, help="SRS cache (kept between runs)")
    args = p.parse_args()
    cache = get_cache_dir(args.cache_dir)
    with tempfile.TemporaryDirectory(prefix="bench-slicing-") as tmp:
        work = Path(tmp)
        (work / "digits").mkdir()
        (work / "sliced").mkdir()
        fig: dict[str, Any] = {"max_logrows": args.max_logrows}
        fig["digits"] = run_digits_agreement(work / "digits", cache, args.digits_samples)
        shutil.rmtree(work / "digits")
        fig["sliced"] = run_sliced_model(work / "sliced", cache, args.max_logrows)
        shutil.rmtree(work / "sliced")
        if args.whole_from is not None:
            fig["whole"] = json.loads(args.whole_from.read_text())["whole"]
            fig["whole_from"] = str(args.whole_from)
        elif not args.skip_whole:
            (work / "whole").mkdir()
            fig["whole"] = run_whole_model(
                work / "whole", cache, args.whole_cap_s, args.whole_cap_mb
            )
    w, s = fig.get("whole") or {}, fig["sliced"]
    reached = [
        x["peak_rss_mb"]
        for x in (w.get(k) for k in ("build", "setup", "prove"))
        if x and x.get("peak_rss_mb")
    ]
    fig.update(
        whole_peak_rss_mb=max(reached, default=None),
        whole_prove_s=(w.get("prove") or {}).get("s"),
        whole_prove_status=(w.get("prove") or {}).get("status", "skipped"),
        whole_setup_s=(w.get("setup") or {}).get("s"),
        whole_setup_status=(w.get("setup") or {}).get("status", "skipped"),
        slice_peak_rss_mb_max=max(s["prove_peak_rss_mb_max"], s["setup_peak_rss_mb_max"]),
        sliced_prove_s_total=s["prove_s_total"],
        sliced_setup_s_total=s["setup_s_total"],
        digits_argmax_agreement=fig["digits"]["argmax_agreement"],
    )
    print_table(fig)
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2) + "\n")


if __name__ == "__main__":
    main()
