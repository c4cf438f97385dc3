"""`node.prover_pool.ProverPool` with real EZKL on the two-slice digits bundle (logrows 15), and the
cancel switch of `slicing.worker.run_job` it relies on.

The two slices are proven once per module, in parallel on two slots, from the requester's
witness values (`slicing.api.witness_chain_values`); the other tests reuse those proofs and make
at most one more (the tampered one). Worker processes are found as this process's children
running `slicing.worker` in /proc, and "gone" means /proc has no entry: killed and reaped.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import trio

from node.prover_pool import (
    BUILTIN_PROVE_S,
    PROVE_TIMES_FILE,
    ProveResult,
    ProverPool,
    ProverPoolError,
    SrsMismatchError,
    SrsMissingError,
    tamper_proof,
)
from slicing import api
from slicing.bundle import Bundle
from slicing.linkage import split_instances
from slicing.prover import get_instances
from slicing.worker import WorkerCancelled, cancel_on, run_job
from tests.slicing.conftest import cache_dir, digits_bundle, digits_inputs  # noqa: F401


def _worker_pids() -> set[int]:
    """Live children of this process running `python -m slicing.worker`."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"slicing.worker" in cmdline:
            pids.add(int(entry.name))
    return pids


def _wait_for_worker(timeout_s: float = 60.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = _worker_pids()
        if pids:
            return min(pids)
        time.sleep(0.02)
    raise AssertionError("no worker process started")


# ---- slicing.worker: cancel -------------------------------------------------------------------


def test_cancelled_job_ends_promptly_and_its_worker_is_gone(tmp_path: Path) -> None:
    # gen_srs at logrows 20 runs for minutes here; a cancel must end it within a fraction of that.
    cancel = threading.Event()
    raised: list[BaseException] = []

    def job() -> None:
        try:
            args = {"srs_path": str(tmp_path / "s"), "logrows": 20}
            run_job("gen_srs", args, timeout_s=600, cancel=cancel)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=job)
    thread.start()
    pid = _wait_for_worker()
    t0 = time.monotonic()
    cancel.set()
    thread.join(timeout=10)
    assert not thread.is_alive() and time.monotonic() - t0 < 2.0
    assert len(raised) == 1 and isinstance(raised[0], WorkerCancelled), raised
    assert "cancelled" in str(raised[0])
    assert not Path(f"/proc/{pid}").exists()


