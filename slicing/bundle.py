"""Bundles: building, the manifest, atomic writing, loading with hash checks, the proving-key cache.

`write_bundle` builds one: every slice is calibrated on the activations that really reach it (the
chained onnxruntime run of the sample input), compiled and set up in worker processes; a slice EZKL
cannot build falls back to onnxruntime (unproven). A bundle is a folder: `manifest.json` and
`slices/NNN/` holding `model.onnx` and, when the slice is provable, `settings.json`,
`model.compiled` and `vk.key`. The manifest names every file with its sha256; the bundle id is the
sha256 of the canonical manifest JSON (sorted keys, no spaces), so the id commits to every byte. A
bundle is written into a temporary sibling folder and renamed at the end, so nothing half-written
ever carries the final name. Proving keys are never shipped: `get_proving_key` derives them with
EZKL `setup` (deterministic) into a cache addressed by (compiled circuit, SRS) hashes and checks the
derived vk against the manifest before use.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slicing.errors import BundleError, WorkerError
from slicing.progress import NullProgress, ProgressSink
from slicing.srs import compute_file_sha256, get_srs
from slicing.types import Budget, SlicedModel, SliceSpec, TensorInfo
from slicing.worker import WorkerResult, run_job

BUNDLE_FORMAT = "dsperse-bundle/1"
MANIFEST_NAME = "manifest.json"
MANIFEST_BYTES_MAX = 8 << 20
SETUP_TIMEOUT_S = 1800.0
CIRCUIT_FILES = ("settings.json", "model.compiled", "vk.key")


@dataclass(frozen=True, slots=True)
class ScalePolicy:
    """One fixed scale for every slice (so boundaries link) and the range-check table size."""

    scale: int = 7
    decomp_base: int = 16384  # EZKL's default: the planner's cost model is calibrated on it
    decomp_legs: int = 2

    def as_dict(self) -> dict[str, int]:
        return {
            "scale": self.scale,
            "decomp_base": self.decomp_base,
            "decomp_legs": self.decomp_legs,
        }


@dataclass(frozen=True)
class Bundle:
    """A loaded, hash-checked bundle."""

    root: Path
    manifest: dict[str, Any]
    bundle_id: str

    @property
    def slices(self) -> list[dict[str, Any]]:
        return list(self.manifest["slices"])

    def get_path(self, index: int, name: str) -> Path:
        return self.root / self.manifest["slices"][index]["dir"] / name

    def is_proven(self, index: int) -> bool:
        return bool(self.manifest["slices"][index]["proven"])

    def get_srs_sha256(self, logrows: int) -> str:
        return str(self.manifest["srs"][str(logrows)]["sha256"])


def compute_bundle_id(manifest: dict[str, Any]) -> str:
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def create_staging_dir(out_dir: Path) -> Path:
    """A fresh temporary folder next to `out_dir` (same file system: the rename is atomic)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise BundleError(f"output exists and is not an empty folder: {out_dir}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))


def commit_bundle(staging: Path, out_dir: Path, manifest: dict[str, Any]) -> str:
    """Hash the slice files into the manifest, write it, rename staging -> out_dir; the id."""
    for entry in manifest["slices"]:
        folder = staging / entry["dir"]
        entry["files"] = {
            p.name: compute_file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file()
        }
        if "vk.key" in entry["files"]:
            entry["vk_sha256"] = entry["files"]["vk.key"]
    (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    if out_dir.exists():
        out_dir.rmdir()  # checked empty by create_staging_dir
    os.replace(staging, out_dir)
    return compute_bundle_id(manifest)


def _require(cond: bool, root: Path, message: str) -> None:
    if not cond:
        raise BundleError(f"bundle {root}: {message}")


def load_bundle(root: Path, expected_id: str | None = None) -> Bundle:
    """Read and check a bundle: manifest shape, every listed file present with its sha256."""
    root = Path(root)
    path = root / MANIFEST_NAME
    _require(root.is_dir(), root, "not a folder")
    _require(path.is_file(), root, f"missing {MANIFEST_NAME}")
    _require(path.stat().st_size <= MANIFEST_BYTES_MAX, root, "manifest too large")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        detail = str(exc).splitlines()[0][:120]
        raise BundleError(f"bundle {root}: manifest is not JSON ({detail})") from None
    _require(isinstance(manifest, dict), root, "manifest is not an object")
    _require(manifest.get("format") == BUNDLE_FORMAT, root, f"format is not {BUNDLE_FORMAT}")
    for key in ("slices", "model", "policy", "srs", "ezkl_version"):
        _require(key in manifest, root, f"manifest lacks {key!r}")
    bundle_id = compute_bundle_id(manifest)
    if expected_id is not None and bundle_id != expected_id:
        raise BundleError(
            f"bundle {root}: manifest hash {bundle_id[:16]}… != expected {expected_id}"
        )
    for i, entry in enumerate(manifest["slices"]):
        _require(entry.get("index") == i, root, f"slice {i} out of order")
        folder = root / entry["dir"]
        _require(folder.resolve().is_relative_to(root.resolve()), root, f"slice {i}: bad dir")
        for name, digest in entry["files"].items():
            file = folder / name
            _require(file.is_file(), root, f"missing file {entry['dir']}/{name}")
            _require(
                compute_file_sha256(file) == digest, root, f"{entry['dir']}/{name}: sha256 mismatch"
            )
        if entry["proven"]:
            missing = [n for n in CIRCUIT_FILES if n not in entry["files"]]
            _require(not missing, root, f"slice {i} is provable but lacks {missing}")
    return Bundle(root=root, manifest=manifest, bundle_id=bundle_id)


def get_pk_key(compiled_sha256: str, srs_sha256: str) -> str:
    return hashlib.sha256(f"{compiled_sha256}:{srs_sha256}".encode()).hexdigest()


def derive_keys(
    compiled: Path, srs: Path, srs_sha256: str, cache_dir: Path
) -> tuple[Path, Path, WorkerResult | None]:
    """Run `setup` into the content-addressed pk cache once; (pk, vk, the setup job or None)."""
    key = get_pk_key(compute_file_sha256(compiled), srs_sha256)
    folder = cache_dir / "pk" / key
    pk, vk = folder / "pk.key", folder / "vk.key"
    if pk.is_file() and vk.is_file():
        os.utime(folder)  # mark as recently used for prune_pk_cache
        return pk, vk, None
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=folder.parent))
    try:
        job = run_job(
            "setup",
            {
                "compiled": str(compiled),
                "srs": str(srs),
                "vk_out": str(staging / "vk.key"),
                "pk_out": str(staging / "pk.key"),
            },
            timeout_s=SETUP_TIMEOUT_S,
        )
        if (
            folder.exists()
        ):  # another process derived it meanwhile: same bytes (setup is deterministic)
            shutil.rmtree(staging)
        else:
            os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return pk, vk, job


