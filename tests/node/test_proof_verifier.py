"""`node.proof_verifier` with real EZKL: a two-slice MLP bundle (logrows 11) built and proven once
per module into a node data dir, then checked against ledger statements.

EZKL calls are counted through the verifier's `ezkl_verify` seam, never by timing. Tests that
need the real bundle are marked slow (building and proving take a few seconds).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger.builders import ChainWriter, get_award_record, sign_statement
from ledger.containers import (
    Award,
    Bond,
    Claim,
    Entry,
    Escrow,
    GenesisAllocation,
    InvalidProofEvidence,
    Operation,
    ProofStatement,
    Slash,
)
from ledger.env import LedgerEnv
from ledger.errors import InvalidTransition, Reason
from ledger.interfaces import ProofStatementView, ProofVerifier
from ledger.lattice import Lattice
from ledger.store import LEDGER_FILE_NAME, LedgerStore
from node.cli import main
from node.identity import Ed25519Scheme
from node.proof_verifier import (
    BUNDLES_DIR_NAME,
    BundleProofVerifier,
    UndecidedVerifier,
    compute_instances_hash,
    compute_statement_commitments,
    get_bundle_dir,
    get_data_cache_dir,
    verify_with_ezkl,
)
from slicing import api
from slicing.bundle import MANIFEST_NAME, Bundle, compute_bundle_id, load_bundle
from slicing.errors import ProofError, WorkerError
from slicing.linkage import FIELD_MODULUS
from slicing.prover import EzklProver, get_instances
from tests.ledger.helpers import GENESIS, h32, identity, make_config
from tests.slicing.conftest import MLP_INPUT, SMALL_POLICY, make_mlp_sliced


@dataclass(frozen=True)
class Proven:
    data_dir: Path  # <data dir>/bundles/<id>/ and <data dir>/cache (SRS, keys)
    bundle: Bundle  # loaded from the data dir
    proofs: tuple[bytes, bytes]  # slice 0, slice 1

    @property
    def bundle_id(self) -> bytes:
        return bytes.fromhex(self.bundle.bundle_id)


@pytest.fixture(scope="module")
def proven(tmp_path_factory: pytest.TempPathFactory) -> Proven:
    data_dir = tmp_path_factory.mktemp("node")
    sliced = make_mlp_sliced(with_unprovable=False)
    cache = get_data_cache_dir(data_dir)
    opts = api.BuildOptions(budget=sliced.budget, policy=SMALL_POLICY, cache_dir=cache)
    built = api.write_bundle(
        sliced, {"x": MLP_INPUT}, {"file": "mlp"}, tmp_path_factory.mktemp("build") / "mlp", opts
    )
    root = get_bundle_dir(data_dir, bytes.fromhex(built.bundle_id))
    shutil.copytree(built.root, root)
    bundle = load_bundle(root)
    prover = EzklProver(cache)
    first = prover.prove_slice(bundle, 0, {"x": MLP_INPUT.ravel().tolist()})
    second = prover.prove_slice(bundle, 1, {"h": list(first.rescaled_outputs[0])})
    assert first.verified and second.verified
    return Proven(data_dir, bundle, (first.proof, second.proof))


class CountingEzkl:
    """The `ezkl_verify` seam: the real EZKL verification, counted."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(
        self, bundle: Bundle, index: int, proof: bytes, cache_dir: Path, srs: Path | None
    ) -> bool:
        self.calls.append(index)
        return verify_with_ezkl(bundle, index, proof, cache_dir, srs)


def make_verifier(
    data_dir: Path, missing: list[bytes] | None = None, cache_dir: Path | None = None
) -> tuple[BundleProofVerifier, CountingEzkl]:
    ezkl = CountingEzkl()
    verifier = BundleProofVerifier(
        data_dir / BUNDLES_DIR_NAME,
        cache_dir or get_data_cache_dir(data_dir),
        on_missing=None if missing is None else missing.append,
        ezkl_verify=ezkl,
    )
    return verifier, ezkl


def statement_for(bundle: Bundle, index: int, proof: bytes, **changes: object) -> ProofStatement:
    """The statement an honest prover makes for `proof` (fields in `changes` replaced)."""
    ic, oc, ih = compute_statement_commitments(bundle, index, proof)
    statement = ProofStatement(h32("award"), bytes.fromhex(bundle.bundle_id), index, ic, oc, ih)
    return dataclasses.replace(statement, **changes)  # type: ignore[arg-type]