def test_cancel_on_covers_the_threads_jobs_and_spawns_none_once_set(tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    with cancel_on(cancel), pytest.raises(WorkerCancelled, match="before it started"):
        run_job("gen_srs", {"srs_path": str(tmp_path / "s"), "logrows": 10}, timeout_s=60)
    assert not (tmp_path / "s").exists()
    # Outside the block jobs run as before.
    run_job("gen_srs", {"srs_path": str(tmp_path / "s"), "logrows": 10}, timeout_s=60)
    assert (tmp_path / "s").stat().st_size > 0


# ---- the pool ---------------------------------------------------------------------------------


def test_tamper_proof_keeps_the_statement() -> None:
    doc = {"instances": [["01" * 32, "02" * 32]], "proof": [1, 2, 3, 4], "hex_proof": "0x01020304"}
    tampered = json.loads(tamper_proof(json.dumps(doc).encode()))
    assert tampered["instances"] == doc["instances"]
    assert tampered["proof"] == [1, 2, 2, 4] and tampered["hex_proof"] == "0x01020204"


def test_expected_s_falls_back_to_the_builtin_table(tmp_path: Path) -> None:
    pool = ProverPool(1, tmp_path)
    assert pool.expected_s(15) == BUILTIN_PROVE_S[15]
    assert pool.expected_s(17) == pytest.approx(4 * BUILTIN_PROVE_S[15])
    assert pool.expected_s(14) == pytest.approx(BUILTIN_PROVE_S[15] / 2)
    (tmp_path / PROVE_TIMES_FILE).write_text("{not json")
    assert ProverPool(1, tmp_path).expected_s(15) == BUILTIN_PROVE_S[15]  # ignored, with a warning


@dataclass(frozen=True)
class Proven:
    bundle: Bundle
    values: dict[str, list[float]]
    results: dict[int, ProveResult]
    max_busy: int
    max_tick_gap_s: float
    statistics: dict[str, object]
    expected_s: float  # the pool's estimate for logrows 15 after the two proofs
    restarted_expected_s: float  # ... and a new pool's on the same cache dir
    saved: dict[str, object]  # prove_times.json right then


@pytest.fixture(scope="module")
def proven(
    digits_bundle: Bundle,  # noqa: F811
    digits_inputs: dict[str, np.ndarray],  # noqa: F811
    cache_dir: Path,  # noqa: F811
) -> Proven:
    """Both digits slices proven at once on a 2-slot pool, while the event loop keeps ticking."""
    (cache_dir / PROVE_TIMES_FILE).unlink(missing_ok=True)
    values = api.witness_chain_values(digits_bundle, digits_inputs)
    pool = ProverPool(2, cache_dir)
    results: dict[int, ProveResult] = {}
    busy: list[int] = []
    gaps: list[float] = []

    async def prove(i: int) -> None:
        inputs = api.get_slice_inputs(digits_bundle, i, values)
        results[i] = await pool.prove(digits_bundle.root, i, inputs)

    async def tick(done: trio.Event) -> None:
        last = trio.current_time()
        while not done.is_set():
            await trio.sleep(0.01)
            now = trio.current_time()
            gaps.append(now - last)
            busy.append(pool.busy)
            last = now

    async def main() -> None:
        done = trio.Event()
        async with trio.open_nursery() as outer:
            outer.start_soon(tick, done)
            async with trio.open_nursery() as nursery:
                for i in range(len(digits_bundle.slices)):
                    nursery.start_soon(prove, i)
            done.set()

    trio.run(main)
    return Proven(
        digits_bundle,
        values,
        results,
        max(busy),
        max(gaps),
        pool.statistics(),
        pool.expected_s(15),
        ProverPool(1, cache_dir).expected_s(15),
        json.loads((cache_dir / PROVE_TIMES_FILE).read_text()),
    )


@pytest.mark.slow
async def test_both_slices_prove_in_parallel_and_verify(proven: Proven, cache_dir: Path) -> None:  # noqa: F811
    assert sorted(proven.results) == [0, 1]
    assert proven.max_busy == 2  # both proofs held a slot at once
    assert proven.max_tick_gap_s < 1.0  # the event loop never waited on EZKL
    for res in proven.results.values():
        assert res.logrows == 15
        assert res.instances == get_instances(res.proof)
        assert 0 < res.prove_s <= res.wall_s and res.peak_rss_mb > 100
    # Proven apart, the two proofs still link: slice 0's outputs are slice 1's inputs.
    layouts = api.get_layouts(proven.bundle)
    out0 = split_instances(layouts[0], proven.results[0].instances)
    in1 = split_instances(layouts[1], proven.results[1].instances)
    assert out0["out:p1"] == in1["in:p1"]
    stats = proven.statistics
    assert stats["proofs"] == {"ok": 2, "failed": 0, "cancelled": 0}
    hist = stats["prove_s_histogram"]["logrows"]["15"]  # type: ignore[index]
    assert hist["count"] == 2 and hist["le"][-1] == 2

    pool = ProverPool(2, cache_dir)
    async with trio.open_nursery() as nursery:
        verdicts: dict[int, bool] = {}

        async def verify(i: int) -> None:
            verdicts[i] = await pool.verify(proven.bundle.root, i, proven.results[i].proof)

        for i in proven.results:
            nursery.start_soon(verify, i)
    assert verdicts == {0: True, 1: True}
    # A proof checked against the other slice, or a slice that does not exist: invalid.
    assert not await pool.verify(proven.bundle.root, 1, proven.results[0].proof)
    assert not await pool.verify(proven.bundle.root, 7, proven.results[0].proof)
    assert pool.statistics()["verifies"] == {"valid": 2, "invalid": 2, "failed": 0, "cancelled": 0}


@pytest.mark.slow
async def test_tampered_proof_parses_but_fails_verification(
    proven: Proven,
    cache_dir: Path,  # noqa: F811
) -> None:
    pool = ProverPool(1, cache_dir)
    inputs = api.get_slice_inputs(proven.bundle, 1, proven.values)
    bad = await pool.prove(proven.bundle.root, 1, inputs, tamper=True)
    assert bad.instances == proven.results[1].instances  # the same statement ...
    assert json.loads(bad.proof)["proof"] != json.loads(proven.results[1].proof)["proof"]
    assert not await pool.verify(proven.bundle.root, 1, bad.proof)  # ... but no proof of it


@pytest.mark.slow
async def test_cancelling_a_proof_kills_its_worker_promptly(
    proven: Proven,
    cache_dir: Path,  # noqa: F811
) -> None:
    pool = ProverPool(1, cache_dir)
    inputs = api.get_slice_inputs(proven.bundle, 0, proven.values)
    assert not _worker_pids()
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.prove, proven.bundle.root, 0, inputs)
            pid = await trio.to_thread.run_sync(_wait_for_worker)
            assert pool.busy == 1 and pool.free_slots == 0
            t0 = time.monotonic()
            scope.cancel()
    assert time.monotonic() - t0 < 2.0
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped before prove re-raised
    assert not _worker_pids() and pool.busy == 0 and pool.free_slots == 1
    assert pool.statistics()["proofs"] == {"ok": 0, "failed": 0, "cancelled": 1}