def prune_pk_cache(cache_dir: Path, bytes_max: int) -> list[str]:
    """Delete the least recently used proving keys until the cache holds at most `bytes_max`.

    Keys are cheap to re-derive (setup is deterministic) and large (138 MB at logrows 15, GBs
    above), so the cache is bounded by size; returns the keys removed."""
    root = Path(cache_dir) / "pk"
    if not root.is_dir():
        return []
    entries = []
    for folder in root.iterdir():
        if folder.is_dir() and not folder.name.startswith("."):
            size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
            entries.append((folder.stat().st_mtime, folder.name, size, folder))
    entries.sort()
    total = sum(e[2] for e in entries)
    removed = []
    for _, name, size, folder in entries:
        if total <= bytes_max:
            break
        shutil.rmtree(folder)
        total -= size
        removed.append(name)
    return removed


def get_proving_key(
    bundle: Bundle, index: int, srs: Path, cache_dir: Path
) -> tuple[Path, WorkerResult | None]:
    """Slice `index`'s proving key, derived locally and checked against the manifest vk hash."""
    entry = bundle.manifest["slices"][index]
    if not entry["proven"]:
        raise BundleError(
            f"bundle {bundle.root}: slice {index} is not provable ({entry['fallback']})"
        )
    srs_sha = bundle.get_srs_sha256(entry["logrows"])
    pk, vk, job = derive_keys(bundle.get_path(index, "model.compiled"), srs, srs_sha, cache_dir)
    if compute_file_sha256(vk) != entry["vk_sha256"]:
        raise BundleError(
            f"bundle {bundle.root}: slice {index}: derived vk does not match the manifest vk hash "
            "(different SRS or EZKL version?)"
        )
    return pk, job


