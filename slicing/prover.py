"""Proving and verifying one slice: the `Prover`/`Verifier` seams, `ProofArtifact`, and their EZKL
forms.

`EzklProver` runs witness + prove (+ verify) for one slice of a loaded bundle in one spawned worker
process (so its peak RSS is that proof's alone), deriving the proving key first if the cache lacks
it. `EzklVerifier.verify(bundle_id, slice_index, proof)` checks proof bytes against the bundle's vk
in a worker; it never raises on a bad proof (False). Both block the calling thread: node/ calls
them from a trio worker thread, and the event loop never waits on EZKL itself (the work is in
another process).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from slicing.bundle import Bundle, get_proving_key, prune_pk_cache
from slicing.errors import BundleError, ProofError
from slicing.srs import get_srs
from slicing.worker import run_job

PROVE_TIMEOUT_S = 1800.0
VERIFY_TIMEOUT_S = 300.0
PROOF_BYTES_MAX = 64 << 20


@dataclass(frozen=True)
class ProofArtifact:
    """A proof of one slice and its statement: the public instances (inputs then outputs)."""

    bundle_id: str
    slice_index: int
    proof: bytes  # EZKL's proof JSON
    instances: tuple[str, ...]
    rescaled_outputs: tuple[tuple[float, ...], ...]
    verified: bool | None = None
    figures: dict[str, float] = field(default_factory=dict)


class Prover(Protocol):
    def prove_slice(
        self, bundle: Bundle, index: int, inputs: Mapping[str, Sequence[float]]
    ) -> ProofArtifact: ...


class Verifier(Protocol):
    def verify(self, bundle_id: str, slice_index: int, proof: bytes) -> bool: ...


def get_instances(proof: bytes) -> tuple[str, ...]:
    """The flattened public instances of an EZKL proof JSON; ProofError if it is not one."""
    if len(proof) > PROOF_BYTES_MAX:
        raise ProofError(f"proof of {len(proof)} bytes exceeds {PROOF_BYTES_MAX}")
    try:
        doc = json.loads(proof)
        instances = doc["instances"]
        return tuple(str(v) for column in instances for v in column)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ProofError(f"not an EZKL proof ({type(exc).__name__})") from None


def write_input_data(
    path: Path, bundle: Bundle, index: int, inputs: Mapping[str, Sequence[float]]
) -> None:
    """EZKL's input file for slice `index`: {"input_data": [[flat input 0], ...]} in slice order."""
    names = [t["name"] for t in bundle.manifest["slices"][index]["inputs"]]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise ProofError(f"slice {index}: no value for input(s) {missing}")
    path.write_text(json.dumps({"input_data": [[float(v) for v in inputs[n]] for n in names]}))


@dataclass
class EzklProver:
    """Real EZKL proofs in spawned workers; keys and SRS cached under `cache_dir`."""

    cache_dir: Path
    srs_file: Path | None = None
    check: bool = True  # verify right after proving (in the same worker)
    max_rss_mb: float | None = None
    pk_cache_bytes_max: int | None = None  # prune least recently used keys beyond this

    def get_srs_path(self, bundle: Bundle, index: int) -> Path:
        logrows = int(bundle.manifest["slices"][index]["logrows"])
        srs = get_srs(logrows, self.cache_dir, self.srs_file)
        if srs.sha256 != bundle.get_srs_sha256(logrows):
            raise BundleError(f"SRS {srs.path} (logrows {logrows}) is not the one the bundle names")
        return srs.path

    def prove_slice(
        self, bundle: Bundle, index: int, inputs: Mapping[str, Sequence[float]]
    ) -> ProofArtifact:
        srs = self.get_srs_path(bundle, index)
        pk, setup_job = get_proving_key(bundle, index, srs, self.cache_dir)
        with tempfile.TemporaryDirectory(prefix="dsperse-prove-") as tmp:
            data = Path(tmp, "input.json")
            write_input_data(data, bundle, index, inputs)
            args: dict[str, Any] = {
                "compiled": str(bundle.get_path(index, "model.compiled")),
                "data": str(data),
                "pk": str(pk),
                "srs": str(srs),
                "settings": str(bundle.get_path(index, "settings.json")),
                "vk": str(bundle.get_path(index, "vk.key")),
                "out_dir": tmp,
                "check": self.check,
            }
            job = run_job("prove", args, timeout_s=PROVE_TIMEOUT_S, max_rss_mb=self.max_rss_mb)
            proof = Path(job.value["proof"]).read_bytes()
        if self.pk_cache_bytes_max is not None:
            prune_pk_cache(self.cache_dir, self.pk_cache_bytes_max)
        v = job.value
        figures = {
            "logrows": float(bundle.manifest["slices"][index]["logrows"]),
            "rows": float(v["rows"]),
            "witness_s": v["witness_s"],
            "prove_s": v["prove_s"],
            "verify_s": v.get("verify_s", 0.0),
            "peak_rss_mb": job.peak_rss_mb,
            "proof_bytes": float(v["proof_bytes"]),
            "setup_s": setup_job.value["setup_s"] if setup_job else 0.0,
            "setup_peak_rss_mb": setup_job.peak_rss_mb if setup_job else 0.0,
        }
        return ProofArtifact(
            bundle_id=bundle.bundle_id,
            slice_index=index,
            proof=proof,
            instances=get_instances(proof),
            rescaled_outputs=tuple(tuple(t) for t in v["rescaled_outputs"]),
            verified=v.get("verified"),
            figures=figures,
        )


@dataclass
class EzklVerifier:
    """Verifies proof bytes of a slice of a known bundle against the vk shipped in it."""

    bundles: dict[str, Bundle]
    cache_dir: Path
    srs_file: Path | None = None

    def verify_as(self, bundle: Bundle, index: int, proof: bytes) -> bool:
        entry = bundle.manifest["slices"][index]
        if not entry["proven"] or len(proof) > PROOF_BYTES_MAX:
            return False
        srs = get_srs(int(entry["logrows"]), self.cache_dir, self.srs_file)
        with tempfile.TemporaryDirectory(prefix="dsperse-verify-") as tmp:
            proof_path = Path(tmp, "proof.json")
            proof_path.write_bytes(proof)
            args = {
                "proof": str(proof_path),
                "settings": str(bundle.get_path(index, "settings.json")),
                "vk": str(bundle.get_path(index, "vk.key")),
                "srs": str(srs.path),
            }
            job = run_job("verify", args, timeout_s=VERIFY_TIMEOUT_S)
        return bool(job.value["verified"])

    def verify(self, bundle_id: str, slice_index: int, proof: bytes) -> bool:
        bundle = self.bundles.get(bundle_id)
        if bundle is None or not 0 <= slice_index < len(bundle.manifest["slices"]):
            return False
        return self.verify_as(bundle, slice_index, proof)
