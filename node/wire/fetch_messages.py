"""Content fetching messages: the bodies of `/dsperse/bundle-fetch/1.0.0` (bundle files and SRS
files) and `/dsperse/proof-fetch/1.0.0` (content-addressed blobs: proofs, slice inputs).

A file moves as a sequence of chunk requests, each naming the file (`kind`, `id`, `path`) and a
byte range. Every response repeats the file's total size and sha256, so the asker checks each
chunk against the first answer and the whole file against the hash at the end. A refusal is the
ledger sync protocol's `sync_refused` (same meaning: not now, or not at all, with a reason).
"""

from __future__ import annotations

from dataclasses import dataclass

from node.wire.registry import message
from node.wire.schema import limit

HASH_BYTES = 32
CHUNK_BYTES_MAX = 512 * 1024
FETCH_RESPONSE_BYTES_MAX = CHUNK_BYTES_MAX + 4096  # one chunk in a signed envelope
FETCH_REQUEST_BYTES_MAX = 4096
FILE_BYTES_MAX = 1 << 40  # no file of ours comes near; bounds offsets and totals
PATH_CHARS_MAX = 256
KIND_BUNDLE_FILE = "bundle_file"  # id: bundle id; path: bundle-relative file path
KIND_SRS = "srs"  # id: the SRS file's sha256 (as the bundle manifest records it)
KIND_BLOB = "blob"  # id: the blob's sha256
FETCH_KINDS = (KIND_BUNDLE_FILE, KIND_SRS, KIND_BLOB)


@message("fetch_request", 1)
@dataclass(frozen=True, slots=True)
class FetchRequest:
    """Bytes [offset, offset + length) of one file (fewer at its end)."""

    kind: str = limit(length_min=1, length_max=16)
    id: bytes = limit(length_min=HASH_BYTES, length_max=HASH_BYTES)
    path: str = limit(length_max=PATH_CHARS_MAX)  # "" unless kind is bundle_file
    offset: int = limit(value_max=FILE_BYTES_MAX)
    length: int = limit(value_min=1, value_max=CHUNK_BYTES_MAX)


@message("fetch_response", 1)
@dataclass(frozen=True, slots=True)
class FetchResponse:
    """One chunk: `data` starts at `offset` of a file of `total` bytes hashing to `sha256`."""

    total: int = limit(value_max=FILE_BYTES_MAX)
    offset: int = limit(value_max=FILE_BYTES_MAX)
    data: bytes = limit(length_max=CHUNK_BYTES_MAX)
    sha256: bytes = limit(length_min=HASH_BYTES, length_max=HASH_BYTES)
