"""`dsperse-node slice | prove-local | run-local`: formats others script against, one-line
errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from node.cli import main
from slicing.bundle import MANIFEST_NAME, Bundle
from slicing.runner import run_whole

from .conftest import DIGITS, DIGITS_SAMPLE, MLP_INPUT, write_input


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], match: str) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err


@pytest.fixture
def plan_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "plan"
    argv = [
        "slice",
        str(DIGITS),
        "--input",
        str(DIGITS_SAMPLE),
        "--out",
        str(out),
        "--no-circuits",
        "--max-logrows",
        "15",
        "--quiet",
    ]
    assert main(argv) == 0
    assert "bundle " in capsys.readouterr().out
    return out


def test_run_local_writes_outputs_equal_to_whole_model(
    plan_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.json"
    assert (
        main(["run-local", str(plan_bundle), "--input", str(DIGITS_SAMPLE), "--output", str(out)])
        == 0
    )
    doc = json.loads(out.read_text())
    assert list(doc) == ["outputs"] and list(doc["outputs"]) == ["logits"]
    logits = doc["outputs"]["logits"]
    assert logits["shape"] == [1, 10] and len(logits["data"]) == 10
    sample = json.loads(DIGITS_SAMPLE.read_text())["input_data"][0]
    feed = {"input": np.asarray(sample, dtype=np.float32).reshape(1, 1, 8, 8)}
    whole = run_whole(onnx.load(str(DIGITS)), feed)["logits"].ravel()
    assert np.max(np.abs(np.asarray(logits["data"]) - whole)) <= 1e-4


def test_bad_model_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "text.onnx"
    text.write_text("hello, I am not a model")
    base = ["--input", str(DIGITS_SAMPLE), "--no-circuits", "--quiet"]
    _fails(["slice", str(text), "--out", str(tmp_path / "a"), *base], capsys, "error:")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(DIGITS.read_bytes()[: DIGITS.stat().st_size // 2])
    _fails(["slice", str(truncated), "--out", str(tmp_path / "b"), *base], capsys, "error:")
    _fails(
        ["slice", str(tmp_path / "none.onnx"), "--out", str(tmp_path / "c"), *base],
        capsys,
        "model not found",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text.onnx", "truncated.onnx"]


def test_bad_input_files(
    plan_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o.json"
    short = write_input(tmp_path / "short.json", [0.5] * 63)
    _fails(
        ["run-local", str(plan_bundle), "--input", str(short), "--output", str(out)],
        capsys,
        "error:",
    )
    words = tmp_path / "words.json"
    words.write_text(json.dumps({"input_data": [["a"] * 64]}))
    _fails(
        ["run-local", str(plan_bundle), "--input", str(words), "--output", str(out)],
        capsys,
        "error:",
    )
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{input_data: nope")
    _fails(
        [
            "slice",
            str(DIGITS),
            "--input",
            str(garbage),
            "--out",
            str(tmp_path / "b"),
            "--no-circuits",
            "--quiet",
        ],
        capsys,
        "not JSON",
    )
    assert not out.exists() and not (tmp_path / "b").exists()


def test_bad_bundles(plan_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.json"
    run = ["--input", str(DIGITS_SAMPLE), "--output", str(out)]
    manifest = json.loads((plan_bundle / MANIFEST_NAME).read_text())
    (plan_bundle / manifest["slices"][0]["dir"] / "model.onnx").unlink()
    _fails(["run-local", str(plan_bundle), *run], capsys, "missing file slices/000/model.onnx")
    _fails(["run-local", str(tmp_path / "nope"), *run], capsys, "not a folder")
    _fails(["run-local", str(plan_bundle), *run, "--bundle-id", "ab" * 32], capsys, "manifest hash")
    _fails(
        [
            "prove-local",
            str(plan_bundle),
            "--input",
            str(DIGITS_SAMPLE),
            "--quiet",
            "--bundle-id",
            "ab" * 32,
        ],
        capsys,
        "manifest hash",
    )
    assert not out.exists()


@pytest.mark.slow
def test_prove_local_report(
    mlp_bundle: Bundle, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The digits chain is proven through the API (test_prove_digits); here a tiny bundle.
    sample = write_input(tmp_path / "x.json", MLP_INPUT)
    report = tmp_path / "r" / "report.json"
    argv = [
        "prove-local",
        str(mlp_bundle.root),
        "--input",
        str(sample),
        "--json",
        str(report),
        "--cache-dir",
        str(cache_dir),
        "--quiet",
        "--bundle-id",
        mlp_bundle.bundle_id,
    ]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "chain_verified True" in printed.out and "peak RSS MB" in printed.out
    assert "NOT secure" in printed.err
    doc = json.loads(report.read_text())
    assert doc["proven_fraction"] == 1.0 and doc["chain_verified"] is True
    assert doc["bundle_id"] == mlp_bundle.bundle_id
    keys = {"logrows", "rows", "witness_s", "prove_s", "verify_s", "peak_rss_mb", "proof_bytes"}
    assert all(keys <= set(row) for row in doc["slices"])


def test_prove_local_refuses_a_plan_only_bundle(
    plan_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(plan_bundle, copy)
    _fails(
        ["prove-local", str(copy), "--input", str(DIGITS_SAMPLE), "--quiet"], capsys, "no circuits"
    )
