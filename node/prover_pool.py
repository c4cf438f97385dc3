"""The prover side of the market: `ProverPool` proves awarded slices, `slots` at a time, each in
its own spawned EZKL worker, without ever blocking the node's trio event loop.

`prove` runs slicing's `EzklProver.prove_slice` in a trio worker thread that only waits on the
spawned worker process (docs/ezkl-pitfalls.md E1, E2); a `trio.CapacityLimiter` of `slots` bounds
how many run at once. Cancelling the calling task sets the job's cancel event
(`slicing.worker.cancel_on`): the worker process is killed within `MONITOR_INTERVAL_S` and `prove`
waits (shielded, bounded by `CANCEL_WAIT_S`) until it is reaped before re-raising, so no EZKL
process outlives its task and a slot frees only when its process is gone.

Proving keys are derived locally and cached under `cache_dir` by slicing (`get_proving_key`,
which checks the derived vk against the manifest's vk hash, docs/ezkl-pitfalls.md E7). The SRS is
never generated here: a prover must use the very SRS the bundle names, so `srs_dir/kzg<logrows>.srs`
must exist (an operator with one ceremony file links it under that name) and hash to the manifest's
sha256; otherwise `SrsMissingError` / `SrsMismatchError`. (`slicing.srs.get_srs` would generate a
dev SRS for a missing file, which could never match a bundle built elsewhere.)

`expected_s(logrows)` is what a proof of that size costs on this machine, pk cached: an EWMA of
the measured times per logrows, kept in `<cache_dir>/prove_times.json` across restarts, else a
built-in figure measured here scaled by 2x per logrow (docs/ezkl-pitfalls.md E4).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import trio

from node.errors import NodeError
from slicing.bundle import Bundle, load_bundle
from slicing.errors import ProofError
from slicing.prover import EzklProver, EzklVerifier, get_instances
from slicing.srs import compute_file_sha256
from slicing.worker import cancel_on

__all__ = [
    "BUILTIN_PROVE_S",
    "PROVE_TIMES_FILE",
    "ProveResult",
    "ProverPool",
    "ProverPoolError",
    "SrsMismatchError",
    "SrsMissingError",
    "tamper_proof",
]

_log = logging.getLogger("node.prover_pool")
T = TypeVar("T")

PROVE_TIMES_FILE = "prove_times.json"
PROVE_TIMES_VERSION = 1
EWMA_ALPHA = 0.3  # weight of the newest measurement
# Wall time of one proof, pk cached (spawn + witness + prove + self-check), by logrows. Measured
# on this machine (2 cores, 24 GiB) on digits slices at logrows 15 (23,716 and 25,764 rows): the
# prove job uses 12.9 CPU-seconds (user 12.2 + sys 0.6), i.e. ~6.5 s of wall on the two cores
# when idle; with other jobs keeping the load average at ~30 it took 14-23 s of wall (EZKL's
# prove 13.9-23.0 s of it). Other sizes double per logrow from the nearest entry
# (docs/ezkl-pitfalls.md E4). The first measured proof of a size replaces the guess.
BUILTIN_PROVE_S: dict[int, float] = {15: 7.0}
# Upper bounds (s) of the prove-time histogram buckets; a last "+Inf" bucket catches the rest.
HISTOGRAM_BOUNDS_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
VERIFY_SLOTS = 2
CANCEL_WAIT_S = 30.0  # a cancelled job's worker dies within ~0.1 s; this only bounds a hang
BUNDLES_CACHED_MAX = 8  # loaded bundles (loading re-hashes every file)
SRS_FILE_FORMAT = "kzg{logrows}.srs"  # the name slicing.srs caches a generated SRS under


class ProverPoolError(NodeError):
    """A slice cannot be proven or checked here (bad index, unprovable slice, no slots...)."""


class SrsMissingError(ProverPoolError):
    """The SRS a bundle names is not on this node (the pool never generates one)."""


class SrsMismatchError(ProverPoolError):
    """The SRS file on this node is not the one the bundle names (sha256 differs)."""


@dataclass(frozen=True)
class ProveResult:
    """A proof of one slice and its figures. `wall_s` runs from taking a slot to the proof
    (setup included when the pk was not cached); `prove_s` is EZKL's prove call alone."""

    proof: bytes  # EZKL's proof JSON
    instances: tuple[str, ...]  # its public instances: the slice's inputs then outputs
    logrows: int
    prove_s: float
    setup_s: float  # 0.0 when the proving key came from the cache
    peak_rss_mb: float
    wall_s: float


