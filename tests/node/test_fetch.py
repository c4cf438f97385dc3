"""Content fetching (node.fetch) and the local store (node.blobs) over the memory transport: a
real two-slice MLP bundle (logrows 11, built once per module) fetched by a node that lacks it,
its SRS, blobs, a resumed transfer, and every refusal a server counts; hostile servers caught."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from node.blobs import BlobError, BlobStore, get_srs_needs, get_srs_path
from node.fetch import FetchFailed, FetchService, FetchSettings
from node.identity import NodeIdentity
from node.proof_verifier import get_data_cache_dir
from node.topics import PROTOCOL_BUNDLE_FETCH, PROTOCOL_PROOF_FETCH
from node.wire import decode_envelope, encode_envelope
from node.wire.fetch_messages import (
    CHUNK_BYTES_MAX,
    FETCH_RESPONSE_BYTES_MAX,
    KIND_BLOB,
    KIND_BUNDLE_FILE,
    KIND_SRS,
    FetchRequest,
    FetchResponse,
)
from node.wire.ledger_messages import SyncRefused
from p2p.abc import PeerId, TransportSettings
from p2p.memory import MemoryNetwork, MemoryTransport
from slicing import api
from slicing.bundle import MANIFEST_NAME, Bundle, load_bundle
from slicing.srs import compute_file_sha256
from tests.slicing.conftest import MLP_INPUT, SMALL_POLICY, make_mlp_sliced

NETWORK_ID = hashlib.sha256(b"fetch-network").digest()
OTHER_NETWORK = hashlib.sha256(b"another-network").digest()
SMALL = FetchSettings(chunk_bytes=4096, request_timeout_s=5.0)
Handler = Callable[[PeerId, bytes], Awaitable[bytes]]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def identity(i: int) -> NodeIdentity:
    return NodeIdentity.from_seed(hashlib.sha256(b"fetch-%d" % i).digest())


@dataclass(frozen=True)
class Built:
    bundle: Bundle  # where the builder wrote it
    cache_dir: Path  # the builder's slicing cache (its SRS)

    @property
    def bundle_id(self) -> bytes:
        return bytes.fromhex(self.bundle.bundle_id)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    sliced = make_mlp_sliced(with_unprovable=False)
    cache = tmp_path_factory.mktemp("builder-cache")
    opts = api.BuildOptions(budget=sliced.budget, policy=SMALL_POLICY, cache_dir=cache)
    out = tmp_path_factory.mktemp("build") / "mlp"
    return Built(api.write_bundle(sliced, {"x": MLP_INPUT}, {"file": "mlp"}, out, opts), cache)


@dataclass
class Node:
    identity: NodeIdentity
    transport: MemoryTransport
    store: BlobStore
    service: FetchService

    @property
    def peer(self) -> PeerId:
        return PeerId(self.identity.peer_id)

    def restart(self, settings: FetchSettings = SMALL, network_id: bytes = NETWORK_ID) -> None:
        """A fresh service on the same data dir (what a restarted node has)."""
        self.service = make_service(self.identity, self.transport, self.store, settings, network_id)
        self.service.install()


def make_service(
    ident: NodeIdentity,
    transport: Any,
    store: BlobStore,
    settings: FetchSettings = SMALL,
    network_id: bytes = NETWORK_ID,
    clock: Callable[[], float] = trio.current_time,
) -> FetchService:
    return FetchService(
        ident, transport, store, network_id=network_id, now_ms=now_ms, settings=settings,
        clock=clock,
    )  # fmt: skip


@asynccontextmanager
async def mesh(tmp: Path, n: int, settings: FetchSettings = SMALL) -> AsyncIterator[list[Node]]:
    net = MemoryNetwork(5)
    nodes = []
    for i in range(n):
        ident = identity(i)
        transport = net.create(PeerId(ident.peer_id), TransportSettings())
        store = BlobStore(tmp / f"n{i}")
        nodes.append(Node(ident, transport, store, make_service(ident, transport, store, settings)))
    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.transport.run)
            node.service.install()
        for i, a in enumerate(nodes):
            for b in nodes[i + 1 :]:
                await b.transport.connect(a.transport.listen_addrs()[0])
        yield nodes
        nursery.cancel_scope.cancel()


def holder(node: Node, built: Built) -> Bundle:
    """Give `node` the bundle and its SRS, as a requester that built it has them."""
    bundle_id = node.store.import_bundle(built.bundle.root)
    bundle = load_bundle(node.store.bundle_dir(bundle_id), built.bundle.bundle_id)
    node.store.import_srs(bundle, cache_dir=built.cache_dir)
    return bundle


def wrap(node: Node, protocol: str, change: Callable[[FetchRequest, Any], Any]) -> None:
    """Serve `protocol` through the real server, then let `change(request, body)` replace the
    answer's body (re-signed by the node, so only its content lies)."""
    real = node.service.handle_request

    async def handler(peer: PeerId, data: bytes) -> bytes:
        request = decode_envelope(data, now_ms(), network_id=NETWORK_ID).body
        out = await real(peer, data, protocol)
        body = decode_envelope(out, now_ms(), bytes_max=FETCH_RESPONSE_BYTES_MAX,
                               network_id=NETWORK_ID).body  # fmt: skip
        new = await change(request, body)
        if new is body:
            return out
        return encode_envelope(new, node.identity, now_ms(), network_id=NETWORK_ID,
                               bytes_max=FETCH_RESPONSE_BYTES_MAX)  # fmt: skip

    node.transport.set_request_handler(protocol, handler)