# ---- building ----------------------------------------------------------------------------------

LOGROWS_DEFAULT_MAX = 20  # calibration cap when the budget sets none
BUILD_TIMEOUT_S = 900.0


def compute_max_logrows(budget: Budget) -> int:
    """The largest logrows a slice may calibrate to under `budget` (the planner's rule)."""
    from slicing.plan import compute_logrows_max

    limit = compute_logrows_max(budget)
    return LOGROWS_DEFAULT_MAX if limit is None else limit


@dataclass
class BuildOptions:
    budget: Budget = field(default_factory=Budget)
    policy: ScalePolicy = field(default_factory=ScalePolicy)
    cache_dir: Path = Path(".")
    srs_file: Path | None = None
    circuits: bool = True
    exact_cost: bool = False
    # Filled by the build: per-slice calibrate/compile/setup figures (not part of the manifest,
    # which holds only what identifies the bundle).
    stats: list[dict[str, Any]] = field(default_factory=list)


def _tensor_entry(t: TensorInfo, scale: int | None) -> dict[str, Any]:
    return {
        "name": t.name,
        "shape": list(t.shape),
        "elements": int(np.prod(t.shape)),
        "scale": scale,
    }


def _build_circuit(
    spec: SliceSpec, folder: Path, acts: Mapping[str, np.ndarray], opts: BuildOptions
) -> dict[str, Any]:
    """Calibrate + compile one slice in a worker; its summary, or {"fallback": reason}."""
    data = folder.parent / f"calib-{spec.index}.json"
    data.write_text(
        json.dumps({"input_data": [np.asarray(acts[t.name]).ravel().tolist() for t in spec.inputs]})
    )
    args = {
        "model": str(folder / "model.onnx"),
        "calibration_data": str(data),
        "out_dir": str(folder),
        "policy": opts.policy.as_dict(),
        "max_logrows": compute_max_logrows(opts.budget),
    }
    try:
        summary: dict[str, Any] = run_job("build_circuit", args, timeout_s=BUILD_TIMEOUT_S).value
    except WorkerError as exc:
        return {"fallback": f"EZKL cannot build this slice: {exc}"}
    finally:
        data.unlink()
    scales = set(summary["input_scales"]) | set(summary["output_scales"])
    if scales != {opts.policy.scale}:
        return {"fallback": f"scales {sorted(scales)} differ from the bundle scale"}
    return summary


def _build_stats(
    index: int, summary: dict[str, Any], pk: Path, vk: Path, job: WorkerResult | None
) -> dict[str, Any]:
    """Figures of one slice's build (for benchmarks and logs; never in the manifest)."""
    return {
        "index": index,
        "logrows": int(summary["logrows"]),
        "rows": int(summary["rows"]),
        "calibrate_s": summary["calibrate_s"],
        "compile_s": summary["compile_s"],
        "setup_s": job.value["setup_s"] if job else 0.0,
        "setup_peak_rss_mb": job.peak_rss_mb if job else 0.0,
        "pk_bytes": pk.stat().st_size,
        "vk_bytes": vk.stat().st_size,
    }


