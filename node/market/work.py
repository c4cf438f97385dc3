"""The market's slow parts for a running node: preparing a job (witness chain, slice inputs as
blobs), fetching bundles, SRS, inputs and proofs, proving in the worker pool, checking proofs and
the chain, writing the result. Each is awaited by `node.market.service` off the event loop.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import trio

from ledger.containers import ProofStatement
from node.blobs import BlobStore
from node.errors import NodeError
from node.fetch import FetchService
from node.ledger_sync import LedgerSync
from node.market import events as ev
from node.market.core import OwnJob
from node.proof_verifier import BundleProofVerifier, compute_statement_commitments
from node.wire.market_messages import SliceTask
from p2p.abc import PeerId, Transport
from p2p.errors import P2PError
from slicing.errors import SlicingError

CONNECT_TIMEOUT_S = 10.0
INPUT_BYTES_MAX = 64 * 1024 * 1024
MEMORY_MB_AT_LOGROWS_15 = 800  # measured: a logrows-15 slice proof peaks at about 740 MB


class MarketError(NodeError):
    """A job cannot be prepared (bad bundle or input) or a slice cannot be worked on."""


# What working on a slice can fail with (a peer, a file, EZKL, a timeout): reported to the core
# as a failed step, never raised into the node's nursery. Programmer errors still propagate.
WORK_ERRORS: tuple[type[BaseException], ...] = (
    NodeError, SlicingError, P2PError, OSError, ValueError, KeyError, trio.TooSlowError,
)  # fmt: skip


def compute_slice_input_commitment(
    bundle: Any, index: int, values: dict[str, list[float]]
) -> bytes:
    """What slice `index`'s proof will commit to as its input, from the chain's values: the
    same function of the quantised input tensors as `compute_statement_commitments`."""
    from slicing.linkage import compute_commitment, compute_felts

    scale = int(bundle.manifest["policy"]["scale"])
    names = [t["name"] for t in bundle.slices[index]["inputs"]]
    return bytes.fromhex(compute_commitment({n: compute_felts(values[n], scale) for n in names}))


def estimate_memory_mb(logrows: int) -> int:
    return int(MEMORY_MB_AT_LOGROWS_15 * 2 ** max(0, logrows - 15))


class MarketWork:
    def __init__(
        self,
        data_dir: Path,
        transport: Transport,
        sync: LedgerSync,
        fetch: FetchService,
        blobs: BlobStore,
        verifier: BundleProofVerifier,
        pool: Any | None,  # node.prover_pool.ProverPool (None with --no-prove)
    ) -> None:
        self.data_dir = data_dir
        self.transport = transport
        self.sync = sync
        self.fetch = fetch
        self.blobs = blobs
        self.verifier = verifier
        self.pool = pool
        self._inputs: dict[bytes, dict[str, list[float]]] = {}
        self._nursery: trio.Nursery | None = None

    def attach(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    # -- requester: a job ----------------------------------------------------------------------

    async def prepare_job(
        self, bundle_path: Path, input_path: Path, max_price: int
    ) -> tuple[Any, tuple[SliceTask, ...], dict[str, list[float]], dict[str, Any], bytes]:
        """Import the bundle (served to provers from here), run the quantised chain once (all
        slice inputs become known) and store each slice's input as a blob."""
        from slicing import api
        from slicing.bundle import load_bundle
        from slicing.errors import SlicingError

        try:
            bundle = load_bundle(bundle_path)
            bundle_id = bytes.fromhex(bundle.bundle_id)
            self.blobs.import_bundle(bundle_path, bundle_id)
            self.blobs.import_srs(bundle)
            inputs = api.read_inputs(bundle, input_path)
            values = await trio.to_thread.run_sync(api.witness_chain_values, bundle, inputs)
        except SlicingError as exc:
            raise MarketError(f"cannot prepare the job: {exc}") from None
        tasks = []
        for entry in bundle.slices:
            i = entry["index"]
            if not entry["proven"]:
                continue  # runs in onnxruntime at the requester; the chain check says so
            slice_inputs = api.get_slice_inputs(bundle, i, values)
            blob = json.dumps(slice_inputs, sort_keys=True, separators=(",", ":")).encode()
            logrows = int(entry["logrows"])
            tasks.append(
                SliceTask(i, compute_slice_input_commitment(bundle, i, values),
                          self.blobs.put(blob), logrows, estimate_memory_mb(logrows), max_price)
            )  # fmt: skip
        if not tasks:
            raise MarketError(f"bundle {bundle_path} has no provable slice")
        names = [t["name"] for t in bundle.manifest["model"]["outputs"]]
        shapes = {t["name"]: t["shape"] for t in bundle.manifest["model"]["outputs"]}
        outputs = {n: {"shape": shapes[n], "data": values[n]} for n in names}
        commitment = bytes.fromhex(api.compute_job_commitment(bundle, inputs))
        return bundle, tuple(tasks), values, outputs, commitment

    # -- peers ---------------------------------------------------------------------------------

    async def ensure_connected(self, peer: PeerId, addrs: tuple[str, ...]) -> None:
        if peer in self.transport.connected_peers():
            return
        for addr in addrs:
            if not addr.endswith(f"/p2p/{peer}") or "/0.0.0.0/" in addr:
                continue
            with trio.move_on_after(CONNECT_TIMEOUT_S):
                try:
                    await self.transport.connect(addr)
                    return
                except P2PError:
                    continue
        # Not connected: the request will say so (or the transport dials by peer id).

    def fetch_entry_soon(self, peer: PeerId, entry_hash: bytes) -> None:
        """A claim was announced: fetch it from its prover now rather than at the next sync."""
        if self._nursery is not None and not self.sync.replica.has_entry(entry_hash):
            self._nursery.start_soon(self.sync.fetch_entries, peer, (entry_hash,))

    async def prewarm(self, statement: ProofStatement, proof: bytes) -> None:
        """Run the EZKL verification the ledger is about to need in a thread (verdicts are
        cached), so the ledger's synchronous check does not block the event loop."""
        await trio.to_thread.run_sync(self.verifier.verify, statement, proof)

    # -- prover ----------------------------------------------------------------------------------

    async def prepare(self, e: ev.Prepare) -> None:
        from slicing.bundle import load_bundle

        peer = PeerId(e.peer)
        await self.ensure_connected(peer, e.addrs)
        bundle_dir = self.blobs.bundle_dir(e.bundle_id)
        if not (bundle_dir / "manifest.json").is_file():
            await self.fetch.fetch_bundle([peer], e.bundle_id)
        bundle = load_bundle(bundle_dir, e.bundle_id.hex())
        await self.fetch.fetch_srs([peer], bundle)
        data = self.blobs.get(e.input_hash)
        if data is None:
            data = await self.fetch.fetch_blob([peer], e.input_hash)
        if len(data) > INPUT_BYTES_MAX:
            raise MarketError("slice input too large")
        values = json.loads(data)
        if compute_slice_input_commitment(bundle, e.slice_index, values) != e.input_commitment:
            raise MarketError("the slice input does not match the award's commitment")
        self._inputs[e.award_ref] = values

    async def prove(self, e: ev.Prove, *, tamper: bool) -> tuple[bytes, float]:
        if self.pool is None:
            raise MarketError("this node does not prove (--no-prove)")
        values = self._inputs.pop(e.award_ref)
        t0 = time.monotonic()
        result = await self.pool.prove(
            self.blobs.bundle_dir(e.bundle_id), e.slice_index, values, tamper=tamper
        )
        return result.proof, time.monotonic() - t0

    def statement_of(self, e: ev.Prove, proof: bytes) -> ProofStatement:
        from slicing.bundle import load_bundle

        bundle = load_bundle(self.blobs.bundle_dir(e.bundle_id), e.bundle_id.hex())
        ic, oc, ih = compute_statement_commitments(bundle, e.slice_index, proof)
        return ProofStatement(e.award_ref, e.bundle_id, e.slice_index, ic, oc, ih)

    # -- requester: proofs and the chain ---------------------------------------------------------

    async def fetch_proof(self, peer: PeerId, blob: bytes, claim: bytes) -> bytes:
        """The proof from the prover's claim entry if we hold it (or can fetch it now), else
        by its sha256 over proof-fetch."""
        from ledger.containers import Claim

        if claim != bytes(32):
            if not self.sync.replica.has_entry(claim):
                await self.sync.fetch_entries(peer, (claim,))
            entry = self.sync.replica.lattice.get_entry(claim)
            if entry is not None and isinstance(entry.op, Claim):
                return entry.op.proof
        return await self.fetch.fetch_blob([peer], blob)

    async def check_proof(self, e: ev.CheckProof) -> str:
        statement = e.signed.statement
        if statement.input_commitment != e.input_commitment:
            return "wrong_input"  # provable on its own: LinkageEvidence
        if statement.slice_index != e.slice_index or statement.bundle_id != e.bundle_id:
            return "statement_mismatch"
        verdict = await trio.to_thread.run_sync(self.verifier.verify, statement, e.proof)
        return {True: "ok", False: "invalid_proof", None: "undecided"}[verdict]

    async def check_chain(self, job: OwnJob, extras: Any) -> tuple[bool, str]:
        from slicing import api
        from slicing.bundle import load_bundle
        from slicing.errors import SlicingError
        from slicing.prover import EzklVerifier, ProofArtifact, get_instances

        bundle = load_bundle(self.blobs.bundle_dir(job.bundle_id), job.bundle_id.hex())
        artifacts = {
            i: ProofArtifact(bundle.bundle_id, i, s.proof, get_instances(s.proof), (), True)
            for i, s in job.slices.items()
        }
        if len(artifacts) < len(bundle.slices):
            return False, f"{len(bundle.slices) - len(artifacts)} slice(s) run unproven"
        claimed = {n: o["data"] for n, o in extras.outputs.items()}
        verifier = EzklVerifier({bundle.bundle_id: bundle}, self.data_dir / "cache")
        try:
            await trio.to_thread.run_sync(
                api.verify_proof_chain, bundle, artifacts, extras.input_commitment.hex(),
                claimed, verifier,
            )  # fmt: skip
        except SlicingError as exc:
            return False, str(exc)
        return True, ""

    def write_result(self, job: OwnJob, extras: Any, paid: dict[str, int]) -> Path:
        from node.identity import compute_peer_id
        from node.results import JobResult, SliceResult, write_result

        slices = []
        for i, s in sorted(job.slices.items()):
            assert s.statement is not None
            st = s.statement.statement
            row = SliceResult(
                i, compute_peer_id(s.prover), s.proof, st.input_commitment.hex(),
                st.output_commitment.hex(), st.instances_hash.hex(), s.price, s.round,
                s.award_ref.hex(),
            )  # fmt: skip
            slices.append(row)
        total = sum(s.price for s in job.slices.values())
        result = JobResult(
            job.job_id.hex(), job.bundle_id.hex(), extras.input_commitment.hex(),
            extras.outputs, tuple(slices), total, extras.input_path.read_bytes(),
        )  # fmt: skip
        write_result(extras.out_dir, result)
        return Path(extras.out_dir)


