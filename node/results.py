"""The result of a proven job on disk (RESULT_DIR) and its offline verifier.

A requester node writes one folder per finished job, and anyone holding the job's bundle (and the
SRS it names) can check it without a network, a ledger or the node:

    RESULT_DIR/manifest.json    {"format": "dsperse-result/1", "job_id", "bundle_id",
                                 "input_commitment", "outputs": {name: {"shape", "data"}},
                                 "slices": [{"index", "prover", "proof_file", "proof_hash",
                                 "input_commitment", "output_commitment", "instances_hash",
                                 "price", "round", "award"}, ...], "total_paid", "chain"}
    RESULT_DIR/input.json       the job input, EZKL's {"input_data": [[...], ...]}
    RESULT_DIR/proofs/NNN.proof the raw EZKL proof JSON of slice NNN

`write_result` writes it atomically (a staging folder renamed into place). `verify_result`
re-derives everything the manifest claims: each proof's hash and statement commitments
(`node.proof_verifier.compute_statement_commitments`), each proof with real EZKL against the
bundle's vk and the SRS the bundle names (looked up in the cache, never generated: a fresh dev SRS
would not be the bundle's), and the linkage of the whole chain, the job input and the claimed
outputs (`slicing.api.verify_proof_chain`). It answers one line per failure, each starting with
what failed (`manifest:`, `bundle:`, `slice N:`, `srs:`, `input:`, `outputs:`, `chain:`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.errors import NodeError
from node.proof_verifier import compute_statement_commitments
from slicing.api import compute_job_commitment, read_inputs, verify_proof_chain
from slicing.bundle import Bundle, load_bundle
from slicing.errors import BundleError, InputError, LinkageError, ProofError, WorkerError
from slicing.linkage import LinkReason
from slicing.prover import PROOF_BYTES_MAX, EzklVerifier, ProofArtifact, get_instances
from slicing.srs import compute_file_sha256

__all__ = [
    "INPUT_NAME",
    "MANIFEST_NAME",
    "PROOFS_DIR_NAME",
    "RESULT_FORMAT",
    "JobResult",
    "ResultError",
    "SliceResult",
    "compute_slice_result",
    "read_result_manifest",
    "verify_result",
    "write_result",
]

RESULT_FORMAT = "dsperse-result/1"
MANIFEST_NAME = "manifest.json"
INPUT_NAME = "input.json"
PROOFS_DIR_NAME = "proofs"
RESULT_MANIFEST_BYTES_MAX = 8 << 20
INPUT_BYTES_MAX = 16 << 20  # slicing.runner reads input files up to its own (smaller) bound
SLICES_MAX = 1 << 16
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PROOF_FILE = re.compile(r"proofs/[0-9]{3,5}\.proof")
_TOP_KEYS = frozenset(
    {
        "format",
        "job_id",
        "bundle_id",
        "input_commitment",
        "outputs",
        "slices",
        "total_paid",
        "chain",
    }
)
_COMMITMENT_KEYS = ("input_commitment", "output_commitment", "instances_hash")
_SLICE_KEYS = frozenset(
    {
        "index",
        "prover",
        "proof_file",
        "proof_hash",
        "input_commitment",
        "output_commitment",
        "instances_hash",
        "price",
        "round",
        "award",
    }
)


class ResultError(NodeError):
    """A result folder cannot be written, or is not a result folder at all."""


# ---------------------------------------------------------------------------- the result


@dataclass(frozen=True, slots=True)
class SliceResult:
    """One proven slice of a job: who proved it, for how much, and the proof itself."""

    index: int
    prover: str  # the prover's peer id
    proof: bytes  # raw EZKL proof JSON, written to `proof_file`
    input_commitment: str  # hex, node.proof_verifier.compute_statement_commitments
    output_commitment: str  # hex
    instances_hash: str  # hex
    price: int  # what the award paid, smallest unit
    round: int  # the award round that produced this proof
    award: str  # hex hash of the award entry

    @property
    def proof_file(self) -> str:
        return f"{PROOFS_DIR_NAME}/{self.index:03d}.proof"

    @property
    def proof_hash(self) -> str:
        return hashlib.sha256(self.proof).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "prover": self.prover,
            "proof_file": self.proof_file,
            "proof_hash": self.proof_hash,
            "input_commitment": self.input_commitment,
            "output_commitment": self.output_commitment,
            "instances_hash": self.instances_hash,
            "price": self.price,
            "round": self.round,
            "award": self.award,
        }


@dataclass(frozen=True, slots=True)
class JobResult:
    """A finished job: what `write_result` puts in a RESULT_DIR."""

    job_id: str  # hex
    bundle_id: str  # hex
    input_commitment: str  # hex, slicing.api.compute_job_commitment of the input
    outputs: Mapping[str, Mapping[str, Any]]  # {name: {"shape": [...], "data": [floats]}}
    slices: tuple[SliceResult, ...]  # one per provable slice, in index order
    total_paid: int
    input_json: bytes  # the job input file, EZKL's {"input_data": [...]}, written as input.json
    chain: str = "ok"  # the requester's verdict on the chain: "ok" or the reason

    def to_manifest(self) -> dict[str, Any]:
        return {
            "format": RESULT_FORMAT,
            "job_id": self.job_id,
            "bundle_id": self.bundle_id,
            "input_commitment": self.input_commitment,
            "outputs": {
                name: {"shape": [int(d) for d in o["shape"]], "data": [float(v) for v in o["data"]]}
                for name, o in self.outputs.items()
            },
            "slices": [s.to_json() for s in self.slices],
            "total_paid": self.total_paid,
            "chain": self.chain,
        }


def compute_slice_result(
    bundle: Bundle, index: int, proof: bytes, *, prover: str, price: int, round: int, award: str
) -> SliceResult:
    """The SliceResult of `proof` for slice `index`, its commitments derived from the proof
    (`ProofError` if it cannot be a proof of that slice)."""
    ic, oc, ih = compute_statement_commitments(bundle, index, proof)
    return SliceResult(index, prover, proof, ic.hex(), oc.hex(), ih.hex(), price, round, award)


# ---------------------------------------------------------------------------- writing


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_writable(out_dir: Path, job_id: str) -> bool:
    """Whether `out_dir` holds something to replace (a previous result of this job); raises if it
    holds anything else."""
    if not out_dir.exists() and not out_dir.is_symlink():
        return False
    if not out_dir.is_dir() or out_dir.is_symlink():
        raise ResultError(f"{out_dir} exists and is not a folder; choose another result dir")
    if not any(out_dir.iterdir()):
        return True
    try:
        previous = read_result_manifest(out_dir)
    except ResultError:
        previous = None
    if previous is None or previous.get("job_id") != job_id:
        raise ResultError(
            f"{out_dir} is not empty and is not a result of job {job_id}; "
            "choose another result dir or remove it"
        )
    return True


def write_result(out_dir: Path, result: JobResult) -> None:
    """Write `result` to `out_dir` atomically: built in a staging folder beside it, then renamed.

    An existing empty folder, or a previous result of the same job, is replaced; anything else
    already at `out_dir` is refused with ResultError (nothing is written)."""
    out_dir = Path(out_dir).absolute()
    indexes = [s.index for s in result.slices]
    if indexes != sorted(set(indexes)):
        raise ResultError(f"slices of job {result.job_id} are not in index order: {indexes}")
    replace = _check_writable(out_dir, result.job_id)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    try:
        (staging / PROOFS_DIR_NAME).mkdir()
        for s in result.slices:
            _write_synced(staging / s.proof_file, s.proof)
        _sync_dir(staging / PROOFS_DIR_NAME)
        _write_synced(staging / INPUT_NAME, result.input_json)
        manifest = json.dumps(result.to_manifest(), indent=1).encode()
        _write_synced(staging / MANIFEST_NAME, manifest)
        _sync_dir(staging)
        if replace:
            # Move the old folder aside first: rename cannot replace a non-empty folder.
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            out_dir.replace(old / "result")
            staging.replace(out_dir)
            shutil.rmtree(old)
        else:
            staging.replace(out_dir)
        _sync_dir(out_dir.parent)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


# ---------------------------------------------------------------------------- reading


def _read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (ResultError otherwise)."""
    if not path.is_file():
        raise ResultError(f"{path.name} is missing")
    with path.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ResultError(f"{path.name} is larger than {limit} bytes")
    return data


