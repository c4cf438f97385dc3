"""The node's local content: content-addressed blobs, bundles by id, and the SRS files bundles name.

    <data dir>/blobs/<sha256 hex>            a blob (a proof, a slice's input file), by its hash
    <data dir>/bundles/<bundle id hex>/      a bundle (manifest.json + slices/NNN/...)
    <data dir>/cache/srs/kzg<logrows>.srs    an SRS, where slicing.srs.get_srs and the proof
                                             verifier look for it (checked against the manifest)

Everything lands under its final name by one rename from a temporary sibling (fsynced first), so
a crash never leaves a half-written file or bundle under a name that readers trust. Blobs are
re-hashed on every read: a corrupt blob is deleted and reported missing (it can be fetched
again). Bundles and SRS files are checked against their ids when imported or fetched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

from node.errors import NodeError
from node.proof_verifier import get_bundle_dir, get_data_cache_dir
from slicing.bundle import MANIFEST_BYTES_MAX, MANIFEST_NAME, Bundle, compute_bundle_id, load_bundle
from slicing.errors import BundleError
from slicing.srs import compute_file_sha256, get_cache_dir

BLOBS_DIR_NAME = "blobs"
BLOB_BYTES_MAX = 64 * 1024 * 1024
HASH_BYTES = 32
_log = logging.getLogger("node.blobs")


class BlobError(NodeError):
    """Content could not be stored or imported (too large, missing source, hash mismatch)."""


def get_srs_path(data_dir: Path, logrows: int) -> Path:
    """Where a node keeps the SRS of `logrows` (slicing.srs.get_srs's cache layout)."""
    return get_data_cache_dir(data_dir) / "srs" / f"kzg{int(logrows)}.srs"


def get_srs_needs(bundle: Bundle) -> dict[int, bytes]:
    """logrows -> SRS sha256, for every logrows the manifest records."""
    out = {}
    for logrows, entry in sorted(bundle.manifest["srs"].items()):
        out[int(logrows)] = bytes.fromhex(entry["sha256"])
    return out


def is_safe_relative_path(path: str) -> bool:
    """A plain relative path inside a folder: no `..`, `.`, empty parts, root or backslashes."""
    if not path or len(path) > 256 or "\\" in path or "\x00" in path:
        return False
    if PurePosixPath(path).is_absolute():
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def get_listed_files(manifest: dict[str, Any]) -> dict[str, str]:
    """Every file a manifest names (bundle-relative path -> sha256 hex), manifest.json excluded.
    Raises BundleError on a path that is not a plain relative path."""
    out: dict[str, str] = {}
    for entry in manifest["slices"]:
        for name, digest in entry["files"].items():
            rel = f"{entry['dir']}/{name}"
            if not is_safe_relative_path(rel):
                raise BundleError(f"manifest lists an unsafe path {rel[:80]!r}")
            out[rel] = str(digest)
    return out


def read_manifest(path: Path, bundle_id: bytes, *, delete: bool = True) -> dict[str, Any] | None:
    """The manifest at `path` if it hashes to `bundle_id`; else None (deleted if `delete`)."""
    try:
        if path.is_symlink() or path.stat().st_size > MANIFEST_BYTES_MAX:
            manifest = None
        else:
            manifest = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        manifest = None
    if isinstance(manifest, dict) and compute_bundle_id(manifest) == bundle_id.hex():
        return manifest
    if delete:
        path.unlink(missing_ok=True)
    return None


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` by tmp + fsync + rename (+ fsync of the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def copy_file_atomic(src: Path, dst: Path, expected_sha256: bytes) -> None:
    """Copy `src` to `dst` through a checked, fsynced temporary sibling."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        if compute_file_sha256(Path(tmp)) != expected_sha256.hex():
            raise BlobError(f"{src}: sha256 is not {expected_sha256.hex()[:16]}…")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)
    fsync_dir(dst.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    def __init__(self, data_dir: Path, *, blob_bytes_max: int = BLOB_BYTES_MAX) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / BLOBS_DIR_NAME
        self.blob_bytes_max = blob_bytes_max
        self.counters: Counter[str] = Counter()

    # -- blobs -------------------------------------------------------------------------------

    def path(self, h: bytes) -> Path:
        if len(h) != HASH_BYTES:
            raise ValueError("a blob hash is 32 bytes")  # programmer error
        return self.root / h.hex()

    def has(self, h: bytes) -> bool:
        return self.path(h).is_file()

    def put(self, data: bytes) -> bytes:
        """Store `data`; its sha256. Storing what is already held is a no-op."""
        if len(data) > self.blob_bytes_max:
            raise BlobError(f"blob of {len(data)} bytes > {self.blob_bytes_max}")
        h = hashlib.sha256(data).digest()
        if not self.has(h):
            write_file_atomic(self.path(h), data)
            self.counters["put"] += 1
        return h

    def get(self, h: bytes) -> bytes | None:
        """The blob `h`, re-hashed; None if missing (a corrupt blob is deleted first)."""
        path = self.path(h)
        try:
            if path.is_symlink() or path.stat().st_size > self.blob_bytes_max:
                self._drop_corrupt(path)
                return None
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if hashlib.sha256(data).digest() != h:
            self._drop_corrupt(path)
            return None
        return data

    def _drop_corrupt(self, path: Path) -> None:
        self.counters["corrupt_deleted"] += 1
        _log.warning("corrupt blob deleted: %s", path)
        path.unlink(missing_ok=True)

    # -- bundles -----------------------------------------------------------------------------

    def bundle_dir(self, bundle_id: bytes) -> Path:
        return get_bundle_dir(self.data_dir, bundle_id)

    def import_bundle(self, src_dir: Path, expected_id: bytes | None = None) -> bytes:
        """Copy the bundle at `src_dir` (its manifest and the files it lists, nothing else) into
        `<data dir>/bundles/<id hex>/`; its id. Checked before and after the copy."""
        try:
            src = load_bundle(Path(src_dir), expected_id.hex() if expected_id else None)
            bundle_id = bytes.fromhex(src.bundle_id)
            final = self.bundle_dir(bundle_id)
            if final.is_dir():
                load_bundle(final, src.bundle_id)
                return bundle_id
            final.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
            try:
                for rel in [MANIFEST_NAME, *get_listed_files(src.manifest)]:
                    (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src.root / rel, staging / rel)
                load_bundle(staging, src.bundle_id)
                self.commit_bundle_dir(staging, final)
            finally:
                if staging.exists():
                    shutil.rmtree(staging)
        except (BundleError, OSError) as exc:
            raise BlobError(f"cannot import bundle {src_dir}: {exc}") from None
        self.counters["bundles_imported"] += 1
        return bundle_id

    def commit_bundle_dir(self, staging: Path, final: Path) -> None:
        """Rename a checked staging folder to its final name (fsync every file first)."""
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                with path.open("rb") as f:
                    os.fsync(f.fileno())
        if final.exists():  # materialised meanwhile by someone else: the same bytes (by id)
            shutil.rmtree(staging)
            return
        os.replace(staging, final)
        fsync_dir(final.parent)

    # -- SRS ---------------------------------------------------------------------------------

    def has_srs(self, logrows: int, sha256: bytes) -> bool:
        path = get_srs_path(self.data_dir, logrows)
        return path.is_file() and compute_file_sha256(path) == sha256.hex()

    def import_srs(
        self, bundle: Bundle, *, srs_file: Path | None = None, cache_dir: Path | None = None
    ) -> dict[int, Path]:
        """Make every SRS `bundle` names available in `<data dir>/cache/srs/`, copied from
        `srs_file` (the ceremony file the builder passed to `slice --srs`) or from the slicing
        cache the builder used (`cache_dir`, default: this machine's, as `dsperse-node slice`
        uses it). Each is checked against the manifest's sha256; logrows -> path."""
        source_cache = get_cache_dir(cache_dir)
        out = {}
        for logrows, sha in get_srs_needs(bundle).items():
            dst = get_srs_path(self.data_dir, logrows)
            out[logrows] = dst
            if dst.is_file():
                if compute_file_sha256(dst) == sha.hex():
                    continue
                raise BlobError(
                    f"{dst} holds another SRS than the bundle names (logrows {logrows})"
                )
            candidates = [srs_file] if srs_file is not None else []
            candidates.append(source_cache / "srs" / f"kzg{logrows}.srs")
            for src in candidates:
                if src is not None and src.is_file() and compute_file_sha256(src) == sha.hex():
                    copy_file_atomic(src, dst, sha)
                    self.counters["srs_imported"] += 1
                    break
            else:
                raise BlobError(f"no SRS for logrows {logrows} with sha256 {sha.hex()[:16]}…")
        return out
