"""Canonical encoding: round trips for every container (hypothesis), strict refusals."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.constants import AMOUNT_MAX
from ledger.containers import (
    Award,
    AwardRecord,
    Bond,
    Claim,
    Entry,
    EntryHeader,
    EquivocationEvidence,
    Escrow,
    ForkEvidence,
    GenesisAllocation,
    GenesisBond,
    InvalidProofEvidence,
    LinkageEvidence,
    ProofStatement,
    Refund,
    SignedStatement,
    Slash,
    Transfer,
    Unbond,
    Withdraw,
)
from ledger.encoding import compute_body_hash, compute_header_hash, decode_entry, encode_entry
from ledger.errors import InvalidTransition, Reason

PROOF_MAX = 4096
b32 = st.binary(min_size=32, max_size=32)
b64 = st.binary(min_size=64, max_size=64)
amounts = st.integers(1, AMOUNT_MAX)
small = st.integers(0, 1000)
headers = st.builds(EntryHeader, b32, small, b32, small, b32, b64)
statements = st.builds(ProofStatement, b32, b32, st.integers(0, 65535), b32, b32, b32)
signed = st.builds(SignedStatement, statements, b32, b32, b64)
proofs = st.binary(max_size=PROOF_MAX)
awards = st.builds(Award, b32, st.integers(0, 65535), st.integers(0, 1024), b32, amounts, b32)
records = st.builds(AwardRecord, headers, awards)
evidence = st.one_of(
    st.builds(ForkEvidence, headers, headers),
    st.builds(EquivocationEvidence, records, signed, signed),
    st.builds(InvalidProofEvidence, records, signed, proofs),
    st.builds(LinkageEvidence, records, signed),
)
operations = st.one_of(
    st.builds(GenesisAllocation, b32, amounts),
    st.builds(Transfer, b32, amounts),
    st.builds(Bond, amounts),
    st.builds(Unbond, amounts),
    st.just(Withdraw()),
    st.builds(Escrow, b32, b32, amounts),
    awards,
    st.builds(Claim, signed, proofs),
    st.builds(Refund, b32),
    st.builds(Slash, evidence),
    st.builds(GenesisBond, b32, amounts),
)


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    op = draw(operations)
    header = EntryHeader(
        draw(b32), draw(small), draw(b32), draw(small), compute_body_hash(op), draw(b64)
    )
    return Entry(header, op, compute_header_hash(header))


@settings(max_examples=400, deadline=None)
@given(entry=entries())
def test_round_trip(entry: Entry) -> None:
    data = encode_entry(entry)
    assert decode_entry(data, PROOF_MAX) == entry
    assert encode_entry(decode_entry(data, PROOF_MAX)) == data


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        decode_entry(data, PROOF_MAX)
    except InvalidTransition as exc:
        assert isinstance(exc.reason, Reason)


@settings(max_examples=200, deadline=None)
@given(entry=entries(), data=st.data())
def test_any_byte_flip_is_refused_or_changes_the_hash(entry: Entry, data: st.DataObject) -> None:
    raw = bytearray(encode_entry(entry))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    try:
        other = decode_entry(bytes(raw), PROOF_MAX)
    except InvalidTransition:
        return
    # Only the signature is outside the hash; anything else changes the entry's identity.
    assert other.hash != entry.hash or other.header.signature != entry.header.signature


def _entry_array(op: list[object]) -> list[object]:
    return [b"\x01" * 32, 0, b"\x00" * 32, 1, b"\x02" * 64, op]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (_entry_array([1, b"\x03" * 32, 0]), Reason.AMOUNT_OUT_OF_RANGE),
        (_entry_array([1, b"\x03" * 32, -5]), Reason.AMOUNT_OUT_OF_RANGE),
        (_entry_array([1, b"\x03" * 32, 2**63]), Reason.AMOUNT_OUT_OF_RANGE),
        (_entry_array([1, b"\x03" * 32, True]), Reason.MALFORMED),
        (_entry_array([1, b"\x03" * 31, 5]), Reason.MALFORMED),
        (_entry_array([1, b"\x03" * 32]), Reason.MALFORMED),
        (_entry_array([42, b"\x03" * 32, 5]), Reason.MALFORMED),
        (_entry_array([10, b"\x03" * 32, 0]), Reason.AMOUNT_OUT_OF_RANGE),
        (_entry_array([10, b"\x03" * 31, 5]), Reason.MALFORMED),
        (_entry_array([10, b"\x03" * 32]), Reason.MALFORMED),
        (_entry_array([9, [7, 1, 2]]), Reason.MALFORMED),
        (_entry_array([7, [[1], 2, 3, 4], b""]), Reason.MALFORMED),
        (_entry_array([8, "text"]), Reason.MALFORMED),
        ([b"\x01" * 32, 0, b"\x00" * 32, 1, b"\x02" * 64], Reason.MALFORMED),
        ({"a": 1}, Reason.MALFORMED),
    ],
)
def test_refusals(raw: object, reason: Reason) -> None:
    with pytest.raises(InvalidTransition) as info:
        decode_entry(msgpack.packb(raw, use_bin_type=True), PROOF_MAX)
    assert info.value.reason is reason


def test_genesis_bond_is_encoded_like_an_allocation_with_kind_10() -> None:
    from ledger.encoding import op_to_array

    assert op_to_array(GenesisBond(b"\x03" * 32, 7)) == [10, b"\x03" * 32, 7]
    assert op_to_array(GenesisAllocation(b"\x03" * 32, 7)) == [0, b"\x03" * 32, 7]


def test_non_canonical_int_is_refused() -> None:
    canonical = encode_entry(
        Entry(
            EntryHeader(b"\x01" * 32, 0, b"\x00" * 32, 1, compute_body_hash(Bond(5)), b"\x02" * 64),
            Bond(5),
            b"",
        )
    )
    # seq 0 as a uint8 (0xcc 0x00) instead of a positive fixint: same value, other bytes.
    at = canonical.index(b"\x00" * 32) - 3
    assert canonical[at] == 0x00
    wide = canonical[:at] + b"\xcc\x00" + canonical[at + 1 :]
    with pytest.raises(InvalidTransition) as info:
        decode_entry(wide, PROOF_MAX)
    assert info.value.reason is Reason.NOT_CANONICAL


def test_oversized_is_refused_before_parsing() -> None:
    with pytest.raises(InvalidTransition) as info:
        decode_entry(b"\x00" * (PROOF_MAX * 3 + 64 * 1024), PROOF_MAX)
    assert info.value.reason is Reason.TOO_LARGE


def test_oversized_proof_is_refused() -> None:
    raw = _entry_array(
        [
            7,
            [
                [b"\x00" * 32] * 2 + [1] + [b"\x00" * 32] * 3,
                b"\x00" * 32,
                b"\x00" * 32,
                b"\x00" * 64,
            ],
            b"\x00" * (PROOF_MAX + 1),
        ]
    )
    with pytest.raises(InvalidTransition) as info:
        decode_entry(msgpack.packb(raw, use_bin_type=True), PROOF_MAX)
    assert info.value.reason is Reason.MALFORMED