# -- the store -------------------------------------------------------------------------------


def test_blob_store_round_trip_corruption_and_limit(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, blob_bytes_max=1000)
    h = store.put(b"proof bytes")
    assert h == hashlib.sha256(b"proof bytes").digest() and store.has(h)
    assert store.path(h) == tmp_path / "blobs" / h.hex()
    assert store.get(h) == b"proof bytes" and store.put(b"proof bytes") == h
    assert sorted(p.name for p in (tmp_path / "blobs").iterdir()) == [h.hex()]  # no tmp left
    store.path(h).write_bytes(b"bit rot")
    assert store.get(h) is None and not store.has(h)
    assert store.counters["corrupt_deleted"] == 1
    assert store.get(hashlib.sha256(b"never stored").digest()) is None
    with pytest.raises(BlobError, match="1001 bytes"):
        store.put(b"x" * 1001)


def test_import_bundle_and_srs(tmp_path: Path, built: Built) -> None:
    store = BlobStore(tmp_path / "n")
    extra = built.bundle.root / "notes.txt"
    extra.write_text("not listed")
    try:
        bundle_id = store.import_bundle(built.bundle.root, built.bundle_id)
    finally:
        extra.unlink()
    root = store.bundle_dir(bundle_id)
    assert bundle_id == built.bundle_id and not (root / "notes.txt").exists()
    bundle = load_bundle(root, built.bundle.bundle_id)
    assert store.import_bundle(built.bundle.root) == bundle_id  # already there: a no-op
    assert [p.name for p in root.parent.iterdir()] == [root.name]  # no staging left
    with pytest.raises(BlobError, match="no SRS for logrows"):
        store.import_srs(bundle, cache_dir=tmp_path / "empty-cache")
    paths = store.import_srs(bundle, cache_dir=built.cache_dir)
    for logrows, sha in get_srs_needs(bundle).items():
        assert paths[logrows] == get_data_cache_dir(tmp_path / "n") / "srs" / f"kzg{logrows}.srs"
        assert compute_file_sha256(paths[logrows]) == sha.hex()
        assert store.has_srs(logrows, sha)
    with pytest.raises(BlobError, match="cannot import"):
        store.import_bundle(built.bundle.root, hashlib.sha256(b"another id").digest())


# -- fetching --------------------------------------------------------------------------------


async def test_bundle_and_srs_are_fetched_by_a_node_lacking_them(
    tmp_path: Path, built: Built
) -> None:
    async with mesh(tmp_path, 3) as (requester, empty, prover):
        held = holder(requester, built)
        # The first peer lacks the bundle: the prover moves on to the next.
        root = await prover.service.fetch_bundle([empty.peer, requester.peer], built.bundle_id)
        assert root == prover.store.bundle_dir(built.bundle_id)
        bundle = load_bundle(root, built.bundle.bundle_id)
        assert empty.service.refused_in["unknown_bundle"] == 1
        assert [p.name for p in root.parent.iterdir()] == [root.name]  # staging renamed away
        files = 1 + sum(len(s["files"]) for s in held.manifest["slices"])
        assert prover.service.counters["fetches_ok"] == files
        asked = prover.service.counters["requests_out"]
        assert await prover.service.fetch_bundle([requester.peer], built.bundle_id) == root
        assert prover.service.counters["requests_out"] == asked  # held: nothing asked

        paths = await prover.service.fetch_srs([requester.peer], bundle)
        for logrows, sha in get_srs_needs(bundle).items():
            assert paths[logrows] == get_srs_path(prover.store.data_dir, logrows)
            assert compute_file_sha256(paths[logrows]) == sha.hex()
        stats = prover.service.statistics()
        assert stats["counters"]["bytes_in"] > stats["counters"]["bytes_fetched"] > 0
        assert requester.service.statistics()["counters"]["served"] > 0


