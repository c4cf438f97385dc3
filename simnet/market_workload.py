"""The simnet's proving workload, played through the market like any model owner would.

The model owner slices the shipped model with the `dsperse-node slice` command (its own code
path, into the requester node's cache so that node can serve the SRS), then submits jobs to the
requester node's control API (`POST /jobs`). The nodes do the rest: announce, bid, award, fetch
the bundle and SRS over the network, prove with real EZKL, check, link, pay. The supervisor only
watches (`GET /job`) — it proves nothing and writes no replica.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.errors import NodeError
from simnet.procs import NodeProcess

MODELS_DIR = Path(__file__).resolve().parent.parent / "slicing" / "models"
MODELS = {
    "digits": ("digits_cnn.onnx", "digits_sample.json"),
    "cifar": ("cifar_lenet.onnx", "cifar_sample.json"),
}
SLICE_TIMEOUT_S = 3600.0
POLL_S = 0.5


@dataclass
class JobOutcome:
    job_id: str
    requester: str
    state: str = "submitted"
    reason: str = ""
    latency_s: float = 0.0
    paid: int = 0
    chain: str = ""
    provers: list[str] = field(default_factory=list)
    rounds_max: int = 0
    slices: list[dict[str, Any]] = field(default_factory=list)


def build_bundle(model: str, out: Path, cache_dir: Path, max_logrows: int) -> tuple[bool, str]:
    """`dsperse-node slice` (the model owner's tool); reuses a bundle already built there."""
    if (out / "manifest.json").exists():
        return True, "reused"
    model_file, sample = MODELS[model]
    argv = [
        sys.executable, "-m", "simnet", "slice", str(MODELS_DIR / model_file),
        "--input", str(MODELS_DIR / sample), "--out", str(out),
        "--max-logrows", str(max_logrows), "--cache-dir", str(cache_dir), "--quiet",
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=SLICE_TIMEOUT_S)
    if proc.returncode != 0:
        return False, (proc.stderr.strip().splitlines() or ["slice failed"])[-1]
    return True, proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else "built"


def submit(
    requester: NodeProcess, bundle: Path, model: str, out: Path, deadline_s: float
) -> JobOutcome | str:
    body = {
        "bundle": str(bundle.resolve()),
        "input": str((MODELS_DIR / MODELS[model][1]).resolve()),
        "out": str(out.resolve()),
        "deadline_s": deadline_s,
    }
    status, doc = requester.call("POST", "/jobs", body, timeout_s=300.0)
    if status != 200:
        return f"{requester.name}: POST /jobs answered {status}: {doc}"
    return JobOutcome(doc["job_id"], requester.name)


def follow(
    jobs: list[tuple[NodeProcess, JobOutcome]],
    timeout_s: float,
    idle: Callable[[float], None],
    on_doc: Callable[[JobOutcome, dict[str, Any]], None],
) -> None:
    """Poll every job until it is done or failed, or the timeout passes."""
    t0 = time.monotonic()
    open_jobs = list(jobs)
    while open_jobs and time.monotonic() - t0 < timeout_s:
        still = []
        for node, job in open_jobs:
            try:
                status, doc = node.call("GET", f"/job?id={job.job_id}")
            except NodeError:  # a node restarting: ask again next round
                still.append((node, job))
                continue
            if status == 200:
                on_doc(job, doc)
                _update(job, doc)
            if job.state not in ("done", "failed"):
                still.append((node, job))
        open_jobs = still
        if open_jobs:
            idle(POLL_S)


def _update(job: JobOutcome, doc: dict[str, Any]) -> None:
    job.state, job.reason = doc["state"], doc.get("reason", "")
    job.latency_s = float(doc.get("elapsed_s", 0.0))
    job.paid, job.chain = int(doc.get("paid", 0)), doc.get("chain", "")
    job.slices = doc.get("slices", [])
    job.provers = [s["prover"] for s in job.slices]
    job.rounds_max = max((int(s.get("round", 0)) for s in job.slices), default=0)