def read_result_manifest(result_dir: Path) -> dict[str, Any]:
    """The parsed manifest of a result folder (shape unchecked; ResultError if unreadable)."""
    data = _read_bounded(Path(result_dir) / MANIFEST_NAME, RESULT_MANIFEST_BYTES_MAX)
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultError(f"{MANIFEST_NAME} is not JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise ResultError(f"{MANIFEST_NAME} is not a JSON object")
    return doc


def _is_int(value: object, low: int = 0) -> bool:
    return type(value) is int and value >= low


def _is_hex(value: object) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def _check_slice_entry(k: int, entry: object) -> list[str]:
    where = f"manifest: slices[{k}]"
    if not isinstance(entry, dict):
        return [f"{where} is not an object"]
    failures = []
    if set(entry) != _SLICE_KEYS:
        missing, extra = sorted(_SLICE_KEYS - set(entry)), sorted(set(entry) - _SLICE_KEYS)
        failures.append(f"{where}: missing keys {missing}, unknown keys {extra}")
    for key in ("index", "price", "round"):
        if key in entry and not _is_int(entry[key]):
            failures.append(f"{where}.{key} is not a non-negative integer")
    for key in ("proof_hash", "input_commitment", "output_commitment", "instances_hash", "award"):
        if key in entry and not _is_hex(entry[key]):
            failures.append(f"{where}.{key} is not 64 lowercase hex digits")
    if "prover" in entry and not (isinstance(entry["prover"], str) and entry["prover"]):
        failures.append(f"{where}.prover is not a peer id")
    index, proof_file = entry.get("index"), entry.get("proof_file")
    # Only the canonical name: a manifest must not make a verifier read outside the folder.
    if "proof_file" in entry and not (
        isinstance(proof_file, str)
        and _PROOF_FILE.fullmatch(proof_file)
        and _is_int(index)
        and proof_file == f"{PROOFS_DIR_NAME}/{index:03d}.proof"
    ):
        failures.append(f"{where}.proof_file is not {PROOFS_DIR_NAME}/<index as 3 digits>.proof")
    return failures


def _check_manifest(doc: dict[str, Any]) -> list[str]:
    """Schema failures of a result manifest (empty if it has the dsperse-result/1 shape)."""
    if doc.get("format") != RESULT_FORMAT:
        return [f"manifest: format is {doc.get('format')!r}, not {RESULT_FORMAT!r}"]
    failures = []
    if set(doc) != _TOP_KEYS:
        missing, extra = sorted(_TOP_KEYS - set(doc)), sorted(set(doc) - _TOP_KEYS)
        failures.append(f"manifest: missing keys {missing}, unknown keys {extra}")
    for key in ("job_id", "bundle_id", "input_commitment"):
        if key in doc and not _is_hex(doc[key]):
            failures.append(f"manifest: {key} is not 64 lowercase hex digits")
    if "total_paid" in doc and not _is_int(doc["total_paid"]):
        failures.append("manifest: total_paid is not a non-negative integer")
    if "chain" in doc and doc["chain"] != "ok":
        failures.append(f"manifest: the requester's chain verdict is {doc['chain']!r}, not 'ok'")
    outputs = doc.get("outputs")
    if "outputs" in doc and not (
        isinstance(outputs, dict)
        and all(
            isinstance(o, dict)
            and isinstance(o.get("shape"), list)
            and isinstance(o.get("data"), list)
            for o in outputs.values()
        )
    ):
        failures.append("manifest: outputs is not {name: {shape: [...], data: [...]}}")
    slices = doc.get("slices")
    if "slices" in doc and not (isinstance(slices, list) and len(slices) <= SLICES_MAX):
        failures.append(f"manifest: slices is not a list of at most {SLICES_MAX} entries")
    elif isinstance(slices, list):
        for k, entry in enumerate(slices):
            failures.extend(_check_slice_entry(k, entry))
    return failures


# ---------------------------------------------------------------------------- verifying


@dataclass
class _CachedSrsVerifier(EzklVerifier):
    """EZKL verification with the SRS of each logrows found in the cache, never generated (a
    missing one answers False; the caller reports it). Verdicts are kept per (slice, proof)."""

    srs_paths: dict[int, Path] = field(default_factory=dict)
    verdicts: dict[tuple[int, str], bool] = field(default_factory=dict)

    def verify_as(self, bundle: Bundle, index: int, proof: bytes) -> bool:
        srs = self.srs_paths.get(int(bundle.manifest["slices"][index]["logrows"]))
        if srs is None:
            return False
        key = (index, hashlib.sha256(proof).hexdigest())
        if key not in self.verdicts:
            one = EzklVerifier(self.bundles, self.cache_dir, srs)
            self.verdicts[key] = one.verify_as(bundle, index, proof)
        return self.verdicts[key]


def _find_srs(bundle: Bundle, cache_dir: Path, failures: list[str]) -> dict[int, Path]:
    """{logrows: SRS file} for every logrows of the bundle's provable slices that is in the cache
    (slicing.srs's layout: `<cache>/srs/kzg<logrows>.srs`) and is the SRS the bundle names."""
    found: dict[int, Path] = {}
    logrows_all = sorted({int(e["logrows"]) for e in bundle.slices if e["proven"]})
    for logrows in logrows_all:
        path = Path(cache_dir) / "srs" / f"kzg{logrows}.srs"
        try:
            expected = bundle.get_srs_sha256(logrows)
        except (KeyError, TypeError):
            failures.append(f"bundle: names no SRS for logrows {logrows}")
            continue
        if not path.is_file():
            failures.append(
                f"srs: no SRS for logrows {logrows} at {path}; it is never generated "
                "here: copy in the SRS the bundle names"
            )
        elif compute_file_sha256(path) != expected:
            failures.append(f"srs: {path} is not the SRS the bundle names for logrows {logrows}")
        else:
            found[logrows] = path
    return found


def _check_slice_set(bundle: Bundle, entries: list[dict[str, Any]]) -> list[str]:
    """One manifest entry per provable slice of the bundle, and no other."""
    provable = [e["index"] for e in bundle.slices if e["proven"]]
    indexes = [e["index"] for e in entries]
    failures = [
        f"manifest: slice {i} is listed {indexes.count(i)} times"
        for i in sorted(set(indexes))
        if indexes.count(i) > 1
    ]
    failures += [
        f"manifest: slice {i} is not a provable slice of the bundle"
        for i in sorted(set(indexes) - set(provable))
    ]
    failures += [f"manifest: no entry for provable slice {i}" for i in provable if i not in indexes]
    return failures


def _check_proof(
    bundle: Bundle, result_dir: Path, entry: dict[str, Any], failures: list[str]
) -> tuple[bytes | None, bool]:
    """The proof bytes of a manifest entry (None if the file is not there), and whether they can
    be a proof of its slice at all; failures for its hash and for commitments not the proof's."""
    i, name = entry["index"], entry["proof_file"]
    try:
        proof = _read_bounded(result_dir / name, PROOF_BYTES_MAX)
    except ResultError as exc:
        failures.append(f"slice {i}: proof file {name}: {exc}")
        return None, False
    digest = hashlib.sha256(proof).hexdigest()
    if digest != entry["proof_hash"]:
        failures.append(
            f"slice {i}: proof hash mismatch: {name} has sha256 {digest}, the "
            f"manifest says {entry['proof_hash']}"
        )
    try:
        commitments = compute_statement_commitments(bundle, i, proof)
    except ProofError as exc:
        failures.append(f"slice {i}: {name} is not a proof of this slice: {exc}")
        return proof, False
    for key, value in zip(_COMMITMENT_KEYS, commitments, strict=True):
        if value.hex() != entry[key]:
            failures.append(f"slice {i}: the manifest's {key} is not the proof's ({value.hex()})")
    return proof, True


def _check_outputs(bundle: Bundle, outputs: dict[str, Any]) -> list[str]:
    """The claimed outputs are the model's outputs, with their shapes, as finite numbers."""
    wanted = {t["name"]: [int(d) for d in t["shape"]] for t in bundle.manifest["model"]["outputs"]}
    failures = []
    if set(outputs) != set(wanted):
        failures.append(f"outputs: named {sorted(outputs)}, the model's are {sorted(wanted)}")
    for name in sorted(set(outputs) & set(wanted)):
        shape, data = outputs[name]["shape"], outputs[name]["data"]
        if shape != wanted[name] or len(data) != math.prod(wanted[name]):
            failures.append(
                f"outputs: {name!r} has shape {shape} and {len(data)} values, the "
                f"model's is {wanted[name]}"
            )
        elif not all(type(v) in (int, float) and math.isfinite(v) for v in data):
            failures.append(f"outputs: {name!r} holds a value that is not a finite number")
    return failures


def _check_input(bundle: Bundle, result_dir: Path, claimed: str, failures: list[str]) -> str:
    """The commitment of input.json (the claimed one if input.json is unreadable)."""
    path = result_dir / INPUT_NAME
    try:
        _read_bounded(path, INPUT_BYTES_MAX)
        commitment = compute_job_commitment(bundle, read_inputs(bundle, path))
    except (ResultError, InputError) as exc:
        failures.append(f"input: {INPUT_NAME}: {exc}")
        return claimed
    if commitment != claimed:
        failures.append(f"input: {INPUT_NAME} commits to {commitment}, the manifest says {claimed}")
    return commitment


_CHAIN_LINES = {
    LinkReason.INVALID_PROOF: "chain: a proof does not verify",
    LinkReason.PROOF_SWAPPED: "chain: proofs swapped between slices",
    LinkReason.MISSING_PROOF: "chain: incomplete, a slice has no proof",
    LinkReason.WRONG_JOB_INPUT: "input: the proven model inputs are not input.json's",
    LinkReason.TAMPERED_BOUNDARY: "chain: a boundary tensor differs between its two slices",
    LinkReason.WRONG_RESULT: "outputs: the claimed outputs are not the proven ones",
}


def _check_chain(
    bundle: Bundle,
    proofs: dict[int, tuple[bytes, bool | None]],
    input_commitment: str,
    outputs: dict[str, Any] | None,
    verifier: _CachedSrsVerifier,
) -> str | None:
    """The failure line of the chain's linkage, input and outputs (slicing.api.verify_proof_chain),
    or None. A proof EZKL could not decide (no SRS: reported apart) counts as verified here, so
    the linkage of its instances is still checked."""
    artifacts = {}
    for i, (proof, verdict) in proofs.items():
        try:
            instances = get_instances(proof)
        except ProofError:
            continue
        verified = True if verdict is None else verdict
        artifacts[i] = ProofArtifact(bundle.bundle_id, i, proof, instances, (), verified)
    claimed = None if outputs is None else {n: o["data"] for n, o in outputs.items()}
    try:
        verify_proof_chain(bundle, artifacts, input_commitment, claimed, verifier)
    except LinkageError as exc:
        line = _CHAIN_LINES.get(LinkReason(exc.reason), f"chain: {exc.reason}")
        return f"{line} ({exc.detail})" if exc.detail else line
    except WorkerError as exc:
        return f"chain: EZKL failed to run: {exc}"
    return None


def verify_result(bundle_dir: Path, result_dir: Path, cache_dir: Path) -> list[str]:
    """Every way the result in `result_dir` fails to be a proven, linked result of the bundle in
    `bundle_dir` on its input.json, one line each (empty: it all holds). The SRS the bundle names
    is looked up in `cache_dir` (`<cache>/srs/kzg<logrows>.srs`) and never generated."""
    result_dir = Path(result_dir)
    try:
        bundle = load_bundle(Path(bundle_dir))
    except BundleError as exc:
        return [f"bundle: {exc}"]
    try:
        doc = read_result_manifest(result_dir)
    except ResultError as exc:
        return [f"manifest: {exc}"]
    failures = _check_manifest(doc)
    if failures:
        return failures
    if doc["bundle_id"] != bundle.bundle_id:
        # Everything else would be measured against the wrong circuits: stop here.
        return [
            f"bundle: the result is for bundle {doc['bundle_id']}, {bundle_dir} holds "
            f"bundle {bundle.bundle_id}"
        ]
    failures += _check_slice_set(bundle, doc["slices"])
    provable = {e["index"] for e in bundle.slices if e["proven"]}
    entries = {e["index"]: e for e in doc["slices"] if e["index"] in provable}
    verifier = _CachedSrsVerifier({bundle.bundle_id: bundle}, Path(cache_dir))
    verifier.srs_paths = _find_srs(bundle, Path(cache_dir), failures)
    proofs: dict[int, tuple[bytes, bool | None]] = {}
    for i in sorted(entries):
        proof, well_formed = _check_proof(bundle, result_dir, entries[i], failures)
        if proof is None:
            continue
        verdict: bool | None = None if well_formed else False
        if well_formed and int(bundle.slices[i]["logrows"]) in verifier.srs_paths:
            try:
                verdict = verifier.verify_as(bundle, i, proof)
            except WorkerError as exc:
                failures.append(f"slice {i}: EZKL verification failed to run: {exc}")
        if verdict is False and well_formed:
            failures.append(
                f"slice {i}: the proof does not verify against the bundle's verifying key (EZKL)"
            )
        proofs[i] = (proof, verdict)
    input_commitment = _check_input(bundle, result_dir, doc["input_commitment"], failures)
    output_failures = _check_outputs(bundle, doc["outputs"])
    failures += output_failures
    chain = _check_chain(
        bundle, proofs, input_commitment, None if output_failures else doc["outputs"], verifier
    )
    # A proof already reported missing or invalid needs no second line from the chain.
    redundant = chain is not None and chain.startswith(
        (_CHAIN_LINES[LinkReason.INVALID_PROOF], _CHAIN_LINES[LinkReason.MISSING_PROOF])
    )
    redundant = redundant and any(f.startswith(("slice ", "manifest: ")) for f in failures)
    if chain is not None and not redundant:
        failures.append(chain)
    return failures
