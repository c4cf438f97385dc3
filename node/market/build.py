"""Assembling the market of a running node from its parts (used by `node.runtime`)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from ledger.transition import get_account
from node.blobs import BlobStore
from node.config import NodeConfig
from node.fetch import FetchService
from node.identity import NodeIdentity
from node.ledger_sync import LedgerSync
from node.market.core import MarketCore, ProverProfile
from node.market.service import MarketService
from node.market.work import BundleWanter, MarketWork
from node.proof_verifier import BundleProofVerifier, get_data_cache_dir
from node.replica import LedgerReplica
from p2p.abc import Transport

EARLY_CLOSE_MS = 300  # bids arrive within ~100 ms of an announcement on a local network


class ReplicaLedgerView:
    """What the market core reads from the ledger: stakes and the minimum stake."""

    def __init__(self, replica: LedgerReplica) -> None:
        self.replica = replica

    def get_bonded(self, account: bytes) -> int:
        return get_account(self.replica.lattice.state, account).bonded

    @property
    def bond_min(self) -> int:
        return self.replica.env.config.award_bond_min


def build_market(
    config: NodeConfig,
    identity: NodeIdentity,
    transport: Transport,
    replica: LedgerReplica,
    sync: LedgerSync,
    *,
    now_ms: Callable[[], int],
    network_id: bytes,
    rng: random.Random,
    software_version: str,
    ezkl_version: str,
    faults: frozenset[str],
) -> tuple[MarketService, BundleWanter]:
    data_dir = Path(config.data_dir)
    blobs = BlobStore(data_dir)
    fetch = FetchService(identity, transport, blobs, network_id=network_id, now_ms=now_ms)
    verifier = replica.env.verifier
    if not isinstance(verifier, BundleProofVerifier):
        verifier = BundleProofVerifier.for_data_dir(data_dir)
    p = config.prover
    pool = None
    if p.slots > 0:
        from node.prover_pool import ProverPool

        pool = ProverPool(p.slots, get_data_cache_dir(data_dir))
    profile = ProverProfile(
        slots=p.slots,
        price=p.price_per_slice,
        max_logrows=p.max_logrows,
        memory_mb=p.memory_mb_max,
        software_version=software_version,
        ezkl_version=ezkl_version,
        tamper="tamper-proofs" in faults,
        early_close_ms=EARLY_CLOSE_MS,
    )
    expected = (lambda lr: int(pool.expected_s(lr) * 1000)) if pool is not None else None
    core = MarketCore(
        identity.public_key, identity.peer_id, profile, ReplicaLedgerView(replica), rng,
        expected_ms_of=expected,
    )  # fmt: skip
    work = MarketWork(data_dir, transport, sync, fetch, blobs, verifier, pool)
    market = MarketService(
        core, replica, identity, transport, now_ms=now_ms, network_id=network_id, work=work
    )

    def holders(bundle_id: bytes) -> list[str]:
        return [peer for peer, job in core.seen_jobs.values() if job.bundle_id == bundle_id]

    wanter = BundleWanter(work, holders)
    verifier.set_on_missing(wanter.want)
    return market, wanter