class BundleWanter:
    """Fetches bundles the proof verifier lacks from peers likely to hold them (the requesters
    of jobs on them, then anyone connected), once at a time per bundle. Thread-safe `want`."""

    def __init__(self, work: MarketWork, holders: Any) -> None:
        self.work = work
        self.holders = holders  # callable: bundle id -> list of peer ids
        self._token: trio.lowlevel.TrioToken | None = None
        self._wanted: set[bytes] = set()

    def attach(self) -> None:
        self._token = trio.lowlevel.current_trio_token()

    def want(self, bundle_id: bytes) -> None:
        if self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):  # the node is stopping
                self._token.run_sync_soon(self._start, bundle_id)

    def _start(self, bundle_id: bytes) -> None:
        if bundle_id in self._wanted or self.work._nursery is None:
            return
        self._wanted.add(bundle_id)
        self.work._nursery.start_soon(self._fetch, bundle_id)

    async def _fetch(self, bundle_id: bytes) -> None:
        from slicing.bundle import load_bundle

        try:
            peers = [PeerId(p) for p in self.holders(bundle_id)]
            peers += [p for p in self.work.transport.connected_peers() if p not in peers]
            with trio.fail_after(600):
                path = await self.work.fetch.fetch_bundle(peers, bundle_id)
                await self.work.fetch.fetch_srs(peers, load_bundle(path, bundle_id.hex()))
        except WORK_ERRORS:
            pass  # asked again the next time a proof on it needs checking
        finally:
            self._wanted.discard(bundle_id)
