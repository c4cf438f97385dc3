"""bundle: manifest and id, every file hash-checked on load, atomic writes, the proving-key
cache."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from slicing import api
from slicing import bundle as bundle_module
from slicing.bundle import (
    MANIFEST_NAME,
    Bundle,
    compute_bundle_id,
    derive_keys,
    get_proving_key,
    load_bundle,
    prune_pk_cache,
)
from slicing.errors import BundleError, InputError
from slicing.prover import EzklProver
from slicing.srs import compute_file_sha256, get_srs

from .conftest import (
    DIGITS,
    DIGITS_BUDGET,
    DIGITS_SAMPLE,
    MLP_INPUT,
    SMALL_POLICY,
    make_mlp_sliced,
    write_input,
)


def _copy(bundle: Bundle, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(bundle.root, dst)
    return dst


def test_no_circuits_bundle_plans_only(tmp_path: Path) -> None:
    opts = api.BuildOptions(budget=DIGITS_BUDGET, cache_dir=tmp_path / "cache", circuits=False)
    bundle = api.build_bundle(DIGITS, DIGITS_SAMPLE, tmp_path / "b", opts)
    assert len(bundle.slices) >= 2
    for entry in bundle.slices:
        assert set(entry["files"]) == {"model.onnx"}
        assert not entry["proven"]
    manifest = json.loads((tmp_path / "b" / MANIFEST_NAME).read_text())
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    assert bundle.bundle_id == hashlib.sha256(canonical).hexdigest()
    assert not (tmp_path / "cache").exists()  # no SRS, no keys: nothing EZKL ran


@pytest.mark.slow
def test_manifest_records_what_proving_needs(digits_bundle: Bundle) -> None:
    m = digits_bundle.manifest
    assert m["ezkl_version"] == "23.0.5"
    assert m["policy"]["visibility"] == {"input": "public", "output": "public", "param": "fixed"}
    assert [e["index"] for e in m["slices"]] == list(range(len(m["slices"])))
    produced = {t["name"] for e in m["slices"] for t in e["outputs"]}
    for e in m["slices"]:
        assert e["proven"] and e["logrows"] <= DIGITS_BUDGET.max_logrows
        assert e["vk_sha256"] == e["files"]["vk.key"]
        assert str(e["logrows"]) in m["srs"]
        for t in e["inputs"]:  # every input is a model input or produced upstream
            assert t["name"] in produced or t["name"] == m["model"]["inputs"][0]["name"]
            assert t["scale"] == m["policy"]["scale"]


@pytest.mark.slow
def test_tampered_file_is_rejected(digits_bundle: Bundle, tmp_path: Path) -> None:
    root = _copy(digits_bundle, tmp_path)
    compiled = root / digits_bundle.slices[1]["dir"] / "model.compiled"
    data = bytearray(compiled.read_bytes())
    data[len(data) // 2] ^= 1
    compiled.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"slices/001/model.compiled: sha256 mismatch"):
        load_bundle(root)


@pytest.mark.slow
def test_missing_file_is_rejected(digits_bundle: Bundle, tmp_path: Path) -> None:
    root = _copy(digits_bundle, tmp_path)
    (root / digits_bundle.slices[0]["dir"] / "vk.key").unlink()
    with pytest.raises(BundleError, match=r"missing file slices/000/vk\.key"):
        load_bundle(root)
    (root / MANIFEST_NAME).unlink()
    with pytest.raises(BundleError, match=r"missing manifest\.json"):
        load_bundle(root)


@pytest.mark.slow
def test_manifest_hash_mismatch_is_rejected(digits_bundle: Bundle, tmp_path: Path) -> None:
    root = _copy(digits_bundle, tmp_path)
    assert load_bundle(root, digits_bundle.bundle_id).bundle_id == digits_bundle.bundle_id
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    manifest["policy"]["scale"] += 1
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="manifest hash"):
        load_bundle(root, digits_bundle.bundle_id)
    (root / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(BundleError, match="manifest is not JSON"):
        load_bundle(root)


def test_nothing_half_written_is_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opts = api.BuildOptions(budget=DIGITS_BUDGET, cache_dir=tmp_path / "cache", circuits=False)
    short = write_input(tmp_path / "short.json", [0.0] * 63)
    with pytest.raises(InputError):
        api.build_bundle(DIGITS, short, tmp_path / "out" / "b", opts)
    assert not (tmp_path / "out" / "b").exists()
    real = bundle_module._write_slices

    def fail_midway(*args: object, **kwargs: object) -> object:
        real(*args, **kwargs)  # slice files are written into staging, then the build fails
        raise BundleError("injected failure")

    monkeypatch.setattr(bundle_module, "_write_slices", fail_midway)
    with pytest.raises(BundleError, match="injected"):
        api.build_bundle(DIGITS, DIGITS_SAMPLE, tmp_path / "out" / "b", opts)
    assert list((tmp_path / "out").iterdir()) == []  # no bundle, no staging folder
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(BundleError, match="not an empty folder"):
        api.build_bundle(DIGITS, DIGITS_SAMPLE, tmp_path / "full", opts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "out", "short.json"]


@pytest.mark.slow
def test_proving_key_is_derived_deterministically_and_checked(
    mlp_bundle: Bundle, cache_dir: Path, tmp_path: Path
) -> None:
    # Any real bundle will do: a small one keeps the fresh setup sub-second.
    entry = mlp_bundle.slices[1]
    srs = get_srs(entry["logrows"], cache_dir)
    shared_pk, _ = get_proving_key(mlp_bundle, 1, srs.path, cache_dir)
    fresh_pk, fresh_vk, job = derive_keys(
        mlp_bundle.get_path(1, "model.compiled"), srs.path, srs.sha256, tmp_path / "fresh"
    )
    assert job is not None  # really derived again, not read from the shared cache
    assert compute_file_sha256(fresh_pk) == compute_file_sha256(shared_pk)
    assert compute_file_sha256(fresh_vk) == entry["vk_sha256"]
    # A manifest naming another vk hash refuses the derived key.
    bad = json.loads(json.dumps(mlp_bundle.manifest))
    bad["slices"][1]["vk_sha256"] = "0" * 64
    forged = replace(mlp_bundle, manifest=bad, bundle_id=compute_bundle_id(bad))
    with pytest.raises(BundleError, match="derived vk does not match the manifest vk hash"):
        get_proving_key(forged, 1, srs.path, cache_dir)


def test_srs_file_is_hashed_and_must_exist(tmp_path: Path) -> None:
    srs = tmp_path / "ceremony.srs"
    srs.write_bytes(b"\x01" * 100)
    info = get_srs(15, tmp_path, srs)
    assert info.source == "file" and info.sha256 == compute_file_sha256(srs)
    with pytest.raises(BundleError, match="SRS file not found"):
        get_srs(15, tmp_path, tmp_path / "missing.srs")


def test_pk_cache_is_pruned_least_recently_used_first(tmp_path: Path) -> None:
    root = tmp_path / "pk"
    for age, name in enumerate(["old", "mid", "new"]):
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "pk.key").write_bytes(b"k" * 1000)
        os.utime(folder, (1_000_000 + age, 1_000_000 + age))
    assert prune_pk_cache(tmp_path, 2500) == ["old"]
    assert prune_pk_cache(tmp_path, 2500) == []
    assert prune_pk_cache(tmp_path, 0) == ["mid", "new"]
    assert prune_pk_cache(tmp_path / "none", 0) == []


@pytest.mark.slow
def test_srs_file_is_recorded_and_enforced(
    mlp_bundle: Bundle, cache_dir: Path, tmp_path: Path
) -> None:
    logrows = mlp_bundle.slices[0]["logrows"]
    ceremony = tmp_path / "ceremony.srs"  # stands for a ceremony file given with --srs
    shutil.copyfile(get_srs(logrows, cache_dir).path, ceremony)
    sliced = make_mlp_sliced(with_unprovable=False)
    opts = api.BuildOptions(
        budget=sliced.budget, policy=SMALL_POLICY, cache_dir=tmp_path / "c", srs_file=ceremony
    )
    bundle = api.write_bundle(sliced, {"x": MLP_INPUT}, {"file": "mlp"}, tmp_path / "b", opts)
    assert bundle.manifest["srs"][str(logrows)]["source"] == "file"
    assert not (tmp_path / "c" / "srs").exists()  # nothing generated
    art = EzklProver(tmp_path / "c", srs_file=ceremony).prove_slice(bundle, 0, {"x": MLP_INPUT[0]})
    assert art.verified
    other = tmp_path / "other.srs"
    other.write_bytes(ceremony.read_bytes()[:-1] + b"\x00")
    with pytest.raises(BundleError, match="is not the one the bundle names"):
        EzklProver(tmp_path / "c", srs_file=other).prove_slice(bundle, 0, {"x": MLP_INPUT[0]})


@pytest.mark.slow
def test_rebuilding_gives_the_same_settings_and_verifying_keys(
    digits_bundle: Bundle, tmp_path: Path, cache_dir: Path
) -> None:
    # EZKL stamps settings with the clock and writes hash-ordered maps; the bundle canonicalises
    # them, so the same model, sample and budget give byte-identical settings and vk hashes.
    from node.cli import main

    out = tmp_path / "again"
    argv = ["slice", str(DIGITS), "--input", str(DIGITS_SAMPLE), "--out", str(out), "--quiet",
            "--max-logrows", str(DIGITS_BUDGET.max_logrows),
            "--cache-dir", str(cache_dir)]  # fmt: skip
    assert main(argv) == 0
    again = load_bundle(out)
    assert [e["vk_sha256"] for e in again.slices] == [e["vk_sha256"] for e in digits_bundle.slices]
    for entry in digits_bundle.slices:
        first = digits_bundle.get_path(entry["index"], "settings.json").read_bytes()
        second = again.get_path(entry["index"], "settings.json").read_bytes()
        assert first == second
        assert json.loads(first)["timestamp"] == 0
