"""`node.results` (RESULT_DIR and its offline verifier) and `dsperse-node verify`, on a REAL
result: the shipped digits CNN sliced into two logrows-15 slices and proven with EZKL here, once
per module (the two slices proven side by side: slice 1's input is slice 0's witness, which is
what slice 0's proof attests). Each tampering test edits a copy of that result.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from node.cli import main
from node.proof_verifier import get_data_cache_dir
from node.results import (
    INPUT_NAME,
    MANIFEST_NAME,
    JobResult,
    ResultError,
    SliceResult,
    compute_slice_result,
    read_result_manifest,
    verify_result,
    write_result,
)
from slicing import api
from slicing.bundle import MANIFEST_NAME as BUNDLE_MANIFEST
from slicing.bundle import Bundle, load_bundle
from slicing.prover import EzklProver, ProofArtifact
from tests.slicing.conftest import DIGITS, DIGITS_BUDGET, DIGITS_SAMPLE, write_input

JOB_ID = "ab" * 32
PROVERS = ("12D3KooWProverZero", "12D3KooWProverOne")


@dataclass(frozen=True)
class Proven:
    data_dir: Path  # its cache holds the SRS the bundle names
    bundle: Bundle
    result: JobResult
    result_dir: Path


def _prove_digits(bundle: Bundle, cache: Path) -> list[ProofArtifact]:
    inputs = api.read_inputs(bundle, DIGITS_SAMPLE)
    values = {n: np.asarray(v).ravel().tolist() for n, v in inputs.items()}
    feeds = []
    for entry in bundle.slices:
        feeds.append({t["name"]: values[t["name"]] for t in entry["inputs"]})
        outs = api.witness_slice(bundle, entry["index"], feeds[-1])["rescaled_outputs"]
        values.update(zip([t["name"] for t in entry["outputs"]], outs, strict=True))
    prover = EzklProver(cache)
    with ThreadPoolExecutor(len(feeds)) as pool:  # each proof runs in its own process
        arts = list(pool.map(lambda i: prover.prove_slice(bundle, i, feeds[i]), range(len(feeds))))
    assert all(a.verified for a in arts)
    return arts


@pytest.fixture(scope="module")
def proven(tmp_path_factory: pytest.TempPathFactory) -> Proven:
    data_dir = tmp_path_factory.mktemp("node")
    cache = get_data_cache_dir(data_dir)
    opts = api.BuildOptions(budget=DIGITS_BUDGET, cache_dir=cache)
    bundle = api.build_bundle(DIGITS, DIGITS_SAMPLE, tmp_path_factory.mktemp("b") / "digits", opts)
    assert [e["proven"] for e in bundle.slices] == [True, True]
    arts = _prove_digits(bundle, cache)
    slices = tuple(
        compute_slice_result(
            bundle, i, a.proof, prover=PROVERS[i], price=10 + i, round=1, award=f"{i:02x}" * 32
        )
        for i, a in enumerate(arts)
    )
    # The claimed outputs: what the last proof attests, rescaled.
    (meta,) = bundle.manifest["model"]["outputs"]
    outputs = {meta["name"]: {"shape": meta["shape"], "data": list(arts[-1].rescaled_outputs[0])}}
    result = JobResult(
        job_id=JOB_ID,
        bundle_id=bundle.bundle_id,
        input_commitment=api.compute_job_commitment(bundle, api.read_inputs(bundle, DIGITS_SAMPLE)),
        outputs=outputs,
        slices=slices,
        total_paid=21,
        input_json=DIGITS_SAMPLE.read_bytes(),
    )
    result_dir = tmp_path_factory.mktemp("results") / "job"
    write_result(result_dir, result)
    return Proven(data_dir, bundle, result, result_dir)


@pytest.fixture
def copy(proven: Proven, tmp_path: Path) -> Path:
    """A copy of the real result to tamper with."""
    return Path(shutil.copytree(proven.result_dir, tmp_path / "result"))


def check(proven: Proven, result_dir: Path, bundle_dir: Path | None = None) -> list[str]:
    bundle_dir = bundle_dir or proven.bundle.root
    return verify_result(bundle_dir, result_dir, get_data_cache_dir(proven.data_dir))


def edit_manifest(result_dir: Path, edit: Callable[[dict[str, object]], None]) -> None:
    doc = read_result_manifest(result_dir)
    edit(doc)
    (result_dir / MANIFEST_NAME).write_text(json.dumps(doc))


def flip_proof_byte(path: Path) -> bytes:
    """One byte of the Halo2 proof flipped (instances untouched, so the statement still fits)."""
    doc = json.loads(path.read_bytes())
    doc["proof"][100] ^= 1
    path.write_text(json.dumps(doc))
    return path.read_bytes()


# ---------------------------------------------------------------------------- the real result


@pytest.mark.slow
def test_a_real_result_verifies(proven: Proven, capsys: pytest.CaptureFixture[str]) -> None:
    assert check(proven, proven.result_dir) == []
    doc = read_result_manifest(proven.result_dir)
    assert doc["format"] == "dsperse-result/1" and doc["chain"] == "ok"
    assert [s["proof_file"] for s in doc["slices"]] == ["proofs/000.proof", "proofs/001.proof"]
    assert (proven.result_dir / INPUT_NAME).read_bytes() == DIGITS_SAMPLE.read_bytes()
    argv = ["verify", str(proven.bundle.root), str(proven.result_dir)]
    assert main([*argv, "--data-dir", str(proven.data_dir)]) == 0  # SRS from <data dir>/cache
    out, err = capsys.readouterr()
    assert err == "" and out.startswith(f"result ok: job {JOB_ID}")
    cache = get_data_cache_dir(proven.data_dir)
    assert main([*argv, "--cache-dir", str(cache), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"ok": True, "failures": []}


@pytest.mark.slow
def test_an_edited_proof_byte_fails(
    proven: Proven, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proof = flip_proof_byte(copy / "proofs" / "000.proof")
    failures = check(proven, copy)
    assert failures[0].startswith("slice 0: proof hash mismatch: proofs/000.proof has sha256")
    assert failures[1:] == [
        "slice 0: the proof does not verify against the bundle's verifying key (EZKL)"
    ]
    argv = ["verify", str(proven.bundle.root), str(copy), "--data-dir", str(proven.data_dir)]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [f"dsperse-node verify: {f}" for f in failures]
    # With the manifest's hash updated to the edited file, EZKL's verdict alone remains.
    digest = SliceResult(0, "", proof, "", "", "", 0, 0, "").proof_hash
    edit_manifest(copy, lambda d: d["slices"][0].update(proof_hash=digest))  # type: ignore[index]
    assert check(proven, copy) == failures[1:]


@pytest.mark.slow
def test_an_edited_output_value_fails(proven: Proven, copy: Path) -> None:
    def edit(doc: dict[str, object]) -> None:
        doc["outputs"]["logits"]["data"][3] += 1.0  # type: ignore[index]

    edit_manifest(copy, edit)
    assert check(proven, copy) == [
        "outputs: the claimed outputs are not the proven ones (output 'logits')"
    ]


@pytest.mark.slow
def test_swapped_proofs_fail(proven: Proven, copy: Path) -> None:
    a, b = copy / "proofs" / "000.proof", copy / "proofs" / "001.proof"
    a_bytes = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(a_bytes)
    failures = check(proven, copy)
    assert failures[-1] == (
        "chain: proofs swapped between slices (slice 0: 138 instances, its circuit has 192)"
    )
    assert any(
        f.startswith("slice 0: proofs/000.proof is not a proof of this slice") for f in failures
    )
    assert any(f.startswith("slice 1: proof hash mismatch") for f in failures)


@pytest.mark.slow
def test_a_wrong_input_fails(proven: Proven, copy: Path) -> None:
    values = json.loads(DIGITS_SAMPLE.read_text())["input_data"][0]
    values[5] += 0.5
    write_input(copy / INPUT_NAME, values)
    failures = check(proven, copy)
    assert len(failures) == 2 and all(f.startswith("input: ") for f in failures)
    assert failures[0].startswith("input: input.json commits to ")
    assert failures[1] == (
        "input: the proven model inputs are not input.json's (model inputs != job commitment)"
    )
    write_input(copy / INPUT_NAME, [1.0, 2.0])
    assert check(proven, copy)[0].startswith("input: input.json: ")


@pytest.mark.slow
def test_a_missing_proof_file_fails(proven: Proven, copy: Path) -> None:
    (copy / "proofs" / "001.proof").unlink()
    assert check(proven, copy) == ["slice 1: proof file proofs/001.proof: 001.proof is missing"]


@pytest.mark.slow
def test_a_wrong_bundle_fails(proven: Proven, tmp_path: Path) -> None:
    other = Path(shutil.copytree(proven.bundle.root, tmp_path / "other"))
    manifest = json.loads((other / BUNDLE_MANIFEST).read_text())
    manifest["model"]["file"] = "another.onnx"  # another manifest: another bundle id
    (other / BUNDLE_MANIFEST).write_text(json.dumps(manifest))
    other_id = load_bundle(other).bundle_id
    assert check(proven, proven.result_dir, other) == [
        f"bundle: the result is for bundle {proven.bundle.bundle_id}, {other} holds bundle "
        f"{other_id}"
    ]
    failures = check(proven, proven.result_dir, tmp_path)
    assert len(failures) == 1 and failures[0].startswith("bundle: ")


@pytest.mark.slow
def test_a_missing_srs_is_the_failure(proven: Proven, tmp_path: Path) -> None:
    failures = verify_result(proven.bundle.root, proven.result_dir, tmp_path / "empty-cache")
    assert len(failures) == 1 and failures[0].startswith("srs: no SRS for logrows 15 at ")
    assert not (tmp_path / "empty-cache").exists()  # never generated


@pytest.mark.slow
def test_manifest_schema_failures(proven: Proven, copy: Path) -> None:
    (copy / MANIFEST_NAME).write_text("[1, 2")
    assert check(proven, copy) == ["manifest: manifest.json is not JSON (JSONDecodeError)"]
    (copy / MANIFEST_NAME).write_text(json.dumps({"format": "dsperse-result/0"}))
    assert check(proven, copy) == ["manifest: format is 'dsperse-result/0', not 'dsperse-result/1'"]
    shutil.copy(proven.result_dir / MANIFEST_NAME, copy / MANIFEST_NAME)

    def edit(doc: dict[str, object]) -> None:
        doc["slices"][1]["proof_file"] = "../../etc/passwd"  # type: ignore[index]
        doc["total_paid"] = -1

    edit_manifest(copy, edit)
    assert check(proven, copy) == [
        "manifest: total_paid is not a non-negative integer",
        "manifest: slices[1].proof_file is not proofs/<index as 3 digits>.proof",
    ]
    edit_manifest(copy, lambda d: d.update(slices=d["slices"][:1], total_paid=1))  # type: ignore[index]
    assert check(proven, copy) == ["manifest: no entry for provable slice 1"]


# ---------------------------------------------------------------------------- writing


def _fake_result(job_id: str = JOB_ID) -> JobResult:
    s = SliceResult(0, PROVERS[0], b'{"instances": []}', "01" * 32, "02" * 32, "03" * 32, 5, 1,
                    "04" * 32)  # fmt: skip
    return JobResult(job_id, "cd" * 32, "01" * 32, {"y": {"shape": [1], "data": [0.5]}}, (s,),
                     5, b'{"input_data": [[1.0]]}')  # fmt: skip


def test_write_result_layout_and_refusals(tmp_path: Path) -> None:
    out = tmp_path / "r"
    write_result(out, _fake_result())
    assert sorted(p.name for p in out.rglob("*")) == [
        "000.proof", "input.json", "manifest.json", "proofs"
    ]  # fmt: skip
    doc = read_result_manifest(out)
    assert doc["slices"][0]["proof_hash"] == _fake_result().slices[0].proof_hash
    assert doc["outputs"] == {"y": {"shape": [1], "data": [0.5]}} and doc["total_paid"] == 5
    write_result(out, _fake_result())  # a previous result of the same job is replaced
    with pytest.raises(ResultError, match="is not a result of job"):
        write_result(out, _fake_result("ef" * 32))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ResultError, match="is not empty and is not a result of job"):
        write_result(tmp_path / "other", _fake_result())
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    write_result(tmp_path / "empty", _fake_result())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "other", "r"]  # no leftovers
