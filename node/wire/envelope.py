"""Signed envelopes: every protocol message on the wire is one canonical msgpack map

    {"type": str, "v": int, "net": 0 or 32 bytes, "signer": 32 bytes, "ts": int ms,
     "body": map, "sig": 64 bytes}

`net` is the network id (the hash of the network's genesis; empty for a node without one, which
runs the mesh only). A message of another network is refused as `WRONG_NETWORK` before its
signature is even checked, so two networks sharing peers never act on each other's messages.
The signature covers a domain-separated canonical encoding of every other field. Decoding is
strict and ordered from cheap to expensive checks: size, msgpack well-formedness, canonical form,
envelope shape, registry (type, version), body schema, timestamp window, signature, and (when a
`ReplayGuard` is given) replay. Every refusal is a `WireError` with a `WireReason`; nothing else
escapes `decode_envelope`.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import msgpack

from ledger.interfaces import SignatureScheme, Signer
from node.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Ed25519Scheme, compute_peer_id
from node.wire.errors import WireError, WireReason
from node.wire.registry import REGISTRY, Registry
from node.wire.schema import body_from_wire, to_wire

ENVELOPE_BYTES_MAX = 512 * 1024  # well under gossipsub's 1 MiB frame limit
SKEW_MS_DEFAULT = 120_000
_SIGNING_DOMAIN = b"dsperse-node/envelope/v2\x00"
_ENVELOPE_KEYS = ["type", "v", "net", "signer", "ts", "body", "sig"]
NETWORK_ID_BYTES = 32
_TYPE_NAME_MAX = 64


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded, verified message: who signed what, when."""

    type: str
    version: int
    network_id: bytes
    signer: bytes
    timestamp_ms: int
    body: Any
    signature: bytes

    @property
    def signer_peer_id(self) -> str:
        return compute_peer_id(self.signer)

    @property
    def digest(self) -> bytes:
        """Stable id of this exact envelope (its signature is part of it)."""
        return hashlib.sha256(_SIGNING_DOMAIN + self.signature).digest()


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def compute_signing_bytes(
    type_name: str,
    version: int,
    network_id: bytes,
    signer: bytes,
    timestamp_ms: int,
    body_wire: Any,
) -> bytes:
    """The bytes a signer signs: domain tag + canonical encoding of all non-signature fields."""
    fields = [type_name, version, network_id, signer, timestamp_ms, body_wire]
    return _SIGNING_DOMAIN + _pack(fields)


def encode_envelope(
    body: Any,
    signer: Signer,
    timestamp_ms: int,
    registry: Registry = REGISTRY,
    *,
    network_id: bytes = b"",
    bytes_max: int = ENVELOPE_BYTES_MAX,
) -> bytes:
    """Sign `body` (an instance of a registered message class) and encode the envelope."""
    if len(network_id) not in (0, NETWORK_ID_BYTES):
        raise ValueError("network_id must be empty or 32 bytes")  # programmer error
    type_name, version = registry.key_of(type(body))
    body_wire = to_wire(body, type(body))
    signature = signer.sign(
        compute_signing_bytes(
            type_name, version, network_id, signer.public_key, timestamp_ms, body_wire
        )
    )
    data = _pack(
        {
            "type": type_name,
            "v": version,
            "net": network_id,
            "signer": signer.public_key,
            "ts": timestamp_ms,
            "body": body_wire,
            "sig": signature,
        }
    )
    if len(data) > bytes_max:
        raise WireError(WireReason.TOO_LARGE, f"{len(data)} > {bytes_max} bytes")
    return data


def _unpack_strict(data: bytes, bytes_max: int) -> Any:
    if len(data) > bytes_max:
        raise WireError(WireReason.TOO_LARGE, f"{len(data)} > {bytes_max} bytes")
    try:
        raw = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=bytes_max,
            max_bin_len=bytes_max,
            max_array_len=4096,
            max_map_len=256,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.exceptions.UnpackException) as exc:
        # ExtraData, FormatError, StackError, UnicodeDecodeError and msgpack's size errors
        # are all ValueError subclasses; unhashable map keys raise TypeError.
        raise WireError(WireReason.MALFORMED, type(exc).__name__) from None
    except RecursionError:
        raise WireError(WireReason.MALFORMED, "nesting too deep") from None
    try:
        canonical = _pack(raw)
    except (ValueError, TypeError, OverflowError):
        raise WireError(WireReason.NOT_CANONICAL, "value cannot be re-encoded") from None
    if canonical != data:
        raise WireError(WireReason.NOT_CANONICAL, "encoding is not canonical")
    return raw