@pytest.mark.slow
def test_expected_s_learns_from_measured_proofs_and_persists(
    proven: Proven, tmp_path: Path
) -> None:
    # The two proofs fed the EWMA of logrows 15 (each one's wall time without setup) ...
    first, second = sorted(r.wall_s - r.setup_s for r in proven.results.values())
    assert first - 1e-6 <= proven.expected_s <= second + 1e-6
    assert proven.expected_s != BUILTIN_PROVE_S[15]
    # ... which went to disk, so a restarted node keeps what it measured.
    assert proven.saved == {
        "version": 1,
        "logrows": {"15": {"ewma_s": pytest.approx(proven.expected_s), "samples": 2}},
    }
    assert proven.restarted_expected_s == pytest.approx(proven.expected_s)
    assert ProverPool(1, tmp_path).expected_s(16) == 2 * BUILTIN_PROVE_S[15]


@pytest.mark.slow
async def test_the_pool_never_makes_an_srs(proven: Proven, tmp_path: Path) -> None:
    proof = proven.results[0].proof
    root = proven.bundle.root
    pool = ProverPool(1, tmp_path, srs_dir=tmp_path / "srs")
    inputs = api.get_slice_inputs(proven.bundle, 0, proven.values)
    with pytest.raises(SrsMissingError, match="never generates"):
        await pool.prove(root, 0, inputs)
    with pytest.raises(SrsMissingError):
        await pool.verify(root, 0, proof)
    assert not (tmp_path / "srs").exists()
    (tmp_path / "srs").mkdir()
    (tmp_path / "srs" / "kzg15.srs").write_bytes(b"not the bundle's SRS")
    with pytest.raises(SrsMismatchError, match="not the one"):
        await pool.prove(root, 0, inputs)
    with pytest.raises(ProverPoolError, match="no slice 5"):
        await pool.prove(root, 5, inputs)
    assert pool.statistics()["proofs"] == {"ok": 0, "failed": 3, "cancelled": 0}
    with pytest.raises(ProverPoolError, match="no prover slots"):
        await ProverPool(0, tmp_path).prove(root, 0, inputs)
