"""Content fetching over `/dsperse/bundle-fetch/1.0.0` (bundle files, SRS files) and
`/dsperse/proof-fetch/1.0.0` (blobs: proofs, slice inputs): a prover gets what it lacks from
any peer that holds it, and checks every byte against the ids it already trusts.

A file moves in chunks of at most `chunk_bytes`, each one request under a timeout, appended to
`<dest>.part`; a fetch that stops (timeout, peer gone, cancelled, crash) continues later at the
size of its `.part` file, from any peer serving the same hash. Every chunk is checked against
the first answer (same total and sha256, exactly the bytes asked for) and the whole file against
the sha256 the caller expects; on a mismatch the `.part` is deleted and the fetch fails. A bundle
is fetched into a hidden staging folder (manifest first, checked against the bundle id, then
every file it lists), loaded with `slicing.bundle.load_bundle` and renamed into place. Concurrent
callers of the same fetch share one transfer; transfers are bounded by `fetches_max`.

Serving is bounded per peer like ledger sync: a token bucket of requests per second and one of
response bytes per second. Requests are signed envelopes of this network, signed by the asking
peer, refused when replayed; paths are served only if the bundle's manifest lists them (or are
`manifest.json`), are plain relative paths and cross no symlink. Every refusal is counted by
reason; bad input never raises.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from node.blobs import (
    BlobStore,
    copy_file_atomic,
    fsync_dir,
    get_listed_files,
    get_srs_needs,
    get_srs_path,
    is_safe_relative_path,
    read_manifest,
)
from node.errors import NodeError
from node.identity import NodeIdentity, compute_peer_id
from node.proof_verifier import get_data_cache_dir
from node.ratelimit import PeerLimits
from node.topics import PROTOCOL_BUNDLE_FETCH, PROTOCOL_PROOF_FETCH
from node.wire import ReplayGuard, WireError, decode_envelope, encode_envelope
from node.wire.fetch_messages import (
    CHUNK_BYTES_MAX,
    FETCH_REQUEST_BYTES_MAX,
    FETCH_RESPONSE_BYTES_MAX,
    KIND_BLOB,
    KIND_BUNDLE_FILE,
    KIND_SRS,
    FetchRequest,
    FetchResponse,
)
from node.wire.ledger_messages import SyncRefused
from p2p.abc import PeerId, Transport
from p2p.errors import P2PError
from slicing.bundle import MANIFEST_BYTES_MAX, MANIFEST_NAME, Bundle, load_bundle
from slicing.errors import BundleError
from slicing.srs import compute_file_sha256

BUNDLE_FILES_MAX = 4096  # files one manifest may make us fetch
MANIFESTS_CACHED_MAX = 16
HASHES_CACHED_MAX = 4096
_KINDS_OF = {
    PROTOCOL_BUNDLE_FETCH: (KIND_BUNDLE_FILE, KIND_SRS),
    PROTOCOL_PROOF_FETCH: (KIND_BLOB,),
}
_log = logging.getLogger("node.fetch")


class FetchFailed(NodeError):
    """A file, bundle, SRS or blob could not be fetched (from this peer, or from any)."""


class _Refusal(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FetchSettings:
    chunk_bytes: int = CHUNK_BYTES_MAX
    request_timeout_s: float = 10.0
    requests_per_s: float = 200.0
    bytes_per_s: int = 64 * 1024 * 1024
    fetches_max: int = 8  # file transfers at a time, in total
    bundle_file_bytes_max: int = 2 << 30
    srs_bytes_max: int = 8 << 30  # logrows 26 is a few GiB

    def __post_init__(self) -> None:
        if not 0 < self.chunk_bytes <= CHUNK_BYTES_MAX:
            raise ValueError(f"chunk_bytes must be in 1..{CHUNK_BYTES_MAX}")


@dataclass(slots=True)
class _Inflight:
    done: trio.Event
    result: Any = None
    error: FetchFailed | None = None


class FetchService:
    def __init__(
        self,
        identity: NodeIdentity,
        transport: Transport,
        store: BlobStore,
        *,
        network_id: bytes,
        now_ms: Callable[[], int],
        settings: FetchSettings | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.identity = identity
        self.transport = transport
        self.store = store
        self.network_id = network_id
        self.settings = settings or FetchSettings()
        self._now_ms = now_ms
        self._clock = clock
        self._guard = ReplayGuard(entries_max=50_000)
        self._limits = PeerLimits(self.settings.requests_per_s, self.settings.bytes_per_s)
        self._manifests: OrderedDict[bytes, dict[str, str | None]] = OrderedDict()
        self._hashes: OrderedDict[str, tuple[int, int, bytes]] = OrderedDict()
        self._inflight: dict[tuple[Any, ...], _Inflight] = {}
        self._limiter = trio.CapacityLimiter(self.settings.fetches_max)
        self.counters: Counter[str] = Counter()
        self.refused_in: Counter[str] = Counter()
        self._last_ts = 0

    def install(self) -> None:
        """Serve both protocols on the transport."""
        for protocol in _KINDS_OF:
            self.transport.set_request_handler(
                protocol, partial(self.handle_request, protocol=protocol)
            )

    # -- client: whole things ----------------------------------------------------------------

    async def fetch_bundle(self, peers: Sequence[PeerId], bundle_id: bytes) -> Path:
        """`<data dir>/bundles/<id hex>/`, fetched from the first of `peers` that serves it."""
        return await self._once(
            (KIND_BUNDLE_FILE, bundle_id), partial(self._bundle, peers, bundle_id)
        )

    async def fetch_srs(self, peers: Sequence[PeerId], bundle: Bundle) -> dict[int, Path]:
        """Every SRS `bundle` names, in `<data dir>/cache/srs/`; logrows -> path."""
        out: dict[int, Path] = {}
        have: dict[bytes, Path] = {}
        for logrows, sha in get_srs_needs(bundle).items():
            dst = out[logrows] = get_srs_path(self.store.data_dir, logrows)
            if dst.is_file():
                if await self._file_sha256(dst) != sha:
                    raise FetchFailed(
                        f"{dst} holds another SRS than bundle {bundle.bundle_id[:16]}…"
                    )
            elif sha in have:  # one ceremony file for several logrows
                await trio.to_thread.run_sync(copy_file_atomic, have[sha], dst, sha)
            else:
                fetch = partial(
                    self._any, peers, KIND_SRS, sha, "", dst, sha, self.settings.srs_bytes_max
                )
                await self._once((KIND_SRS, sha, logrows), fetch)
            have[sha] = dst
        return out

    async def fetch_blob(self, peers: Sequence[PeerId], h: bytes) -> bytes:
        data = self.store.get(h)
        if data is None:
            dest, size_max = self.store.path(h), self.store.blob_bytes_max
            await self._once(
                (KIND_BLOB, h), partial(self._any, peers, KIND_BLOB, h, "", dest, h, size_max)
            )
            data = self.store.get(h)
        if data is None:
            raise FetchFailed(f"blob {h.hex()[:16]}… vanished after its fetch")
        return data

    async def _once(self, key: tuple[Any, ...], fetch: Callable[[], Awaitable[Any]]) -> Any:
        """Run `fetch` once for every concurrent caller with this key; they share its outcome."""
        running = self._inflight.get(key)
        if running is not None:
            self.counters["fetches_joined"] += 1
            await running.done.wait()
            if running.error is not None:
                raise FetchFailed(str(running.error))
            return running.result
        running = self._inflight[key] = _Inflight(trio.Event())
        running.error = FetchFailed("the fetch was cancelled")  # until it succeeds
        try:
            running.result = await fetch()
            running.error = None
            return running.result
        except FetchFailed as exc:
            running.error = exc
            raise
        finally:
            del self._inflight[key]
            running.done.set()

    async def _any(
        self, peers: Sequence[PeerId], kind: str, id: bytes, path: str, dest: Path,
        expected_sha256: bytes | None, size_max: int,
    ) -> Path:  # fmt: skip
        errors = []
        for peer in peers:
            try:
                return await self.fetch_file(peer, kind, id, path, dest, expected_sha256, size_max)
            except FetchFailed as exc:
                errors.append(f"{peer[-8:]}: {exc}")
        raise FetchFailed(f"{kind} {id.hex()[:16]}…: no peer served it ({'; '.join(errors)})"[:600])

    async def _bundle(self, peers: Sequence[PeerId], bundle_id: bytes) -> Path:
        final = self.store.bundle_dir(bundle_id)
        if final.is_dir():
            try:
                await trio.to_thread.run_sync(load_bundle, final, bundle_id.hex())
                return final
            except BundleError as exc:
                raise FetchFailed(f"a damaged bundle is in the way: {exc}") from None
        staging = final.parent / f".{final.name}.fetch"  # fixed name: a restart resumes it
        errors = []
        for peer in peers:
            try:
                await self._bundle_from(peer, bundle_id, staging)
                await trio.to_thread.run_sync(load_bundle, staging, bundle_id.hex())
            except (FetchFailed, BundleError) as exc:
                errors.append(f"{peer[-8:]}: {exc}")
                continue
            await trio.to_thread.run_sync(self.store.commit_bundle_dir, staging, final)
            self.counters["bundles_ok"] += 1
            return final
        self.counters["bundles_failed"] += 1
        raise FetchFailed(
            f"bundle {bundle_id.hex()[:16]}…: no peer served it ({'; '.join(errors)})"[:600]
        )

    async def _bundle_from(self, peer: PeerId, bundle_id: bytes, staging: Path) -> None:
        manifest_path = staging / MANIFEST_NAME
        manifest = read_manifest(manifest_path, bundle_id)
        if manifest is None:
            await self.fetch_file(
                peer,
                KIND_BUNDLE_FILE,
                bundle_id,
                MANIFEST_NAME,
                manifest_path,
                None,
                MANIFEST_BYTES_MAX,
            )
            manifest = read_manifest(manifest_path, bundle_id)
        if manifest is None:
            raise FetchFailed("the manifest does not hash to the bundle id")
        try:
            listed = get_listed_files(manifest)
            wanted = [(rel, bytes.fromhex(digest)) for rel, digest in listed.items()]
        except (BundleError, KeyError, TypeError, AttributeError, ValueError) as exc:
            raise FetchFailed(f"unusable manifest: {exc}"[:200]) from None
        if len(wanted) > BUNDLE_FILES_MAX:
            raise FetchFailed(f"the manifest lists {len(wanted)} files > {BUNDLE_FILES_MAX}")
        for rel, digest in wanted:
            await self.fetch_file(
                peer, KIND_BUNDLE_FILE, bundle_id, rel, staging / rel, digest,
                self.settings.bundle_file_bytes_max,
            )  # fmt: skip

    # -- client: one file --------------------------------------------------------------------

    async def fetch_file(
        self, peer: PeerId, kind: str, id: bytes, path: str, dest: Path,
        expected_sha256: bytes | None, size_max: int,
    ) -> Path:  # fmt: skip
        """Fetch one file from `peer` into `dest` (resuming `<dest>.part`); `dest`."""
        fetch = partial(self._file, peer, kind, id, path, Path(dest), expected_sha256, size_max)
        return await self._once(("file", str(dest)), fetch)  # type: ignore[no-any-return]

    async def _file(
        self, peer: PeerId, kind: str, id: bytes, path: str, dest: Path,
        expected: bytes | None, size_max: int,
    ) -> Path:  # fmt: skip
        async with self._limiter:
            if (
                expected is not None
                and dest.is_file()
                and await self._file_sha256(dest) == expected
            ):
                return dest
            try:
                sha = await self._transfer(peer, kind, id, path, dest, expected, size_max)
            except FetchFailed:
                self.counters["fetches_failed"] += 1
                raise
            except OSError as exc:  # our disk (full, read-only): this fetch fails, not the node
                self.counters["fetches_failed"] += 1
                raise FetchFailed(f"local I/O error on {dest}: {exc}") from None
            part = _part_of(dest)
            if await trio.to_thread.run_sync(compute_file_sha256, part) != sha.hex():
                part.unlink(missing_ok=True)
                self.counters["fetches_failed"] += 1
                self.counters["hash_mismatch"] += 1
                raise FetchFailed(f"{kind} {path or id.hex()[:16]}: sha256 mismatch, discarded")
            with part.open("rb") as f:
                os.fsync(f.fileno())
            os.replace(part, dest)
            fsync_dir(dest.parent)
            self.counters["fetches_ok"] += 1
            return dest

    async def _transfer(
        self, peer: PeerId, kind: str, id: bytes, path: str, dest: Path,
        expected: bytes | None, size_max: int,
    ) -> bytes:  # fmt: skip
        """Append the rest of the file to `<dest>.part`; the sha256 the peer announced."""
        protocol = PROTOCOL_PROOF_FETCH if kind == KIND_BLOB else PROTOCOL_BUNDLE_FETCH
        part = _part_of(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if expected is None:
            part.unlink(missing_ok=True)  # nothing pins the file down: never mix two versions
        first: FetchResponse | None = None
        with part.open("ab") as f:
            offset = f.tell()
            if offset:
                self.counters["fetches_resumed"] += 1
            while True:
                length = self.settings.chunk_bytes
                r = await self._request(
                    peer, protocol, FetchRequest(kind, id, path, offset, length)
                )
                if first is None:
                    _check_first(r, expected, size_max)
                    first = r
                    if offset > r.total:  # a stale .part longer than the file: start again
                        f.truncate(0)
                        offset = 0
                        continue
                _check_chunk(r, first, offset, length)
                f.write(r.data)
                f.flush()
                offset += len(r.data)
                self.counters["bytes_fetched"] += len(r.data)
                if offset == first.total:
                    return first.sha256

    def _stamp(self) -> int:
        # Strictly increasing, as in ledger sync: equal requests must not be equal envelopes.
        self._last_ts = max(self._now_ms(), self._last_ts + 1)
        return self._last_ts

    async def _request(self, peer: PeerId, protocol: str, body: FetchRequest) -> FetchResponse:
        for attempt in range(2):
            answer = await self._exchange(peer, protocol, body)
            if isinstance(answer, FetchResponse):
                return answer
            self.counters[f"refused_by_peer:{answer.reason}"] += 1
            # After a restart we can sign the very envelope our previous run sent (same
            # request, same millisecond): the peer's replay guard refuses it, a new stamp not.
            if answer.reason != "replay" or attempt:
                raise FetchFailed(f"peer refused: {answer.reason}")
        raise AssertionError("unreachable")

    async def _exchange(
        self, peer: PeerId, protocol: str, body: FetchRequest
    ) -> FetchResponse | SyncRefused:
        data = encode_envelope(body, self.identity, self._stamp(), network_id=self.network_id)
        self.counters["requests_out"] += 1
        self.counters["bytes_out"] += len(data)
        timeout_s = self.settings.request_timeout_s
        try:
            with trio.fail_after(timeout_s + 1.0):  # the transport's timeout, and a backstop
                raw = await self.transport.request(peer, protocol, data, timeout_s)
        except (P2PError, trio.TooSlowError) as exc:
            raise FetchFailed(f"request to {peer[-8:]} failed: {exc or 'timeout'}") from None
        self.counters["bytes_in"] += len(raw)
        try:
            envelope = decode_envelope(
                raw, self._now_ms(), bytes_max=FETCH_RESPONSE_BYTES_MAX, network_id=self.network_id
            )
        except WireError as exc:
            raise FetchFailed(f"bad response: {exc}") from None
        if compute_peer_id(envelope.signer) != peer:
            raise FetchFailed("response not signed by the peer")
        if not isinstance(envelope.body, FetchResponse | SyncRefused):
            raise FetchFailed(f"unexpected response {envelope.type}")
        return envelope.body

    async def _file_sha256(self, path: Path) -> bytes:
        """sha256 of a local file, cached by (size, mtime) so big files are hashed once."""
        st = path.stat()
        key = str(path)
        cached = self._hashes.get(key)
        if cached is not None and cached[:2] == (st.st_size, st.st_mtime_ns):
            self._hashes.move_to_end(key)
            return cached[2]
        sha = bytes.fromhex(await trio.to_thread.run_sync(compute_file_sha256, path))
        self._hashes[key] = (st.st_size, st.st_mtime_ns, sha)
        while len(self._hashes) > HASHES_CACHED_MAX:
            self._hashes.popitem(last=False)
        return sha

    # -- server ------------------------------------------------------------------------------

    async def handle_request(
        self, peer: PeerId, data: bytes, protocol: str = PROTOCOL_BUNDLE_FETCH
    ) -> bytes:
        await trio.lowlevel.checkpoint()
        self.counters["requests_in"] += 1
        self.counters["bytes_in"] += len(data)
        now = self._clock()
        if not self._limits.admit(peer, now):
            return self._refuse("rate_limited", 1000)
        try:
            envelope = decode_envelope(
                data, self._now_ms(), bytes_max=FETCH_REQUEST_BYTES_MAX, network_id=self.network_id
            )
            if compute_peer_id(envelope.signer) != peer:
                return self._refuse("signer_mismatch", 0)
            # Remembered only once known to be the peer's own request (see ledger sync).
            self._guard.check_and_remember(envelope, self._now_ms())
        except WireError as exc:
            return self._refuse(exc.reason.value, 0)
        body = envelope.body
        if not isinstance(body, FetchRequest):
            return self._refuse("wrong_type", 0)
        if body.kind not in _KINDS_OF.get(protocol, ()):
            return self._refuse("wrong_kind", 0)
        try:
            response = await self._serve(body)
        except _Refusal as refusal:
            return self._refuse(refusal.reason, 0)
        except OSError:  # a file removed or changed under us while serving
            return self._refuse("unreadable", 0)
        out = encode_envelope(
            response,
            self.identity,
            self._now_ms(),
            network_id=self.network_id,
            bytes_max=FETCH_RESPONSE_BYTES_MAX,
        )
        self._limits.get(peer, now)[1].charge(len(out), now)  # in full: debt is paid by waiting
        self.counters["served"] += 1
        self.counters["bytes_served"] += len(response.data)
        self.counters["bytes_out"] += len(out)
        return out

    async def _serve(self, body: FetchRequest) -> FetchResponse:
        path, sha = await self._locate(body)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as f:
                total = os.fstat(f.fileno()).st_size
                if body.offset > total:
                    raise _Refusal("bad_offset")
                f.seek(body.offset)
                data = f.read(body.length)
        except OSError:
            raise _Refusal("unreadable") from None
        return FetchResponse(total, body.offset, data, sha)

    async def _locate(self, body: FetchRequest) -> tuple[Path, bytes]:
        """The local file a request names and its sha256, or a refusal."""
        if body.kind == KIND_BUNDLE_FILE:
            return await self._locate_bundle_file(body.id, body.path)
        if body.path:
            raise _Refusal("bad_path")
        if body.kind == KIND_BLOB:
            path = self.store.path(body.id)
            if path.is_symlink() or not path.is_file():
                raise _Refusal("unknown_blob")
            if await self._file_sha256(path) != body.id:
                _log.warning("corrupt blob not served: %s", path)
                raise _Refusal("corrupt")
            return path, body.id
        for path in sorted((get_data_cache_dir(self.store.data_dir) / "srs").glob("kzg*.srs")):
            if path.is_file() and await self._file_sha256(path) == body.id:
                return path, body.id
        raise _Refusal("unknown_srs")

    async def _locate_bundle_file(self, bundle_id: bytes, rel: str) -> tuple[Path, bytes]:
        if not is_safe_relative_path(rel):
            raise _Refusal("bad_path")
        root = self.store.bundle_dir(bundle_id)
        listing = self._listing(bundle_id, root)
        if rel not in listing:
            raise _Refusal("not_listed")
        path = root / rel
        # No symlink anywhere between the bundle folder and the file (nor the file itself).
        if os.path.realpath(path) != os.path.join(os.path.realpath(root), rel):
            raise _Refusal("bad_path")
        if not path.is_file():
            raise _Refusal("unreadable")
        sha = await self._file_sha256(path)
        listed = listing[rel]
        if listed is not None and sha.hex() != listed:
            _log.warning("corrupt bundle file not served: %s", path)
            raise _Refusal("corrupt")
        return path, sha

    def _listing(self, bundle_id: bytes, root: Path) -> dict[str, str | None]:
        """Bundle-relative path -> listed sha256 (None for manifest.json), cached per bundle."""
        listing = self._manifests.get(bundle_id)
        if listing is None:
            manifest = read_manifest(root / MANIFEST_NAME, bundle_id, delete=False)
            if manifest is None:
                raise _Refusal("unknown_bundle")
            try:
                listing = dict(get_listed_files(manifest))
            except (BundleError, KeyError, TypeError, AttributeError):
                raise _Refusal("unknown_bundle") from None
            listing[MANIFEST_NAME] = None
            self._manifests[bundle_id] = listing
            while len(self._manifests) > MANIFESTS_CACHED_MAX:
                self._manifests.popitem(last=False)
        return listing

    def _refuse(self, reason: str, retry_after_ms: int) -> bytes:
        self.refused_in[reason] += 1
        out = encode_envelope(
            SyncRefused(reason[:64], retry_after_ms),
            self.identity,
            self._now_ms(),
            network_id=self.network_id,
        )
        self.counters["bytes_out"] += len(out)
        return out

    def statistics(self) -> dict[str, Any]:
        return {
            "counters": dict(self.counters),
            "refused_in": dict(self.refused_in),
            "inflight": len(self._inflight),
            "transfers": self._limiter.borrowed_tokens,
        }


def _part_of(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _check_first(r: FetchResponse, expected: bytes | None, size_max: int) -> None:
    if r.total > size_max:
        raise FetchFailed(f"file of {r.total} bytes > {size_max}")
    if expected is not None and r.sha256 != expected:
        raise FetchFailed("the peer serves another file than the one asked for")


def _check_chunk(r: FetchResponse, first: FetchResponse, offset: int, length: int) -> None:
    if (r.total, r.sha256) != (first.total, first.sha256):
        raise FetchFailed("the file changed between chunks")
    if r.offset != offset:
        raise FetchFailed(f"chunk at offset {r.offset}, asked for {offset}")
    if len(r.data) != min(length, r.total - offset):
        raise FetchFailed(f"chunk of {len(r.data)} bytes, expected {min(length, r.total - offset)}")