async def test_srs_of_another_bundle_in_the_way_is_refused(tmp_path: Path, built: Built) -> None:
    async with mesh(tmp_path, 2) as (requester, prover):
        bundle = holder(requester, built)
        for logrows in get_srs_needs(bundle):
            path = get_srs_path(prover.store.data_dir, logrows)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"someone else's SRS")
        with pytest.raises(FetchFailed, match="another SRS"):
            await prover.service.fetch_srs([requester.peer], bundle)


async def test_blob_round_trip_and_shared_concurrent_fetch(tmp_path: Path) -> None:
    data = os.urandom(3 * 4096 + 17)
    async with mesh(tmp_path, 2) as (a, b):
        h = a.store.put(data)
        got: list[bytes] = []
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(lambda: _append(got, b.service.fetch_blob([a.peer], h)))
        assert got == [data] * 3 and b.store.get(h) == data
        assert b.service.counters["fetches_joined"] == 2
        assert a.service.counters["served"] == 4  # one transfer of four chunks
        missing = hashlib.sha256(b"nobody has this").digest()
        with pytest.raises(FetchFailed, match="unknown_blob"):
            await b.service.fetch_blob([a.peer], missing)
        assert a.service.refused_in["unknown_blob"] == 1
        assert not b.store.has(missing) and b.service.counters["fetches_failed"] == 1


async def _append(out: list[bytes], fetch: Awaitable[bytes]) -> None:
    out.append(await fetch)


async def test_interrupted_fetch_resumes_at_the_part_size(tmp_path: Path) -> None:
    data = os.urandom(10 * 4096)
    async with mesh(tmp_path, 2) as (a, b):
        h = a.store.put(data)
        offsets: list[int] = []
        five = trio.Event()

        async def stall_after_five(request: FetchRequest, body: Any) -> Any:
            offsets.append(request.offset)
            if len(offsets) > 5:
                five.set()
                await trio.sleep_forever()
            return body

        wrap(a, PROTOCOL_PROOF_FETCH, stall_after_five)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.service.fetch_blob, [a.peer], h)
            await five.wait()
            nursery.cancel_scope.cancel()  # the prover stops (or dies) mid-way
        part = b.store.path(h).with_name(h.hex() + ".part")
        assert part.stat().st_size == 5 * 4096 and not b.store.has(h)

        served: list[int] = []

        async def record(request: FetchRequest, body: Any) -> Any:
            if isinstance(body, FetchResponse):
                served.append(body.offset)
            return body

        wrap(a, PROTOCOL_PROOF_FETCH, record)
        b.restart()
        assert await b.service.fetch_blob([a.peer], h) == data
        assert served == [5 * 4096 + i * 4096 for i in range(5)]
        assert b.service.counters["fetches_resumed"] == 1 and not part.exists()


async def _unchanged(request: FetchRequest, body: Any) -> Any:
    return body


async def test_tampered_chunk_fails_and_nothing_is_materialised(
    tmp_path: Path, built: Built
) -> None:
    async with mesh(tmp_path, 2) as (requester, prover):
        holder(requester, built)
        target = "slices/000/model.compiled"

        async def flip(request: FetchRequest, body: Any) -> Any:
            if request.path != target or not isinstance(body, FetchResponse) or body.offset:
                return body
            data = bytes([body.data[0] ^ 1]) + body.data[1:]
            return FetchResponse(body.total, body.offset, data, body.sha256)

        wrap(requester, PROTOCOL_BUNDLE_FETCH, flip)
        with pytest.raises(FetchFailed, match="sha256 mismatch"):
            await prover.service.fetch_bundle([requester.peer], built.bundle_id)
        final = prover.store.bundle_dir(built.bundle_id)
        staging = final.parent / f".{final.name}.fetch"
        assert not final.exists() and not (staging / (target + ".part")).exists()
        assert prover.service.counters["hash_mismatch"] == 1
        assert prover.service.counters["bundles_failed"] == 1

        asked: list[str] = []

        async def record(request: FetchRequest, body: Any) -> Any:
            asked.append(request.path)
            return body

        wrap(requester, PROTOCOL_BUNDLE_FETCH, record)  # honest again
        await prover.service.fetch_bundle([requester.peer], built.bundle_id)
        load_bundle(final, built.bundle.bundle_id)
        assert asked[0] == target and MANIFEST_NAME not in asked  # what was checked is kept