def tamper_proof(proof: bytes) -> bytes:
    """Fault injection: `proof` with one byte of the proof proper flipped (and `hex_proof` kept in
    step), instances untouched. It still parses to the same statement but fails verification."""
    try:
        doc = json.loads(proof)
        raw = doc["proof"]
        if not isinstance(raw, list) or not raw:
            raise TypeError("no proof bytes")
        k = len(raw) // 2
        raw[k] = int(raw[k]) ^ 0x01
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ProofError(f"not an EZKL proof ({type(exc).__name__})") from None
    if isinstance(doc.get("hex_proof"), str):
        doc["hex_proof"] = "0x" + bytes(raw).hex()
    return json.dumps(doc).encode()


def _new_histogram() -> dict[str, Any]:
    return {"le": [0] * (len(HISTOGRAM_BOUNDS_S) + 1), "count": 0, "sum_s": 0.0}


@dataclass
class _Estimate:
    ewma_s: float
    samples: int


class ProverPool:
    """Proves and verifies slices of bundles on this machine; safe to share between trio tasks.

    `slots` proofs run at once (0: this node does not prove), `verify_slots` verifications. Keys
    are cached under `cache_dir`; SRS files are read from `srs_dir` (default `cache_dir/srs`).
    """

    def __init__(
        self,
        slots: int,
        cache_dir: Path,
        *,
        srs_dir: Path | None = None,
        verify_slots: int = VERIFY_SLOTS,
        max_rss_mb: float | None = None,
        pk_cache_bytes_max: int | None = None,
        self_check: bool = True,
    ) -> None:
        if slots < 0 or verify_slots < 1:
            raise ValueError(f"slots must be >= 0 and verify_slots >= 1 ({slots}, {verify_slots})")
        self.slots = slots
        self.cache_dir = Path(cache_dir)
        self.srs_dir = Path(srs_dir) if srs_dir is not None else self.cache_dir / "srs"
        self.max_rss_mb = max_rss_mb
        self.pk_cache_bytes_max = pk_cache_bytes_max
        self.self_check = self_check  # verify each proof in its worker before handing it out
        self._prove_limiter = trio.CapacityLimiter(slots)
        self._verify_limiter = trio.CapacityLimiter(verify_slots)
        # Threads that wait on workers: one per slot, and room for abandoned (cancelled) ones
        # whose tokens come back a moment after they end. Not trio's shared default limiter.
        self._threads = trio.CapacityLimiter(2 * (slots + verify_slots))
        self._lock = threading.Lock()  # guards everything below (worker threads write too)
        self._bundles: OrderedDict[tuple[Path, int], Bundle] = OrderedDict()
        self._srs_checked: dict[tuple[Path, int, int], str] = {}  # (path, size, mtime) -> sha
        self._estimates: dict[int, _Estimate] = self._load_estimates()
        self._proofs = {"ok": 0, "failed": 0, "cancelled": 0}
        self._verifies = {"valid": 0, "invalid": 0, "failed": 0, "cancelled": 0}
        self._histograms: dict[int, dict[str, Any]] = {}

    # ---- capacity ----------------------------------------------------------------------------

    @property
    def busy(self) -> int:
        """Slots in use: proofs running (a cancelled one until its worker is reaped)."""
        return int(self._prove_limiter.borrowed_tokens)

    @property
    def free_slots(self) -> int:
        return int(self._prove_limiter.available_tokens)

    # ---- proving and verifying ---------------------------------------------------------------

    async def prove(
        self,
        bundle_dir: Path,
        slice_index: int,
        inputs: Mapping[str, Sequence[float]],
        *,
        tamper: bool = False,
    ) -> ProveResult:
        """Prove slice `slice_index` of the bundle at `bundle_dir` on `inputs` (flat tensors by
        name, e.g. `slicing.api.get_slice_inputs`). `tamper=True` is fault injection: the proof
        returned fails verification (`tamper_proof`). Raises ProverPoolError (or slicing's
        BundleError / ProofError / WorkerError) when it cannot prove."""
        if self.slots == 0:
            raise ProverPoolError("this node has no prover slots")
        try:
            result = await self._run(
                lambda: self._prove_blocking(Path(bundle_dir), slice_index, inputs, tamper),
                self._prove_limiter,
            )
        except Exception:
            self._count(self._proofs, "failed")
            raise
        except BaseException:  # trio.Cancelled (or KeyboardInterrupt): the worker is gone
            self._count(self._proofs, "cancelled")
            raise
        self._count(self._proofs, "ok")
        return result

    async def verify(self, bundle_dir: Path, slice_index: int, proof: bytes) -> bool:
        """Whether `proof` proves slice `slice_index` of the bundle at `bundle_dir` (False for an
        invalid proof, a slice out of range or an unprovable one). Raises when it cannot check:
        a missing or wrong SRS, a broken bundle, a worker failure."""
        try:
            ok = await self._run(
                lambda: self._verify_blocking(Path(bundle_dir), slice_index, proof),
                self._verify_limiter,
            )
        except Exception:
            self._count(self._verifies, "failed")
            raise
        except BaseException:
            self._count(self._verifies, "cancelled")
            raise
        self._count(self._verifies, "valid" if ok else "invalid")
        return ok

    async def _run(self, fn: Callable[[], T], limiter: trio.CapacityLimiter) -> T:
        """`fn()` in a worker thread while holding a `limiter` token. On cancellation kill its
        worker process and wait until the thread is done: the token frees with the process."""
        cancel, started, finished = threading.Event(), threading.Event(), threading.Event()

        def work() -> T:
            started.set()
            try:
                with cancel_on(cancel):
                    return fn()
            finally:
                finished.set()

        # The token is taken here, not by to_thread: an abandoned thread's token would only come
        # back some time after the thread ends, so `busy` would lag behind a cancellation.
        async with limiter:
            try:
                # trio-stubs (trio_typing) predate `abandon_on_cancel`; trio 0.35 has it.
                return await trio.to_thread.run_sync(  # type: ignore[call-arg]
                    work, limiter=self._threads, abandon_on_cancel=True
                )
            except BaseException:
                cancel.set()  # a job not spawned yet never will be
                if started.is_set() and not finished.is_set():
                    with trio.CancelScope(shield=True):
                        done = await trio.to_thread.run_sync(finished.wait, CANCEL_WAIT_S)
                    if not done:
                        _log.warning("a cancelled EZKL job lived on past %.0f s", CANCEL_WAIT_S)
                raise

    def _prove_blocking(
        self,
        bundle_dir: Path,
        index: int,
        inputs: Mapping[str, Sequence[float]],
        tamper: bool,
    ) -> ProveResult:
        t0 = time.monotonic()
        bundle = self._get_bundle(bundle_dir)
        self._require_provable(bundle, index)
        srs = self._require_srs(bundle, index)
        prover = EzklProver(
            self.cache_dir,
            srs_file=srs,
            check=self.self_check,
            max_rss_mb=self.max_rss_mb,
            pk_cache_bytes_max=self.pk_cache_bytes_max,
        )
        art = prover.prove_slice(bundle, index, inputs)
        wall_s = time.monotonic() - t0
        if self.self_check and not art.verified:
            raise ProverPoolError(f"slice {index}: our own proof does not verify")
        logrows = int(bundle.manifest["slices"][index]["logrows"])
        setup_s = float(art.figures["setup_s"])
        self._record(logrows, max(0.0, wall_s - setup_s))
        proof = tamper_proof(art.proof) if tamper else art.proof
        return ProveResult(
            proof=proof,
            instances=get_instances(proof),
            logrows=logrows,
            prove_s=float(art.figures["prove_s"]),
            setup_s=setup_s,
            peak_rss_mb=max(float(art.figures["peak_rss_mb"]), art.figures["setup_peak_rss_mb"]),
            wall_s=wall_s,
        )

    def _verify_blocking(self, bundle_dir: Path, index: int, proof: bytes) -> bool:
        bundle = self._get_bundle(bundle_dir)
        if not 0 <= index < len(bundle.manifest["slices"]) or not bundle.is_proven(index):
            return False
        srs = self._require_srs(bundle, index)
        verifier = EzklVerifier({bundle.bundle_id: bundle}, self.cache_dir, srs)
        return verifier.verify_as(bundle, index, proof)

    # ---- bundles and SRS ---------------------------------------------------------------------

    def _get_bundle(self, bundle_dir: Path) -> Bundle:
        root = bundle_dir.resolve()
        try:
            key = (root, (root / "manifest.json").stat().st_mtime_ns)
        except OSError:
            key = (root, 0)  # load_bundle says what is wrong
        with self._lock:
            bundle = self._bundles.get(key)
            if bundle is not None:
                self._bundles.move_to_end(key)
                return bundle
        bundle = load_bundle(root)  # outside the lock: it hashes every file
        with self._lock:
            self._bundles[key] = bundle
            while len(self._bundles) > BUNDLES_CACHED_MAX:
                self._bundles.popitem(last=False)
        return bundle

    @staticmethod
    def _require_provable(bundle: Bundle, index: int) -> None:
        count = len(bundle.manifest["slices"])
        if not 0 <= index < count:
            raise ProverPoolError(f"bundle {bundle.bundle_id[:12]} has no slice {index} ({count})")
        if not bundle.is_proven(index):
            raise ProverPoolError(f"bundle {bundle.bundle_id[:12]}: slice {index} is not provable")

    def get_srs_path(self, logrows: int) -> Path:
        return self.srs_dir / SRS_FILE_FORMAT.format(logrows=logrows)

    def _require_srs(self, bundle: Bundle, index: int) -> Path:
        """The SRS file slice `index` needs, present and hashing to the manifest's sha256."""
        logrows = int(bundle.manifest["slices"][index]["logrows"])
        path = self.get_srs_path(logrows)
        try:
            st = path.stat()
        except OSError:
            raise SrsMissingError(
                f"no SRS for logrows {logrows} at {path}: bundle {bundle.bundle_id[:12]} needs the "
                f"SRS with sha256 {bundle.get_srs_sha256(logrows)} (a prover never generates one)"
            ) from None
        key = (path, st.st_size, st.st_mtime_ns)
        with self._lock:
            sha = self._srs_checked.get(key)
        if sha is None:
            sha = compute_file_sha256(path)
            with self._lock:
                self._srs_checked[key] = sha
        if sha != bundle.get_srs_sha256(logrows):
            raise SrsMismatchError(
                f"SRS {path} (sha256 {sha[:12]}) is not the one bundle {bundle.bundle_id[:12]} "
                f"names for logrows {logrows} ({bundle.get_srs_sha256(logrows)[:12]})"
            )
        return path

    # ---- estimates and statistics ------------------------------------------------------------

    def expected_s(self, logrows: int) -> float:
        """Expected wall time (s) of one proof at `logrows`, pk cached, on this machine."""
        with self._lock:
            est = self._estimates.get(logrows)
            if est is not None:
                return est.ewma_s
        base = min(BUILTIN_PROVE_S, key=lambda lr: (abs(lr - logrows), lr))
        return BUILTIN_PROVE_S[base] * 2.0 ** (logrows - base)

    def _record(self, logrows: int, seconds: float) -> None:
        with self._lock:
            est = self._estimates.get(logrows)
            if est is None:
                est = self._estimates[logrows] = _Estimate(seconds, 0)
            else:
                est.ewma_s = EWMA_ALPHA * seconds + (1 - EWMA_ALPHA) * est.ewma_s
            est.samples += 1
            hist = self._histograms.setdefault(logrows, _new_histogram())
            bucket = next(
                (k for k, b in enumerate(HISTOGRAM_BOUNDS_S) if seconds <= b),
                len(HISTOGRAM_BOUNDS_S),
            )
            hist["le"][bucket] += 1
            hist["count"] += 1
            hist["sum_s"] += seconds
            self._save_estimates()

    def _load_estimates(self) -> dict[int, _Estimate]:
        path = self.cache_dir / PROVE_TIMES_FILE
        try:
            doc = json.loads(path.read_text())
            if doc.get("version") != PROVE_TIMES_VERSION:
                raise ValueError(f"version {doc.get('version')!r}")
            return {
                int(lr): _Estimate(float(e["ewma_s"]), int(e["samples"]))
                for lr, e in doc["logrows"].items()
            }
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            _log.warning("ignoring %s (%s): starting from the built-in prove times", path, exc)
            return {}

    def _save_estimates(self) -> None:
        """Atomically rewrite prove_times.json (called with the lock held)."""
        doc = {
            "version": PROVE_TIMES_VERSION,
            "logrows": {
                str(lr): {"ewma_s": e.ewma_s, "samples": e.samples}
                for lr, e in sorted(self._estimates.items())
            },
        }
        path = self.cache_dir / PROVE_TIMES_FILE
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
            tmp.replace(path)
        except OSError as exc:
            _log.warning("cannot write %s: %s", path, exc)

    def _count(self, counters: dict[str, int], key: str) -> None:
        with self._lock:
            counters[key] += 1

    def statistics(self) -> dict[str, Any]:
        """Slots, proofs and verifies by outcome, prove-time histograms (cumulative buckets, as
        Prometheus: `le[k]` counts proofs <= `bounds_s[k]`, the last is +Inf) and estimates."""
        with self._lock:
            histograms = {}
            for lr, h in sorted(self._histograms.items()):
                cumulative, total = [], 0
                for n in h["le"]:
                    total += n
                    cumulative.append(total)
                histograms[str(lr)] = {"le": cumulative, "count": h["count"], "sum_s": h["sum_s"]}
            return {
                "slots": self.slots,
                "busy": self.busy,
                "free_slots": self.free_slots,
                "proofs": dict(self._proofs),
                "verifies": dict(self._verifies),
                "prove_s_histogram": {"bounds_s": list(HISTOGRAM_BOUNDS_S), "logrows": histograms},
                "expected_s": {str(lr): e.ewma_s for lr, e in sorted(self._estimates.items())},
            }
