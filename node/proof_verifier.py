"""Real proof verification for the ledger: `BundleProofVerifier` decides whether an EZKL proof
proves a ledger proof statement, using the bundle the statement names from the node's own folder.

It satisfies `ledger.interfaces.ProofVerifier` structurally (ledger/ never imports slicing/; this
module is the bridge). A node's bundles live at `<data dir>/bundles/<bundle id hex>/` and its SRS
and key cache at `<data dir>/cache`. `compute_statement_commitments` is the one definition of
what a statement's commitments are, given a proof: provers (the market) build statements with it
and verifiers check them with it. Verdicts follow the ledger's rule that "cannot check" is never
"invalid": a replica that lacks the bundle (or its SRS) answers None, never False.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from ledger.encoding import compute_proof_hash, pack
from ledger.interfaces import ProofStatementView
from slicing.api import get_layouts
from slicing.bundle import MANIFEST_NAME, Bundle, load_bundle
from slicing.errors import BundleError, ProofError, WorkerError
from slicing.linkage import FIELD_MODULUS, SliceLayout, compute_commitment, split_instances
from slicing.prover import EzklVerifier, get_instances
from slicing.srs import compute_file_sha256

__all__ = [
    "BUNDLES_DIR_NAME",
    "CACHE_DIR_NAME",
    "BundleProofVerifier",
    "EzklVerifyFn",
    "UndecidedVerifier",
    "VerifierStatistics",
    "compute_instances_hash",
    "compute_statement_commitments",
    "get_bundle_dir",
    "get_data_cache_dir",
    "verify_with_ezkl",
]

_log = logging.getLogger("node.proof_verifier")

BUNDLES_DIR_NAME = "bundles"
CACHE_DIR_NAME = "cache"
BUNDLE_ID_BYTES = 32  # a bundle id is the sha256 of its manifest
SLICE_INDEX_LIMIT = 1 << 32
BUNDLES_CACHED_MAX = 16  # loaded manifests (small); loading re-hashes every file of a bundle
VERDICTS_CACHED_MAX = 4096
# EZKL writes a field element as 32 bytes little-endian in lowercase hex, no prefix.
_FELT_HEX = re.compile(r"[0-9a-f]{64}")

# slicing's verify path for one slice: (bundle, slice index, proof, cache dir, SRS file) -> valid.
EzklVerifyFn = Callable[[Bundle, int, bytes, Path, Path | None], bool]


def get_bundle_dir(data_dir: Path, bundle_id: bytes) -> Path:
    """Where a node keeps the bundle `bundle_id`: `<data dir>/bundles/<id hex>`."""
    return Path(data_dir) / BUNDLES_DIR_NAME / bundle_id.hex()


def get_data_cache_dir(data_dir: Path) -> Path:
    """A node's SRS and proving-key cache: `<data dir>/cache`."""
    return Path(data_dir) / CACHE_DIR_NAME


# ---------------------------------------------------------------------------- commitments