def _drop_circuit(folder: Path) -> None:
    for name in ("settings.json", "model.compiled", "vk.key"):
        (folder / name).unlink(missing_ok=True)


def write_bundle(
    sliced: SlicedModel,
    inputs: Mapping[str, np.ndarray],
    source: dict[str, str],
    out_dir: Path,
    opts: BuildOptions,
    progress: ProgressSink | None = None,
) -> Bundle:
    """Calibrate every slice on the chained activations of `inputs`, compile and set it up (a slice
    EZKL cannot build falls back to onnxruntime); write the bundle atomically and load it back."""
    from slicing.runner import run_chain

    progress = progress or NullProgress()
    staging = create_staging_dir(Path(out_dir))
    try:
        acts = {**inputs, **run_chain(sliced, dict(inputs))} if opts.circuits else {}
        entries, srs = _write_slices(sliced, staging, acts, opts, progress)
        scale = opts.policy.scale
        manifest = {
            "format": BUNDLE_FORMAT,
            "ezkl_version": _ezkl_version(),
            "model": {
                **source,
                "inputs": [_tensor_entry(t, scale) for t in sliced.model_inputs],
                "outputs": [_tensor_entry(t, scale) for t in sliced.model_outputs],
            },
            "budget": {
                "max_logrows": opts.budget.max_logrows,
                "max_memory_mb": opts.budget.max_memory_mb,
            },
            "policy": {
                **opts.policy.as_dict(),
                "calibration_target": "resources",
                "visibility": {"input": "public", "output": "public", "param": "fixed"},
            },
            "circuits": opts.circuits,
            "srs": srs,
            "slices": entries,
        }
        commit_bundle(staging, Path(out_dir), manifest)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return load_bundle(Path(out_dir))


def _ezkl_version() -> str:
    from importlib.metadata import version

    return version("ezkl")


def _write_slices(
    sliced: SlicedModel,
    staging: Path,
    acts: Mapping[str, np.ndarray],
    opts: BuildOptions,
    progress: ProgressSink,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    srs_used: dict[str, Any] = {}
    progress.start(len(sliced.slices) * (2 if opts.circuits else 1), "slice")
    for spec in sliced.slices:
        folder = staging / "slices" / f"{spec.index:03d}"
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(spec.model.SerializeToString())
        entry: dict[str, Any] = {
            "index": spec.index,
            "dir": f"slices/{spec.index:03d}",
            "note": spec.note,
            "proven": False,
            "fallback": "no circuits",
        }
        scale: int | None = None
        if opts.circuits:
            progress.step(f"slice {spec.index}: calibrate + compile")
            summary = _build_circuit(spec, folder, acts, opts)
            progress.advance()
            progress.step(f"slice {spec.index}: setup")
            if "fallback" in summary:
                _drop_circuit(folder)
                entry["fallback"] = summary["fallback"]
                progress.note(
                    f"slice {spec.index} falls back to onnxruntime: {summary['fallback']}"
                )
            else:
                lr = int(summary["logrows"])
                srs = get_srs(lr, opts.cache_dir, opts.srs_file)
                srs_used[str(lr)] = {"sha256": srs.sha256, "source": srs.source}
                pk, vk, job = derive_keys(
                    folder / "model.compiled", srs.path, srs.sha256, opts.cache_dir
                )
                (folder / "vk.key").write_bytes(vk.read_bytes())
                opts.stats.append(_build_stats(spec.index, summary, pk, vk, job))
                scale = opts.policy.scale
                entry.update(proven=True, fallback="", logrows=lr, rows=int(summary["rows"]))
        progress.advance()
        entry["inputs"] = [_tensor_entry(t, scale) for t in spec.inputs]
        entry["outputs"] = [_tensor_entry(t, scale) for t in spec.outputs]
        entries.append(entry)
    return entries, srs_used