@pytest.mark.parametrize(
    "lie",
    ["more_bytes", "total_changes", "too_large", "wrong_offset", "other_signer", "other_sha"],
)
async def test_a_hostile_server_is_caught(tmp_path: Path, lie: str) -> None:
    data = os.urandom(3 * 4096)
    async with mesh(tmp_path, 2) as (a, b):
        h = a.store.put(data)
        stranger = identity(99)

        async def hostile(request: FetchRequest, body: FetchResponse) -> Any:
            total, offset, chunk, sha = body.total, body.offset, body.data, body.sha256
            if lie == "more_bytes":
                chunk = data[offset : offset + request.length + 1]
            elif lie == "total_changes" and offset:
                total += 4096
            elif lie == "too_large":
                total = 1 << 30
            elif lie == "wrong_offset" and offset:
                offset += 1
            elif lie == "other_sha":
                sha = hashlib.sha256(b"other").digest()
            return FetchResponse(total, offset, chunk, sha)

        if lie == "other_signer":

            async def forged(peer: PeerId, raw: bytes) -> bytes:
                out = await a.service.handle_request(peer, raw, PROTOCOL_PROOF_FETCH)
                body = decode_envelope(out, now_ms(), bytes_max=FETCH_RESPONSE_BYTES_MAX,
                                       network_id=NETWORK_ID).body  # fmt: skip
                return encode_envelope(body, stranger, now_ms(), network_id=NETWORK_ID,
                                       bytes_max=FETCH_RESPONSE_BYTES_MAX)  # fmt: skip

            a.transport.set_request_handler(PROTOCOL_PROOF_FETCH, forged)
        else:
            wrap(a, PROTOCOL_PROOF_FETCH, hostile)
        dest = tmp_path / "out" / "blob"
        with pytest.raises(FetchFailed):
            await b.service.fetch_file(a.peer, KIND_BLOB, h, "", dest, h, 1 << 20)
        assert not dest.exists()
        assert b.service.counters["fetches_failed"] == 1


# -- refusals (the server, called directly) ------------------------------------------------


class Asker:
    """Signs requests as one peer and hands them to a service, as its transport would."""

    def __init__(self, service: FetchService, ident: NodeIdentity) -> None:
        self.service, self.ident, self.ts = service, ident, now_ms()

    def envelope(self, body: Any, network_id: bytes = NETWORK_ID) -> bytes:
        self.ts += 1
        return encode_envelope(body, self.ident, self.ts, network_id=network_id)

    async def send(
        self, data: bytes, protocol: str = PROTOCOL_BUNDLE_FETCH, peer: str | None = None
    ) -> Any:
        out = await self.service.handle_request(PeerId(peer or self.ident.peer_id), data, protocol)
        return decode_envelope(out, now_ms(), bytes_max=FETCH_RESPONSE_BYTES_MAX,
                               network_id=NETWORK_ID).body  # fmt: skip

    async def ask(self, body: Any, protocol: str = PROTOCOL_BUNDLE_FETCH, **kw: Any) -> Any:
        return await self.send(self.envelope(body, **kw), protocol)