def flip_proof_byte(proof: bytes, position: int = 100) -> bytes:
    """One byte of the Halo2 proof flipped (instances untouched, so the statement still fits)."""
    doc = json.loads(proof)
    doc["proof"][position] ^= 1
    return json.dumps(doc).encode()


def edit_instances(proof: bytes, edit: object) -> bytes:
    doc = json.loads(proof)
    doc["instances"][0] = edit(doc["instances"][0])  # type: ignore[operator]
    return json.dumps(doc).encode()


# ---------------------------------------------------------------------------- commitments


def test_instances_hash_is_sha256_of_canonical_json() -> None:
    felts = ["00" * 32, "01" + "00" * 31]
    expected = hashlib.sha256(f'["{felts[0]}","{felts[1]}"]'.encode()).digest()
    assert compute_instances_hash(felts) == expected
    assert compute_instances_hash(tuple(felts)) == expected


@pytest.mark.slow
def test_commitments_are_the_job_input_and_link_slices(proven: Proven) -> None:
    b, (p0, p1) = proven.bundle, proven.proofs
    in0, out0, hash0 = compute_statement_commitments(b, 0, p0)
    in1, out1, _ = compute_statement_commitments(b, 1, p1)
    # Slice 0 reads the model input: its input commitment is the job's.
    assert in0 == bytes.fromhex(api.compute_job_commitment(b, {"x": MLP_INPUT}))
    # Slice 1 reads exactly slice 0's output.
    assert out0 == in1 and in0 != out0 != out1
    assert hash0 == compute_instances_hash(get_instances(p0))
    assert all(len(c) == 32 for c in (in0, out0, hash0))
    with pytest.raises(ProofError):
        compute_statement_commitments(b, 1, p0)  # slice 0's layout, not slice 1's
    with pytest.raises(ProofError):
        compute_statement_commitments(b, 2, p0)


# ---------------------------------------------------------------------------- verdicts


@pytest.mark.slow
def test_valid_proofs_verify(proven: Proven) -> None:
    verifier, ezkl = make_verifier(proven.data_dir)
    for index, proof in enumerate(proven.proofs):
        assert verifier.verify(statement_for(proven.bundle, index, proof), proof) is True
    assert ezkl.calls == [0, 1]


@pytest.mark.slow
def test_flipped_proof_byte_is_invalid(proven: Proven) -> None:
    verifier, ezkl = make_verifier(proven.data_dir)
    proof = flip_proof_byte(proven.proofs[0])
    statement = statement_for(proven.bundle, 0, proof)
    assert statement == statement_for(proven.bundle, 0, proven.proofs[0])
    assert verifier.verify(statement, proof) is False
    assert ezkl.calls == [0]  # the verdict is EZKL's


@pytest.mark.slow
@pytest.mark.parametrize("field", ["input_commitment", "output_commitment", "instances_hash"])
def test_wrong_commitment_is_invalid(proven: Proven, field: str) -> None:
    verifier, ezkl = make_verifier(proven.data_dir)
    proof = proven.proofs[0]
    statement = statement_for(proven.bundle, 0, proof, **{field: h32("wrong", field)})
    assert verifier.verify(statement, proof) is False
    assert ezkl.calls == []  # decided before EZKL


@pytest.mark.slow
@pytest.mark.parametrize("index", [1, 2, -1, 10**6, 1 << 32, 10**30])
def test_wrong_slice_index_is_invalid(proven: Proven, index: int) -> None:
    verifier, ezkl = make_verifier(proven.data_dir)
    proof = proven.proofs[0]
    statement = statement_for(proven.bundle, 0, proof, slice_index=index)
    assert verifier.verify(statement, proof) is False
    assert ezkl.calls == []


def _too_big(felts: list[str]) -> list[str]:
    return [(FIELD_MODULUS + 1).to_bytes(32, "little").hex(), *felts[1:]]


