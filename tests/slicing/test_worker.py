"""slicing.worker: jobs run in spawned processes with caps, errors come back as one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from slicing.errors import WorkerCapExceeded, WorkerError
from slicing.worker import run_job

POLICY = {"scale": 7, "decomp_base": 16384, "decomp_legs": 2}


def test_job_returns_value_time_and_peak_rss(tmp_path: Path) -> None:
    result = run_job("gen_srs", {"srs_path": str(tmp_path / "srs"), "logrows": 10}, timeout_s=120)
    assert (tmp_path / "srs").stat().st_size > 0
    assert result.value["srs_s"] >= 0
    assert result.wall_s >= result.value["srs_s"]
    assert result.peak_rss_mb > 5  # a Python interpreter with ezkl loaded


def test_peak_rss_is_the_childs_own_not_its_large_parents(tmp_path: Path) -> None:
    # Linux keeps the pre-exec high-water mark across exec, so ru_maxrss of a child spawned from
    # a big parent reports the parent's size. The worker must report its own peak instead.
    ballast = bytearray(1500 * 1024 * 1024)
    ballast[::4096] = b"\x01" * len(ballast[::4096])  # touch every page: resident
    result = run_job("gen_srs", {"srs_path": str(tmp_path / "srs"), "logrows": 10}, timeout_s=120)
    del ballast
    assert 5 < result.peak_rss_mb < 1000, result.peak_rss_mb


def test_job_error_is_one_line_worker_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    result = run_job(
        "cost_many",
        {"models": [str(bad)], "policy": POLICY, "work_dir": str(tmp_path)},
        timeout_s=60,
    )
    assert "error" in result.value[0]  # cost_many reports per model, the job itself succeeds
    with pytest.raises(WorkerError, match=r"^build_circuit: ") as info:
        run_job(
            "build_circuit",
            {
                "model": str(bad),
                "calibration_data": str(bad),
                "out_dir": str(tmp_path),
                "policy": POLICY,
                "max_logrows": 15,
            },
            timeout_s=60,
        )
    assert "\n" not in str(info.value)


def test_unknown_operation_is_rejected() -> None:
    with pytest.raises(WorkerError, match="KeyError"):
        run_job("no_such_op", {}, timeout_s=30)


def test_time_cap_kills_the_worker(tmp_path: Path) -> None:
    # gen_srs at logrows 20 takes minutes here: the cap must stop it long before.
    with pytest.raises(WorkerCapExceeded) as info:
        run_job("gen_srs", {"srs_path": str(tmp_path / "s"), "logrows": 20}, timeout_s=1.0)
    assert info.value.kind == "time"
    assert 1.0 <= info.value.elapsed_s < 30
    assert not (tmp_path / "s").exists() or (tmp_path / "s").stat().st_size < 1 << 27


def test_memory_cap_kills_the_worker(tmp_path: Path) -> None:
    with pytest.raises(WorkerCapExceeded) as info:
        run_job(
            "gen_srs",
            {"srs_path": str(tmp_path / "s"), "logrows": 20},
            timeout_s=300,
            max_rss_mb=60,
        )
    assert info.value.kind == "memory"
    assert info.value.peak_rss_mb > 60


def test_parent_never_loads_ezkl() -> None:
    # EZKL breaks after fork and holds the GIL: the API runs it in children, never in the caller.
    code = (
        "import sys, onnx; from slicing import api; from slicing.graph import load_model; "
        "from slicing.types import Budget; "
        "m = load_model(sys.argv[1]); api.EzklCostOracle()(m); "
        "api.plan(sys.argv[1], Budget(15), exact_cost=True); "
        "print('ezkl' in sys.modules)"
    )
    digits = Path(__file__).resolve().parents[2] / "slicing" / "models" / "digits_cnn.onnx"
    out = subprocess.run(
        [sys.executable, "-c", code, str(digits)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip() == "False"