async def test_every_refusal_is_counted_by_reason(tmp_path: Path, built: Built) -> None:
    net = MemoryNetwork(1)
    store = BlobStore(tmp_path / "server")
    (tmp_path / "server").mkdir()
    (tmp_path / "server" / "identity.key").write_bytes(b"secret")
    bundle_id = store.import_bundle(built.bundle.root)
    bundle = load_bundle(store.bundle_dir(bundle_id))
    store.import_srs(bundle, cache_dir=built.cache_dir)
    blob = store.put(b"a proof")
    server = make_service(identity(0), net.create(PeerId(identity(0).peer_id)), store)
    asker = Asker(server, identity(1))

    def file(path: str, offset: int = 0, length: int = 4096, id: bytes = bundle_id) -> Any:
        return FetchRequest(KIND_BUNDLE_FILE, id, path, offset, length)

    got = await asker.ask(file(MANIFEST_NAME))
    assert isinstance(got, FetchResponse) and got.total == len(got.data) > 0
    srs_sha = next(iter(get_srs_needs(bundle).values()))
    got = await asker.ask(FetchRequest(KIND_SRS, srs_sha, "", 0, 16))
    assert isinstance(got, FetchResponse) and got.sha256 == srs_sha
    got = await asker.ask(FetchRequest(KIND_BLOB, blob, "", 0, 16), PROTOCOL_PROOF_FETCH)
    assert isinstance(got, FetchResponse) and got.data == b"a proof"

    nobody = hashlib.sha256(b"unknown").digest()
    cases: list[tuple[Any, str, dict[str, Any]]] = [
        (file("../../identity.key"), "bad_path", {}),
        (file("/etc/passwd"), "bad_path", {}),
        (file("slices/000/../../../identity.key"), "bad_path", {}),
        (file("slices/000/pk.key"), "not_listed", {}),
        (file(MANIFEST_NAME, id=nobody), "unknown_bundle", {}),
        (file(MANIFEST_NAME, offset=1 << 30), "bad_offset", {}),
        (file(MANIFEST_NAME, length=CHUNK_BYTES_MAX + 1), "value_out_of_range", {}),
        (FetchRequest(KIND_SRS, nobody, "", 0, 16), "unknown_srs", {}),
        (FetchRequest(KIND_SRS, srs_sha, "x", 0, 16), "bad_path", {}),
        (FetchRequest(KIND_BLOB, nobody, "", 0, 16), "wrong_kind", {}),  # wrong protocol
        (FetchRequest("nonsense", nobody, "", 0, 16), "wrong_kind", {}),
        (SyncRefused("not a request", 0), "wrong_type", {}),
        (file(MANIFEST_NAME), "wrong_network", {"network_id": OTHER_NETWORK}),
    ]
    for body, reason, kw in cases:
        answer = await asker.ask(body, **kw)
        assert isinstance(answer, SyncRefused) and answer.reason == reason, (body, answer)
    answer = await asker.ask(FetchRequest(KIND_BLOB, nobody, "", 0, 16), PROTOCOL_PROOF_FETCH)
    assert answer.reason == "unknown_blob"
    assert (await asker.send(b"\xc1garbage")).reason == "malformed"

    # Signed by someone else than the asking peer; then the same request replayed.
    forged = Asker(server, identity(2)).envelope(file(MANIFEST_NAME))
    assert (await asker.send(forged, peer=identity(1).peer_id)).reason == "signer_mismatch"
    once = asker.envelope(file(MANIFEST_NAME))
    assert isinstance(await asker.send(once), FetchResponse)
    assert (await asker.send(once)).reason == "replay"

    # A listed file swapped for a symlink out of the bundle, and a symlinked slice folder.
    root = store.bundle_dir(bundle_id)
    settings = root / "slices" / "000" / "settings.json"
    settings.unlink()
    settings.symlink_to(tmp_path / "server" / "identity.key")
    assert (await asker.ask(file("slices/000/settings.json"))).reason == "bad_path"
    shutil.move(root / "slices" / "001", tmp_path / "elsewhere")
    (root / "slices" / "001").symlink_to(tmp_path / "elsewhere")
    assert (await asker.ask(file("slices/001/settings.json"))).reason == "bad_path"
    (tmp_path / "elsewhere" / "vk.key").write_bytes(b"not the listed vk")
    (root / "slices" / "001").unlink()
    shutil.move(tmp_path / "elsewhere", root / "slices" / "001")
    assert (await asker.ask(file("slices/001/vk.key"))).reason == "corrupt"

    expected = {"bad_path": 6, "unknown_blob": 1, "wrong_kind": 2, "malformed": 1, "replay": 1}
    for reason, count in expected.items():
        assert server.refused_in[reason] == count, reason
    assert sum(server.refused_in.values()) == len(cases) + 7
    assert server.statistics()["refused_in"] == dict(server.refused_in)