def compute_instances_hash(instances: Sequence[str]) -> bytes:
    """sha256 of the canonical JSON list of a proof's public instances, in proof order (inputs
    then outputs), each a 64-char lowercase hex field element: `["81ff…","a6ff…",…]`, no spaces."""
    canonical = json.dumps(list(instances), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


def _require_layout(layout: SliceLayout, instances: Sequence[str]) -> None:
    """The instances are canonical field elements, as many as the slice's circuit has."""
    if len(instances) != layout.instances_count:
        raise ProofError(
            f"proof has {len(instances)} public instances, slice {layout.index}'s circuit has "
            f"{layout.instances_count}"
        )
    for value in instances:
        # One encoding per field element, so equal statements mean equal instances.
        if not _FELT_HEX.fullmatch(value):
            raise ProofError("a public instance is not a 64-char lowercase hex field element")
        if int.from_bytes(bytes.fromhex(value), "little") >= FIELD_MODULUS:
            raise ProofError("a public instance is not reduced modulo the field")


def compute_statement_commitments(
    bundle: Bundle, slice_index: int, proof: bytes
) -> tuple[bytes, bytes, bytes]:
    """(input_commitment, output_commitment, instances_hash) of the statement `proof` proves for
    slice `slice_index` of `bundle`: a pure function of the proof's public instances and the
    slice's layout in the manifest. Raises `ProofError` if `proof` cannot be such a proof
    (not EZKL proof JSON, wrong instance count, a non-canonical element, no such slice).

    With the slice's public instances split by its layout (`slicing.linkage.split_instances`:
    input tensors in manifest order, then output tensors) into {tensor name: elements}:
    - input_commitment = `slicing.linkage.compute_commitment({input name: elements})`, i.e.
      sha256 of the JSON `{"name":["felt",…],…}` with sorted names and no spaces, as raw bytes;
    - output_commitment = the same over the output tensors;
    - instances_hash = `compute_instances_hash(all instances)`.
    So slice 0's input commitment is the job's input commitment (`slicing.api.
    compute_job_commitment`, hex-decoded), and a consumer's input commitment equals its producer's
    output commitment when it reads exactly the producer's outputs."""
    if not 0 <= slice_index < len(bundle.slices):
        raise ProofError(f"bundle has no slice {slice_index}")
    layout = get_layouts(bundle)[slice_index]
    instances = get_instances(proof)
    _require_layout(layout, instances)
    named = split_instances(layout, instances)
    inputs = {name: named[f"in:{name}"] for name, _ in layout.inputs}
    outputs = {name: named[f"out:{name}"] for name, _ in layout.outputs}
    return (
        bytes.fromhex(compute_commitment(inputs)),
        bytes.fromhex(compute_commitment(outputs)),
        compute_instances_hash(instances),
    )


def compute_view_digest(statement: ProofStatementView) -> bytes:
    """A digest of the fields a verdict depends on (the award ref plays no part in it)."""
    fields = [
        statement.bundle_id,
        statement.slice_index,
        statement.input_commitment,
        statement.output_commitment,
        statement.instances_hash,
    ]
    return hashlib.sha256(pack(fields)).digest()


# ---------------------------------------------------------------------------- verifiers


def verify_with_ezkl(
    bundle: Bundle, slice_index: int, proof: bytes, cache_dir: Path, srs_file: Path | None
) -> bool:
    """slicing's verify path: EZKL `verify` against the slice's shipped vk, in a spawned worker.

    Cost: a fresh Python process per call (slicing.worker: EZKL holds the GIL and must not run
    after a fork): measured 0.07 s for a logrows-11 slice on a 2-core machine, spawn included;
    EZKL's own verify is 0.02 s at logrows 15, and the SRS (read whole) grows with logrows. It
    blocks the calling thread but not the GIL (the parent waits in `os.wait4`). Raises
    `WorkerError` if the worker crashes or times out (not a verdict)."""
    return EzklVerifier({bundle.bundle_id: bundle}, cache_dir, srs_file).verify_as(
        bundle, slice_index, proof
    )


class UndecidedVerifier:
    """Answers None ("cannot decide yet") to every proof: for a replica that holds no bundles at
    all (benchmarks, the simnet's ledger workload, none of which files claims). A claim checked
    with it is refused as PROOF_UNDECIDED (IGNORE): never accepted unchecked, never slashed on."""

    def verify(self, statement: ProofStatementView, proof: bytes) -> bool | None:
        return None


@dataclass(frozen=True, slots=True)
class VerifierStatistics:
    valid: int  # verdicts True (cache hits included)
    invalid: int  # verdicts False (cache hits included)
    undecided: int  # answers None
    cache_hits: int  # verdicts answered from the verdict cache
    ezkl_runs: int  # calls into EZKL verification
    bundles_loaded: int  # bundles read and hash-checked from disk


@dataclass(frozen=True, slots=True)
class _Loaded:
    bundle: Bundle
    layouts: tuple[SliceLayout, ...]


class BundleProofVerifier:
    """Verifies slice proofs against ledger statements with the bundles in `bundles_dir`.

    `verify(statement, proof)`, in order (cheap checks first, EZKL last):
    - None, after `on_missing(bundle_id)`, if `<bundles_dir>/<id hex>` is absent, incomplete,
      damaged, or holds another bundle (its manifest hash is not the id), or the SRS the bundle
      names is not in `cache_dir` (or `srs_file`): we cannot decide, so we never say False. A
      dev SRS is never generated here (a fresh one would differ from the bundle's);
    - False if the bundle id is not 32 bytes, the slice index is out of range, the slice is
      unproven, the proof is malformed, or the statement's commitments are not those of
      `compute_statement_commitments` (the statement is provably wrong);
    - else EZKL's verdict against the slice's verifying key (None if the worker crashes).

    Verdicts (never None) are cached per (statement digest, proof hash), so a replica re-checking
    the same claim does not re-run EZKL; loaded bundles are cached too. Both caches are bounded
    LRUs. Bundles are content-addressed, so a cached bundle never goes stale; the files EZKL reads
    are re-hashed before each run. Never raises on bad input. Safe to call from several threads
    (caches are locked; EZKL runs outside the lock). `on_missing` may be called every time; the
    node de-duplicates its fetches by hash.
    """

    def __init__(
        self,
        bundles_dir: Path,
        cache_dir: Path,
        *,
        on_missing: Callable[[bytes], None] | None = None,
        srs_file: Path | None = None,
        ezkl_verify: EzklVerifyFn = verify_with_ezkl,
        bundles_max: int = BUNDLES_CACHED_MAX,
        verdicts_max: int = VERDICTS_CACHED_MAX,
    ) -> None:
        self.bundles_dir = Path(bundles_dir)
        self.cache_dir = Path(cache_dir)
        self.srs_file = srs_file
        self._on_missing = on_missing
        self._ezkl_verify = ezkl_verify
        self._bundles_max = bundles_max
        self._verdicts_max = verdicts_max
        self._bundles: OrderedDict[bytes, _Loaded] = OrderedDict()
        self._verdicts: OrderedDict[tuple[bytes, bytes], bool] = OrderedDict()
        self._lock = threading.Lock()
        self._counts = {f.name: 0 for f in fields(VerifierStatistics)}

    @classmethod
    def for_data_dir(
        cls, data_dir: Path, *, on_missing: Callable[[bytes], None] | None = None
    ) -> BundleProofVerifier:
        """The verifier of a node's data dir: `<data dir>/bundles`, `<data dir>/cache`."""
        return cls(
            Path(data_dir) / BUNDLES_DIR_NAME, get_data_cache_dir(data_dir), on_missing=on_missing
        )

    def set_on_missing(self, on_missing: Callable[[bytes], None] | None) -> None:
        """Who to tell when a bundle is missing (may be called from worker threads)."""
        self._on_missing = on_missing

    def statistics(self) -> VerifierStatistics:
        with self._lock:
            return VerifierStatistics(**self._counts)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    # ------------------------------------------------------------------ verify

    def verify(self, statement: ProofStatementView, proof: bytes) -> bool | None:
        """True iff `proof` proves `statement`; False if it does not; None if undecidable now."""
        # No bundle has a slice outside 0..2^32-1 (checked first: the digest packs the index).
        if not 0 <= statement.slice_index < SLICE_INDEX_LIMIT:
            self._count("invalid")
            return False
        key = (compute_view_digest(statement), compute_proof_hash(proof))
        with self._lock:
            cached = self._verdicts.get(key)
            if cached is not None:
                self._verdicts.move_to_end(key)
                self._counts["cache_hits"] += 1
                self._counts["valid" if cached else "invalid"] += 1
                return cached
        verdict = self._decide(statement, proof)
        with self._lock:
            if verdict is None:
                self._counts["undecided"] += 1
                return None
            self._counts["valid" if verdict else "invalid"] += 1
            self._verdicts[key] = verdict
            while len(self._verdicts) > self._verdicts_max:
                self._verdicts.popitem(last=False)
        return verdict

    def _missing(self, bundle_id: bytes, why: str) -> None:
        _log.info("cannot verify a proof on bundle %s: %s", bundle_id.hex(), why)
        if self._on_missing is not None:
            self._on_missing(bundle_id)

    def _decide(self, statement: ProofStatementView, proof: bytes) -> bool | None:
        bundle_id, index = statement.bundle_id, statement.slice_index
        # A bundle id is a sha256: anything else names no bundle at all.
        if len(bundle_id) != BUNDLE_ID_BYTES:
            return False
        loaded = self._get_bundle(bundle_id)
        if loaded is None:
            return None
        bundle = loaded.bundle
        # The statement names a slice of the bundle ...
        if not 0 <= index < len(loaded.layouts):
            return False
        # ... that has a circuit (an unproven slice has no proof at all).
        if not bundle.is_proven(index):
            return False
        # The statement says what the proof's public instances commit to.
        try:
            commitments = compute_statement_commitments(bundle, index, proof)
        except ProofError:
            return False
        claimed = (statement.input_commitment, statement.output_commitment)
        if commitments != (*claimed, statement.instances_hash):
            return False
        if not self._has_circuit_files(loaded, index):
            return None
        # The proof verifies against the slice's verifying key.
        self._count("ezkl_runs")
        try:
            return self._ezkl_verify(bundle, index, proof, self.cache_dir, self.srs_file)
        except WorkerError as exc:  # a crash or timeout is no verdict on the proof
            _log.warning("EZKL verify of %s slice %d failed: %s", bundle.bundle_id, index, exc)
            return None

    # ------------------------------------------------------------------ bundles and files

    def _get_bundle(self, bundle_id: bytes) -> _Loaded | None:
        with self._lock:
            loaded = self._bundles.get(bundle_id)
            if loaded is not None:
                self._bundles.move_to_end(bundle_id)
                return loaded
        root = self.bundles_dir / bundle_id.hex()
        if not (root / MANIFEST_NAME).is_file():
            self._missing(bundle_id, f"no bundle at {root}")
            return None
        try:
            bundle = load_bundle(root, expected_id=bundle_id.hex())
            loaded = _Loaded(bundle, tuple(get_layouts(bundle)))
        except BundleError as exc:  # incomplete, damaged, or another bundle under this name
            self._missing(bundle_id, str(exc))
            return None
        except (OSError, KeyError, TypeError, ValueError, AttributeError) as exc:
            # A manifest of the right format but the wrong shape (load_bundle checks it in part).
            self._missing(bundle_id, f"unreadable bundle at {root} ({type(exc).__name__})")
            return None
        with self._lock:
            self._counts["bundles_loaded"] += 1
            self._bundles[bundle_id] = loaded
            while len(self._bundles) > self._bundles_max:
                self._bundles.popitem(last=False)
        return loaded

    def _get_srs_path(self, logrows: int) -> Path:
        if self.srs_file is not None:
            return self.srs_file
        # slicing.srs.get_srs's cache layout; looked up, never generated (see the class doc).
        return self.cache_dir / "srs" / f"kzg{logrows}.srs"

    def _has_circuit_files(self, loaded: _Loaded, index: int) -> bool:
        """The files EZKL reads are still the bundle's (re-hashed: they are on disk, not in our
        cache; a changed bundle is evicted), and the SRS the bundle names is here."""
        bundle = loaded.bundle
        bundle_id = bytes.fromhex(bundle.bundle_id)
        entry = bundle.manifest["slices"][index]
        try:
            for name in ("settings.json", "vk.key"):
                if compute_file_sha256(bundle.get_path(index, name)) != entry["files"][name]:
                    with self._lock:
                        self._bundles.pop(bundle_id, None)
                    raise BundleError(f"slice {index}: {name} changed on disk")
            logrows = int(entry["logrows"])
            srs = self._get_srs_path(logrows)
            if not srs.is_file():
                raise BundleError(f"no SRS for logrows {logrows} at {srs}")
            if compute_file_sha256(srs) != bundle.get_srs_sha256(logrows):
                raise BundleError(f"the SRS at {srs} is not the one the bundle names")
        except (BundleError, OSError, KeyError, TypeError, ValueError) as exc:
            self._missing(bundle_id, str(exc))
            return False
        return True