GARBAGE = {
    "empty": lambda p: b"",
    "not json": lambda p: b"\x00garbage\xff",
    "json list": lambda p: b"[1, 2]",
    "no instances": lambda p: b'{"proof": []}',
    "instances not a list": lambda p: b'{"instances": 7}',
    "one instance dropped": lambda p: edit_instances(p, lambda fs: fs[:-1]),
    "upper-case element": lambda p: edit_instances(p, lambda fs: [fs[0].upper(), *fs[1:]]),
    "element not reduced": lambda p: edit_instances(p, _too_big),
    "truncated": lambda p: p[: len(p) // 2],
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_garbage_proof_is_invalid(proven: Proven, kind: str) -> None:
    verifier, ezkl = make_verifier(proven.data_dir)
    statement = statement_for(proven.bundle, 0, proven.proofs[0])
    assert verifier.verify(statement, GARBAGE[kind](proven.proofs[0])) is False
    assert ezkl.calls == []


def test_absent_bundle_is_undecided_and_reported(tmp_path: Path) -> None:
    missing: list[bytes] = []
    verifier, ezkl = make_verifier(tmp_path, missing)
    statement = ProofStatement(h32("a"), h32("bundle"), 0, h32("i"), h32("o"), h32("h"))
    assert verifier.verify(statement, b"{}") is None
    assert verifier.verify(statement, b"{}") is None  # "cannot decide" is never cached
    assert missing == [h32("bundle")] * 2 and ezkl.calls == []
    assert verifier.statistics().undecided == 2


def test_malformed_bundle_id_is_invalid(tmp_path: Path) -> None:
    verifier, _ = make_verifier(tmp_path)
    statement = ProofStatement(h32("a"), b"short", 0, h32("i"), h32("o"), h32("h"))
    assert verifier.verify(statement, b"{}") is False


def test_undecided_verifier_never_decides() -> None:
    statement = ProofStatement(h32("a"), h32("bundle"), 0, h32("i"), h32("o"), h32("h"))
    assert UndecidedVerifier().verify(statement, b"anything") is None


@pytest.mark.slow
def test_bundle_arriving_later_is_then_checked(proven: Proven, tmp_path: Path) -> None:
    missing: list[bytes] = []
    verifier, _ = make_verifier(tmp_path, missing, cache_dir=get_data_cache_dir(proven.data_dir))
    proof = proven.proofs[0]
    statement = statement_for(proven.bundle, 0, proof)
    assert verifier.verify(statement, proof) is None and missing == [proven.bundle_id]
    shutil.copytree(proven.bundle.root, get_bundle_dir(tmp_path, proven.bundle_id))
    assert verifier.verify(statement, proof) is True


def _copy_bundle(proven: Proven, data_dir: Path, bundle_id: bytes) -> Path:
    root = get_bundle_dir(data_dir, bundle_id)
    shutil.copytree(proven.bundle.root, root)
    return root


@pytest.mark.slow
def test_wrong_or_incomplete_copy_is_undecided(proven: Proven, tmp_path: Path) -> None:
    cache = get_data_cache_dir(proven.data_dir)
    proof = proven.proofs[0]
    # Another bundle's files under this id: the manifest hash is not the id.
    other = h32("other bundle")
    _copy_bundle(proven, tmp_path / "wrong", other)
    missing: list[bytes] = []
    verifier, ezkl = make_verifier(tmp_path / "wrong", missing, cache)
    assert verifier.verify(statement_for(proven.bundle, 0, proof, bundle_id=other), proof) is None
    assert missing == [other]
    # The right bundle with a file missing.
    root = _copy_bundle(proven, tmp_path / "incomplete", proven.bundle_id)
    (root / proven.bundle.manifest["slices"][0]["dir"] / "vk.key").unlink()
    verifier, ezkl = make_verifier(tmp_path / "incomplete", missing, cache)
    assert verifier.verify(statement_for(proven.bundle, 0, proof), proof) is None
    assert missing == [other, proven.bundle_id] and ezkl.calls == []


@pytest.mark.slow
def test_file_changed_after_load_is_undecided(proven: Proven, tmp_path: Path) -> None:
    root = _copy_bundle(proven, tmp_path, proven.bundle_id)
    missing: list[bytes] = []
    verifier, ezkl = make_verifier(tmp_path, missing, get_data_cache_dir(proven.data_dir))
    p0, p1 = proven.proofs
    assert verifier.verify(statement_for(proven.bundle, 0, p0), p0) is True  # loaded, cached
    (root / proven.bundle.manifest["slices"][1]["dir"] / "vk.key").write_bytes(b"tampered")
    assert verifier.verify(statement_for(proven.bundle, 1, p1), p1) is None
    assert missing == [proven.bundle_id] and ezkl.calls == [0]


@pytest.mark.slow
def test_missing_srs_is_undecided_and_never_generated(proven: Proven, tmp_path: Path) -> None:
    missing: list[bytes] = []
    verifier, ezkl = make_verifier(proven.data_dir, missing, cache_dir=tmp_path / "cache")
    proof = proven.proofs[0]
    assert verifier.verify(statement_for(proven.bundle, 0, proof), proof) is None
    assert missing == [proven.bundle_id] and ezkl.calls == []
    assert not (tmp_path / "cache").exists()  # no dev SRS made: it could not match the bundle's


@pytest.mark.slow
def test_unproven_slice_is_invalid(proven: Proven, tmp_path: Path) -> None:
    # The same files, with slice 1 declared unproven in the manifest: another bundle id.
    staging = tmp_path / "staging"
    shutil.copytree(proven.bundle.root, staging)
    manifest = json.loads((staging / MANIFEST_NAME).read_text())
    manifest["slices"][1].update(proven=False, fallback="declared unproven by the test")
    (staging / MANIFEST_NAME).write_text(json.dumps(manifest))
    bundle_id = bytes.fromhex(compute_bundle_id(manifest))
    get_bundle_dir(tmp_path, bundle_id).parent.mkdir()
    staging.rename(get_bundle_dir(tmp_path, bundle_id))
    verifier, ezkl = make_verifier(tmp_path, cache_dir=get_data_cache_dir(proven.data_dir))
    proof = proven.proofs[1]
    statement = statement_for(proven.bundle, 1, proof, bundle_id=bundle_id)
    assert verifier.verify(statement, proof) is False
    assert ezkl.calls == []


@pytest.mark.slow
def test_cached_verdicts_are_reused(proven: Proven) -> None:
    verifier, ezkl = make_verifier(proven.data_dir)
    proof, bad = proven.proofs[0], flip_proof_byte(proven.proofs[0])
    statement = statement_for(proven.bundle, 0, proof)
    for _ in range(3):
        assert verifier.verify(statement, proof) is True
        assert verifier.verify(statement, bad) is False
    assert ezkl.calls == [0, 0]  # once per (statement, proof)
    stats = verifier.statistics()
    assert (stats.cache_hits, stats.valid, stats.invalid, stats.bundles_loaded) == (4, 3, 3, 1)
    # Other proof bytes of the same statement (EZKL ignores `hex_proof`) are checked anew.
    doc = json.loads(proof)
    doc["hex_proof"] = None
    assert verifier.verify(statement, json.dumps(doc).encode()) is True
    assert ezkl.calls == [0, 0, 0]


@pytest.mark.slow
def test_worker_failure_is_undecided_and_not_cached(proven: Proven) -> None:
    calls: list[int] = []

    def crashing(bundle: Bundle, index: int, proof: bytes, cache: Path, srs: Path | None) -> bool:
        calls.append(index)
        raise WorkerError("worker for verify died (exit -9)")

    verifier = BundleProofVerifier(
        proven.data_dir / BUNDLES_DIR_NAME,
        get_data_cache_dir(proven.data_dir),
        ezkl_verify=crashing,
    )
    proof = proven.proofs[0]
    statement = statement_for(proven.bundle, 0, proof)
    assert verifier.verify(statement, proof) is None
    assert verifier.verify(statement, proof) is None
    assert calls == [0, 0]


# ---------------------------------------------------------------------------- with the ledger


class _Fooled:
    """A replica that took some proofs as valid and every other as invalid, whatever they are:
    how a store gets entries that `ledger verify` must call wrong."""

    def __init__(self, *valid: bytes) -> None:
        self.valid = set(valid)

    def verify(self, statement: ProofStatementView, proof: bytes) -> bool | None:
        return proof in self.valid


def _env(verifier: ProofVerifier) -> LedgerEnv:
    return LedgerEnv(make_config(), Ed25519Scheme(), verifier)


@dataclass
class Market:
    """requester escrows 100 for a job on the bundle and awards slice 0 to prover (bonded)."""

    entries: list[Entry]
    writers: dict[str, ChainWriter]
    award: Entry | None = None

    def append(self, name: str, op: Operation) -> Entry:
        w = self.writers[name]
        w.observe_height(max(e.header.height for e in self.entries))
        self.entries.append(w.append(op))
        return self.entries[-1]

    def claim(self, proven: Proven, proof: bytes) -> Claim:
        assert self.award is not None
        statement = statement_for(proven.bundle, 0, proof, award_ref=self.award.hash)
        return Claim(sign_statement(identity("prover"), statement, proof), proof)

    def evidence(self, proven: Proven, proof: bytes) -> Slash:
        assert self.award is not None
        signed = self.claim(proven, proof).statement
        return Slash(InvalidProofEvidence(get_award_record(self.award), signed, proof))


def make_market(proven: Proven) -> Market:
    names = ("requester", "prover", "reporter")
    writers = {"genesis": ChainWriter(GENESIS), **{n: ChainWriter(identity(n)) for n in names}}
    genesis = writers["genesis"]
    allocations = [genesis.append(GenesisAllocation(writers[n].account, 1000)) for n in names]
    market = Market(allocations, writers)
    market.append("prover", Bond(500))
    market.append("requester", Escrow(h32("job"), proven.bundle_id, 100))
    in0 = compute_statement_commitments(proven.bundle, 0, proven.proofs[0])[0]
    award = Award(h32("job"), 0, 0, writers["prover"].account, 30, in0)
    market.award = market.append("requester", award)
    return market


@pytest.mark.slow
def test_ledger_refuses_and_slashes_an_invalid_proof_and_pays_a_real_one(proven: Proven) -> None:
    verifier, _ = make_verifier(proven.data_dir)
    lattice = Lattice(_env(verifier))
    market = make_market(proven)
    bad = flip_proof_byte(proven.proofs[0])
    for entry in market.entries:
        lattice.add(entry)
    # A claim with the flipped proof is refused (built on a copy of the prover's writer) ...
    w = market.writers["prover"]
    probe = ChainWriter(w.signer, w.seq, w.head, lattice.get_max_height())
    with pytest.raises(InvalidTransition) as info:
        lattice.add(probe.append(market.claim(proven, bad)))
    assert info.value.reason is Reason.PROOF_INVALID
    # ... and is evidence; the real proof is paid.
    lattice.add(market.append("reporter", market.evidence(proven, bad)))
    lattice.add(market.append("prover", market.claim(proven, proven.proofs[0])))
    state = lattice.state
    assert market.award is not None and state.awards[market.award.hash].paid
    assert len(state.offences) == 1
    # Evidence against the real proof is refused.
    with pytest.raises(InvalidTransition) as info:
        lattice.add(market.append("reporter", market.evidence(proven, proven.proofs[0])))
    assert info.value.reason is Reason.EVIDENCE_PROOF_VALID


def _cli_store(data_dir: Path, market: Market, verifier: ProofVerifier) -> list[Entry]:
    with LedgerStore.open(data_dir / LEDGER_FILE_NAME, _env(verifier)) as store:
        store.add_many(market.entries, raise_invalid=True)
    return market.entries


@pytest.fixture
def cli_data_dir(proven: Proven, tmp_path: Path) -> Path:
    shutil.copytree(proven.bundle.root, get_bundle_dir(tmp_path, proven.bundle_id))
    shutil.copytree(get_data_cache_dir(proven.data_dir), get_data_cache_dir(tmp_path))
    return tmp_path


@pytest.mark.slow
def test_cli_ledger_verify_reruns_proofs(
    proven: Proven, cli_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    market = make_market(proven)
    market.append("reporter", market.evidence(proven, flip_proof_byte(proven.proofs[0])))
    market.append("prover", market.claim(proven, proven.proofs[0]))
    verifier, _ = make_verifier(cli_data_dir)
    _cli_store(cli_data_dir, market, verifier)
    assert main(["ledger", "verify", "--data-dir", str(cli_data_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok:") and "proofs: 2 re-verified, 0 wrong, 0 not checkable" in out


@pytest.mark.slow
def test_cli_ledger_verify_names_entries_wrong_about_their_proofs(
    proven: Proven, cli_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A fooled replica stored a claim with a flipped proof and evidence against a real one.
    bad = flip_proof_byte(proven.proofs[0], position=7)
    market = make_market(proven)
    slash = market.append("reporter", market.evidence(proven, proven.proofs[0]))
    claim = market.append("prover", market.claim(proven, bad))
    _cli_store(cli_data_dir, market, _Fooled(bad))
    assert main(["ledger", "verify", "--data-dir", str(cli_data_dir)]) == 1
    out, err = capsys.readouterr()
    assert "proofs: 2 re-verified, 2 wrong, 0 not checkable" in out
    bundle = proven.bundle_id.hex()
    assert f"WRONG {claim.hash.hex()} claim bundle {bundle}: proof does not verify" in out
    assert f"WRONG {slash.hash.hex()} invalid-proof evidence bundle {bundle}" in out
    assert "wrong about their proofs" in err