def _check_envelope_shape(raw: Any) -> None:
    if not isinstance(raw, dict) or list(raw.keys()) != _ENVELOPE_KEYS:
        raise WireError(WireReason.BAD_ENVELOPE, f"expected keys {_ENVELOPE_KEYS}")
    checks = [
        ("type", isinstance(raw["type"], str) and 0 < len(raw["type"]) <= _TYPE_NAME_MAX),
        ("v", type(raw["v"]) is int and 0 <= raw["v"] < 2**16),
        ("net", isinstance(raw["net"], bytes) and len(raw["net"]) in (0, NETWORK_ID_BYTES)),
        ("signer", isinstance(raw["signer"], bytes) and len(raw["signer"]) == PUBLIC_KEY_BYTES),
        ("ts", type(raw["ts"]) is int and 0 <= raw["ts"] < 2**63),
        ("sig", isinstance(raw["sig"], bytes) and len(raw["sig"]) == SIGNATURE_BYTES),
    ]
    for name, ok in checks:
        if not ok:
            raise WireError(WireReason.BAD_ENVELOPE, f"field {name!r} has a wrong type or size")


def decode_envelope(
    data: bytes,
    now_ms: int,
    *,
    registry: Registry = REGISTRY,
    scheme: SignatureScheme | None = None,
    skew_ms: int = SKEW_MS_DEFAULT,
    bytes_max: int = ENVELOPE_BYTES_MAX,
    replay_guard: ReplayGuard | None = None,
    network_id: bytes = b"",
) -> Envelope:
    """Decode and fully verify an envelope of network `network_id`, or raise `WireError`.
    Pure unless `replay_guard`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError(WireReason.MALFORMED, "not bytes")
    data = bytes(data)
    raw = _unpack_strict(data, bytes_max)
    _check_envelope_shape(raw)
    if raw["net"] != network_id:
        raise WireError(WireReason.WRONG_NETWORK, raw["net"].hex()[:16] or "none")
    cls = registry.lookup(raw["type"], raw["v"])
    body = body_from_wire(raw["body"], cls)
    ts = raw["ts"]
    if ts < now_ms - skew_ms:
        raise WireError(WireReason.STALE, f"timestamp {now_ms - ts} ms old")
    if ts > now_ms + skew_ms:
        raise WireError(WireReason.FUTURE, f"timestamp {ts - now_ms} ms ahead")
    signing = compute_signing_bytes(
        raw["type"], raw["v"], raw["net"], raw["signer"], ts, raw["body"]
    )
    if not (scheme or _SCHEME).verify(raw["signer"], signing, raw["sig"]):
        raise WireError(WireReason.BAD_SIGNATURE, f"type {raw['type']}")
    envelope = Envelope(raw["type"], raw["v"], raw["net"], raw["signer"], ts, body, raw["sig"])
    if replay_guard is not None:
        replay_guard.check_and_remember(envelope, now_ms)
    return envelope


_SCHEME = Ed25519Scheme()


class ReplayGuard:
    """Remembers accepted envelopes for the skew window, so each is accepted at most once.

    Envelopes older than the window are refused as STALE by `decode_envelope`, so remembering
    digests for `skew_ms` on both sides of now is enough. Memory is bounded by `entries_max`;
    when full, the oldest entries are forgotten first (and counted in `evicted`).
    """

    def __init__(self, skew_ms: int = SKEW_MS_DEFAULT, entries_max: int = 200_000) -> None:
        self._skew_ms = skew_ms
        self._entries_max = entries_max
        self._seen: OrderedDict[bytes, int] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_remember(self, envelope: Envelope, now_ms: int) -> None:
        self._expire(now_ms)
        key = envelope.digest
        if key in self._seen:
            raise WireError(WireReason.REPLAY, f"type {envelope.type}")
        # After ts + skew the envelope is STALE anyway, so it need not be remembered longer.
        self._seen[key] = envelope.timestamp_ms + self._skew_ms + 1
        while len(self._seen) > self._entries_max:
            self._seen.popitem(last=False)
            self.evicted += 1

    def _expire(self, now_ms: int) -> None:
        # Insertion order approximates expiry order; stop at the first live entry.
        while self._seen:
            key, expires = next(iter(self._seen.items()))
            if expires > now_ms:
                break
            del self._seen[key]