async def test_rate_limits_per_peer(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    small, big = store.put(b"a proof"), store.put(os.urandom(4096))
    now = [0.0]
    settings = FetchSettings(requests_per_s=1.0, bytes_per_s=1000)
    net = MemoryNetwork(1)
    server = make_service(identity(0), net.create(PeerId(identity(0).peer_id)), store,
                          settings, clock=lambda: now[0])  # fmt: skip
    one, two = Asker(server, identity(1)), Asker(server, identity(2))

    async def ask(asker: Asker, h: bytes) -> Any:
        return await asker.ask(FetchRequest(KIND_BLOB, h, "", 0, 4096), PROTOCOL_PROOF_FETCH)

    # Bursts are twice the rates: two requests, 2000 response bytes.
    assert isinstance(await ask(one, small), FetchResponse)
    assert isinstance(await ask(one, small), FetchResponse)
    assert (await ask(one, small)).reason == "rate_limited"  # requests
    assert isinstance(await ask(two, small), FetchResponse)  # buckets are per peer
    now[0] = 1.0
    assert isinstance(await ask(one, big), FetchResponse)  # the bytes bucket goes negative
    now[0] = 2.0
    assert (await ask(one, big)).reason == "rate_limited"  # bytes: still below zero
    now[0] = 5.0
    assert isinstance(await ask(one, big), FetchResponse)
    assert server.refused_in == {"rate_limited": 2}


async def test_wrong_network_over_the_transport(tmp_path: Path) -> None:
    async with mesh(tmp_path, 2) as (a, b):
        h = a.store.put(b"a proof")
        b.restart(network_id=OTHER_NETWORK)
        with pytest.raises(FetchFailed, match="bad response: wrong_network"):
            await b.service.fetch_blob([a.peer], h)
        assert a.service.refused_in["wrong_network"] == 1


def test_fuzzed_requests_never_raise_and_every_refusal_is_counted(
    tmp_path: Path, built: Built
) -> None:
    store = BlobStore(tmp_path / "server")
    bundle_id = store.import_bundle(built.bundle.root)
    bundle = load_bundle(store.bundle_dir(bundle_id))
    store.import_srs(bundle, cache_dir=built.cache_dir)
    blob = store.put(b"a proof" * 100)
    net = MemoryNetwork(1)
    roomy = FetchSettings(requests_per_s=1e9, bytes_per_s=1 << 40)
    server = make_service(identity(0), net.create(PeerId(identity(0).peer_id)), store, roomy,
                          clock=lambda: 0.0)  # fmt: skip
    asker = Asker(server, identity(1))
    srs = next(iter(get_srs_needs(bundle).values()))
    listed = [MANIFEST_NAME, *(f"{s['dir']}/{n}" for s in bundle.slices for n in s["files"])]
    paths = st.sampled_from([*listed, "", "..", "../identity.key", "slices/000", "/x"]) | st.text(
        max_size=40
    )
    offsets, lengths = st.integers(0, 3000) | st.integers(0, 1 << 40), st.integers(1, 1 << 19)

    def named(kind: str, h: bytes, path: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
        return st.builds(FetchRequest, st.just(kind), st.just(h), path, offsets, lengths)

    requests = (
        named(KIND_BUNDLE_FILE, bundle_id, st.sampled_from(listed))
        | named(KIND_SRS, srs, st.just(""))
        | named(KIND_BLOB, blob, st.just(""))
        | st.builds(
            FetchRequest,
            kind=st.sampled_from([KIND_BUNDLE_FILE, KIND_SRS, KIND_BLOB]) | st.text(max_size=16),
            id=st.sampled_from([bundle_id, srs, blob]) | st.binary(min_size=32, max_size=32),
            path=paths,
            offset=offsets,
            length=lengths,
        )
    )

    @settings(max_examples=300, deadline=None)
    @given(
        body=requests,
        protocol=st.sampled_from([PROTOCOL_BUNDLE_FETCH, PROTOCOL_PROOF_FETCH]),
        junk=st.none() | st.binary(max_size=200),
    )
    def prop(body: FetchRequest, protocol: str, junk: bytes | None) -> None:
        before = sum(server.refused_in.values())
        data = junk if junk is not None else asker.envelope(body)
        answer = trio.run(asker.send, data, protocol)
        if isinstance(answer, SyncRefused):
            assert sum(server.refused_in.values()) == before + 1
            return
        assert isinstance(answer, FetchResponse) and junk is None
        if body.kind == KIND_BUNDLE_FILE:
            assert protocol == PROTOCOL_BUNDLE_FETCH and body.path in listed
            source = store.bundle_dir(bundle_id) / body.path
        elif body.kind == KIND_SRS:
            assert protocol == PROTOCOL_BUNDLE_FETCH and body.id == srs and body.path == ""
            source = next(iter(store.import_srs(bundle).values()))
        else:
            assert protocol == PROTOCOL_PROOF_FETCH and body.id == blob and body.path == ""
            source = store.path(blob)
        content = source.read_bytes()
        assert answer.total == len(content) and answer.sha256 == hashlib.sha256(content).digest()
        assert answer.data == content[body.offset : body.offset + body.length]

    prop()
    assert server.counters["served"] > 20 and len(server.refused_in) > 5
