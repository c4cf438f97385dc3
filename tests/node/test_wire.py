"""The wire format: round trips, strict decoding with specific reasons, and fuzzing.

Acceptance (issue #2): every message type round-trips; any single-byte mutation of an encoded
envelope is rejected; 100,000 random/mutated byte strings raise only WireError, counted by reason.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.identity import NodeIdentity
from node.wire import (
    ENVELOPE_BYTES_MAX,
    REGISTRY,
    ReplayGuard,
    WireError,
    WireReason,
    decode_envelope,
    encode_envelope,
)
from node.wire.messages import CapacityAdvert
from node.wire.registry import Registry
from node.wire.schema import limit
from tests.node.wire_strategies import any_message

NOW = 1_790_000_000_000
SIGNER = NodeIdentity.from_seed(b"\x11" * 32)


def advert(**changes: Any) -> CapacityAdvert:
    values: dict[str, Any] = dict(
        free_slots=1,
        total_slots=2,
        price_per_slice=10,
        max_logrows=16,
        memory_mb_max=2048,
        software_version="0.1.0",
        ezkl_version="23.0.5",
        listen_addrs=("/ip4/127.0.0.1/tcp/4001",),
    )
    values.update(changes)
    return CapacityAdvert(**values)


def reason_of(data: bytes, **kwargs: Any) -> WireReason:
    with pytest.raises(WireError) as info:
        decode_envelope(data, kwargs.pop("now_ms", NOW), **kwargs)
    return info.value.reason


def raw_envelope(**changes: Any) -> dict[str, Any]:
    data = encode_envelope(advert(), SIGNER, NOW)
    raw: dict[str, Any] = msgpack.unpackb(data, raw=False)
    raw.update(changes)
    return raw


def test_registry_is_not_empty_and_every_type_is_versioned() -> None:
    keys = [key for key, _ in REGISTRY]
    assert ("capacity_advert", 1) in keys
    assert all(isinstance(v, int) and v >= 1 for _, v in keys)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=any_message(), ts=st.integers(NOW - 100_000, NOW + 100_000))
def test_every_message_type_round_trips(body: Any, ts: int) -> None:
    data = encode_envelope(body, SIGNER, ts)
    envelope = decode_envelope(data, NOW)
    assert envelope.body == body
    assert type(envelope.body) is type(body)
    assert envelope.signer == SIGNER.public_key
    assert envelope.signer_peer_id == SIGNER.peer_id
    assert envelope.timestamp_ms == ts
    assert encode_envelope(body, SIGNER, ts) == data  # deterministic encoding


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=any_message(), data=st.data())
def test_any_single_byte_mutation_is_rejected(body: Any, data: st.DataObject) -> None:
    encoded = bytearray(encode_envelope(body, SIGNER, NOW))
    position = data.draw(st.integers(0, len(encoded) - 1), label="position")
    new_byte = data.draw(st.integers(0, 255).filter(lambda b: b != encoded[position]), label="byte")
    encoded[position] = new_byte
    with pytest.raises(WireError):
        decode_envelope(bytes(encoded), NOW)


def test_fuzz_100k_random_and_mutated_inputs_raise_only_wire_errors() -> None:
    seed = 20261127
    rng = random.Random(seed)
    valid = [
        encode_envelope(advert(free_slots=i % 3, listen_addrs=("a" * i,)), SIGNER, NOW)
        for i in range(16)
    ]
    valid_set = set(valid)
    reasons: Counter[str] = Counter()
    accepted = 0
    for i in range(100_000):
        mode = i % 4
        if mode == 0:  # pure noise, including msgpack-looking prefixes
            blob = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64)))
            if rng.random() < 0.5:
                blob = bytes([rng.choice([0x80 | 6, 0xDE, 0x96, 0xC4, 0xD9])]) + blob
        else:
            base = bytearray(rng.choice(valid))
            for _ in range(rng.randrange(1, 4)):
                if not base:
                    break
                op = rng.choices(range(4), weights=(70, 10, 10, 10))[0]
                pos = rng.randrange(len(base))
                if op == 0:  # overwrite: mostly reaches the schema and signature checks
                    base[pos] = rng.getrandbits(8)
                elif op == 1:
                    del base[pos]
                elif op == 2:
                    base.insert(pos, rng.getrandbits(8))
                else:
                    base = base[:pos]
            blob = bytes(base)
        try:
            decode_envelope(blob, NOW)
            # A "mutation" that still decodes must have restored an original exactly
            # (e.g. a byte overwritten with its own value).
            assert blob in valid_set, f"seed={seed} i={i}: mutated input accepted"
            accepted += 1
        except WireError as exc:
            reasons[exc.reason.value] += 1
        # Any other exception propagates and fails the test, with the seed in the report.
    assert sum(reasons.values()) + accepted == 100_000, f"seed={seed}"
    assert accepted < 100, f"seed={seed}: suspiciously many unchanged inputs"
    print(f"fuzz seed={seed} reasons={dict(sorted(reasons.items()))}")
    assert {"malformed", "not_canonical", "bad_signature"} <= set(reasons)


def test_oversize_is_refused_before_parsing() -> None:
    assert reason_of(b"\x00" * (ENVELOPE_BYTES_MAX + 1)) is WireReason.TOO_LARGE
    big = advert(listen_addrs=tuple("x" * 256 for _ in range(8)))
    data = encode_envelope(big, SIGNER, NOW)
    assert reason_of(data, bytes_max=len(data) - 1) is WireReason.TOO_LARGE


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"", WireReason.MALFORMED),
        (b"\xc1", WireReason.MALFORMED),  # never-used msgpack byte
        (msgpack.packb({"a": 1}) + b"\x00", WireReason.MALFORMED),  # trailing bytes
        (b"\xd1\x00\x01", WireReason.NOT_CANONICAL),  # int16 encoding of 1
        (msgpack.packb([1, 2]), WireReason.BAD_ENVELOPE),
        (msgpack.packb(1.5), WireReason.BAD_ENVELOPE),
    ],
)
def test_malformed_inputs_have_specific_reasons(blob: bytes, reason: WireReason) -> None:
    assert reason_of(blob) is reason


def test_envelope_field_errors() -> None:
    pack = msgpack.packb
    assert reason_of(pack(raw_envelope(signer=b"\x00" * 31))) is WireReason.BAD_ENVELOPE
    assert reason_of(pack(raw_envelope(sig=b"\x00" * 63))) is WireReason.BAD_ENVELOPE
    assert reason_of(pack(raw_envelope(ts=-1))) is WireReason.BAD_ENVELOPE
    assert reason_of(pack(raw_envelope(type="no_such"))) is WireReason.UNKNOWN_TYPE
    assert reason_of(pack(raw_envelope(v=2))) is WireReason.UNSUPPORTED_VERSION
    extra = raw_envelope()
    extra["more"] = 1
    assert reason_of(pack(extra)) is WireReason.BAD_ENVELOPE


def _with_body(**body_changes: Any) -> bytes:
    raw = raw_envelope()
    body = dict(raw["body"])
    for key, value in body_changes.items():
        if value is _DELETE:
            del body[key]
        else:
            body[key] = value
    raw["body"] = body
    return msgpack.packb(raw)


_DELETE = object()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"free_slots": _DELETE}, WireReason.BAD_FIELDS),
        ({"extra": 1}, WireReason.BAD_FIELDS),
        ({"free_slots": "1"}, WireReason.BAD_FIELD_TYPE),
        ({"free_slots": True}, WireReason.BAD_FIELD_TYPE),
        ({"free_slots": 1.0}, WireReason.BAD_FIELD_TYPE),
        ({"software_version": b"0.1"}, WireReason.BAD_FIELD_TYPE),
        ({"listen_addrs": "a"}, WireReason.BAD_FIELD_TYPE),
        ({"listen_addrs": [1]}, WireReason.BAD_FIELD_TYPE),
        ({"free_slots": 5000}, WireReason.VALUE_OUT_OF_RANGE),
        ({"max_logrows": 0}, WireReason.VALUE_OUT_OF_RANGE),
        ({"software_version": "v" * 33}, WireReason.FIELD_TOO_LARGE),
        ({"listen_addrs": ["a"] * 9}, WireReason.FIELD_TOO_LARGE),
        ({"software_version": ""}, WireReason.INVALID_VALUE),
        ({"free_slots": 3}, WireReason.INVALID_VALUE),  # more free than total
    ],
)
def test_body_errors_have_specific_reasons(changes: dict[str, Any], reason: WireReason) -> None:
    assert reason_of(_with_body(**changes)) is reason


def test_field_order_is_part_of_the_canonical_form() -> None:
    raw = raw_envelope()
    raw["body"] = dict(reversed(list(raw["body"].items())))
    assert reason_of(msgpack.packb(raw)) is WireReason.NOT_CANONICAL


def test_signature_covers_every_field() -> None:
    raw = raw_envelope()
    other = NodeIdentity.from_seed(b"\x12" * 32)
    for changes in (
        {"signer": other.public_key},
        {"ts": NOW + 1},
        {"body": {**raw["body"], "price_per_slice": 11}},
        {"sig": other.sign(b"anything")},
    ):
        assert reason_of(msgpack.packb({**raw, **changes})) is WireReason.BAD_SIGNATURE


def test_timestamp_window() -> None:
    data = encode_envelope(advert(), SIGNER, NOW)
    decode_envelope(data, NOW + 120_000)
    decode_envelope(data, NOW - 120_000)
    assert reason_of(data, now_ms=NOW + 120_001) is WireReason.STALE
    assert reason_of(data, now_ms=NOW - 120_001) is WireReason.FUTURE
    assert reason_of(data, now_ms=NOW + 2_000, skew_ms=1_000) is WireReason.STALE


def test_replays_are_rejected_within_the_window_and_forgotten_after() -> None:
    guard = ReplayGuard(skew_ms=1_000)
    first = encode_envelope(advert(), SIGNER, NOW)
    second = encode_envelope(advert(free_slots=0), SIGNER, NOW)
    decode_envelope(first, NOW, skew_ms=1_000, replay_guard=guard)
    decode_envelope(second, NOW, skew_ms=1_000, replay_guard=guard)
    assert reason_of(first, skew_ms=1_000, replay_guard=guard) is WireReason.REPLAY
    assert len(guard) == 2
    # Past the window the envelope is stale, so the guard may forget it.
    assert reason_of(first, now_ms=NOW + 1_001, skew_ms=1_000, replay_guard=guard) is (
        WireReason.STALE
    )
    decode_envelope(encode_envelope(advert(), SIGNER, NOW + 1_001), NOW + 1_001, replay_guard=guard)
    assert len(guard) == 1


def test_replay_guard_memory_is_bounded() -> None:
    guard = ReplayGuard(entries_max=3)
    for i in range(5):
        decode_envelope(
            encode_envelope(advert(price_per_slice=i), SIGNER, NOW), NOW, replay_guard=guard
        )
    assert len(guard) == 3 and guard.evicted == 2


def test_a_registry_refuses_unsupported_field_types() -> None:
    registry = Registry()
    with pytest.raises(TypeError, match="unsupported"):

        @registry.register("bad", 1)
        @dataclass(frozen=True)
        class Bad:
            x: float = limit()

    with pytest.raises(TypeError, match="optional"):

        @registry.register("bad2", 1)
        @dataclass(frozen=True)
        class Bad2:
            x: int | None = limit()
