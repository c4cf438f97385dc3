"""Canonical msgpack encoding of entries (positional arrays), strict decoding, and hashing.

An entry on the wire is `[account, seq, prev, height, signature, op]`, where `op` is
`[kind, *fields]` with nested containers as arrays. Exactly one byte string encodes a given entry:
decoding re-encodes and refuses anything that differs (no malleable duplicates). The entry hash
covers the header and the hash of the operation, so evidence can carry a header without its body.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import msgpack

from ledger.constants import (
    AMOUNT_MAX,
    DOMAIN_BODY,
    DOMAIN_ENTRY,
    DOMAIN_OFFENCE,
    DOMAIN_PROOF,
    DOMAIN_STATEMENT,
    ENTRY_OVERHEAD_BYTES_MAX,
    HASH_BYTES,
    HEIGHT_MAX,
    KEY_BYTES,
    ROUND_MAX,
    SEQ_MAX,
    SIGNATURE_BYTES,
    SLICE_INDEX_MAX,
)
from ledger.containers import (
    Award,
    AwardRecord,
    Bond,
    Claim,
    Entry,
    EntryHeader,
    EquivocationEvidence,
    Escrow,
    Evidence,
    ForkEvidence,
    GenesisAllocation,
    GenesisBond,
    InvalidProofEvidence,
    LinkageEvidence,
    Operation,
    ProofStatement,
    Refund,
    SignedStatement,
    Slash,
    Transfer,
    Unbond,
    Withdraw,
)
from ledger.errors import InvalidTransition, Reason

_pack = msgpack.Packer(use_bin_type=True).pack


def pack(value: object) -> bytes:
    """Canonical msgpack of plain values (ints, bytes, lists)."""
    packed: bytes = _pack(value)
    return packed


def compute_hash(domain: bytes, data: bytes) -> bytes:
    return hashlib.sha256(domain + data).digest()


# ---------------------------------------------------------------------------- to arrays


def statement_to_array(s: ProofStatement) -> list[object]:
    return [
        s.award_ref,
        s.bundle_id,
        s.slice_index,
        s.input_commitment,
        s.output_commitment,
        s.instances_hash,
    ]


def signed_statement_to_array(s: SignedStatement) -> list[object]:
    return [statement_to_array(s.statement), s.proof_hash, s.prover, s.signature]


def header_to_array(h: EntryHeader) -> list[object]:
    return [h.account, h.seq, h.prev, h.height, h.body_hash, h.signature]


def evidence_to_array(e: Evidence) -> list[object]:
    if isinstance(e, ForkEvidence):
        return [e.KIND, header_to_array(e.first), header_to_array(e.second)]
    record = [header_to_array(e.award.header), op_to_array(e.award.award)]
    if isinstance(e, EquivocationEvidence):
        first, second = signed_statement_to_array(e.first), signed_statement_to_array(e.second)
        return [e.KIND, record, first, second]
    if isinstance(e, InvalidProofEvidence):
        return [e.KIND, record, signed_statement_to_array(e.statement), e.proof]
    return [e.KIND, record, signed_statement_to_array(e.statement)]


def op_to_array(op: Operation) -> list[object]:
    if isinstance(op, GenesisAllocation | Transfer | GenesisBond):
        return [op.KIND, op.recipient, op.amount]
    if isinstance(op, Bond | Unbond):
        return [op.KIND, op.amount]
    if isinstance(op, Withdraw):
        return [op.KIND]
    if isinstance(op, Escrow):
        return [op.KIND, op.job_id, op.bundle_id, op.amount]
    if isinstance(op, Award):
        return [
            op.KIND,
            op.job_id,
            op.slice_index,
            op.round,
            op.prover,
            op.price,
            op.input_commitment,
        ]
    if isinstance(op, Claim):
        return [op.KIND, signed_statement_to_array(op.statement), op.proof]
    if isinstance(op, Refund):
        return [op.KIND, op.job_id]
    return [op.KIND, evidence_to_array(op.evidence)]


# ---------------------------------------------------------------------------- hashes


def compute_body_hash(op: Operation) -> bytes:
    return compute_hash(DOMAIN_BODY, pack(op_to_array(op)))


def compute_entry_hash(account: bytes, seq: int, prev: bytes, height: int, body: bytes) -> bytes:
    """What the account signs: the header without its signature."""
    return compute_hash(DOMAIN_ENTRY, pack([account, seq, prev, height, body]))


def compute_header_hash(h: EntryHeader) -> bytes:
    return compute_entry_hash(h.account, h.seq, h.prev, h.height, h.body_hash)


def compute_statement_digest(statement: ProofStatement, proof_hash: bytes) -> bytes:
    """What a prover signs: the statement and the hash of the proof it publishes with it."""
    return compute_hash(DOMAIN_STATEMENT, pack([statement_to_array(statement), proof_hash]))


def compute_proof_hash(proof: bytes) -> bytes:
    return compute_hash(DOMAIN_PROOF, proof)


def compute_offence_id(kind: int, offender: bytes, slot: bytes) -> bytes:
    """One id per offence: slashing applies once per id however many reports arrive."""
    return compute_hash(DOMAIN_OFFENCE, pack([kind, offender, slot]))


def encode_entry(entry: Entry) -> bytes:
    h = entry.header
    return pack([h.account, h.seq, h.prev, h.height, h.signature, op_to_array(entry.op)])


# ---------------------------------------------------------------------------- strict decoding


def _fail(detail: str) -> InvalidTransition:
    return InvalidTransition(Reason.MALFORMED, detail)


def _list(x: Any, n: int, what: str) -> list[Any]:
    if type(x) is not list or len(x) != n:
        raise _fail(f"{what}: expected an array of {n}")
    return x


def _bytes(x: Any, n: int, what: str) -> bytes:
    if type(x) is not bytes or len(x) != n:
        raise _fail(f"{what}: expected {n} bytes")
    return x


def _blob(x: Any, n_max: int, what: str) -> bytes:
    if type(x) is not bytes or len(x) > n_max:
        raise _fail(f"{what}: expected at most {n_max} bytes")
    return x


def _int(x: Any, hi: int, what: str) -> int:
    if type(x) is not int or not 0 <= x <= hi:
        raise _fail(f"{what}: expected an integer in [0, {hi}]")
    return x


def _amount(x: Any, what: str) -> int:
    if type(x) is not int:
        raise _fail(f"{what}: expected an integer")
    if not 0 < x <= AMOUNT_MAX:
        raise InvalidTransition(Reason.AMOUNT_OUT_OF_RANGE, f"{what}: {x}")
    return x


def statement_from_array(x: Any) -> ProofStatement:
    a = _list(x, 6, "statement")
    return ProofStatement(
        award_ref=_bytes(a[0], HASH_BYTES, "award_ref"),
        bundle_id=_bytes(a[1], HASH_BYTES, "bundle_id"),
        slice_index=_int(a[2], SLICE_INDEX_MAX, "slice_index"),
        input_commitment=_bytes(a[3], HASH_BYTES, "input_commitment"),
        output_commitment=_bytes(a[4], HASH_BYTES, "output_commitment"),
        instances_hash=_bytes(a[5], HASH_BYTES, "instances_hash"),
    )


def signed_statement_from_array(x: Any) -> SignedStatement:
    a = _list(x, 4, "signed statement")
    return SignedStatement(
        statement=statement_from_array(a[0]),
        proof_hash=_bytes(a[1], HASH_BYTES, "proof_hash"),
        prover=_bytes(a[2], KEY_BYTES, "prover"),
        signature=_bytes(a[3], SIGNATURE_BYTES, "statement signature"),
    )


def header_from_array(x: Any) -> EntryHeader:
    a = _list(x, 6, "header")
    return EntryHeader(
        account=_bytes(a[0], KEY_BYTES, "account"),
        seq=_int(a[1], SEQ_MAX, "seq"),
        prev=_bytes(a[2], HASH_BYTES, "prev"),
        height=_int(a[3], HEIGHT_MAX, "height"),
        body_hash=_bytes(a[4], HASH_BYTES, "body_hash"),
        signature=_bytes(a[5], SIGNATURE_BYTES, "signature"),
    )


def _award_from_array(x: Any) -> Award:
    a = _list(x, 7, "award")
    if a[0] != Award.KIND:
        raise _fail("expected an award")
    return Award(
        job_id=_bytes(a[1], HASH_BYTES, "job_id"),
        slice_index=_int(a[2], SLICE_INDEX_MAX, "slice_index"),
        round=_int(a[3], ROUND_MAX, "round"),
        prover=_bytes(a[4], KEY_BYTES, "prover"),
        price=_amount(a[5], "price"),
        input_commitment=_bytes(a[6], HASH_BYTES, "input_commitment"),
    )


def evidence_from_array(x: Any, proof_max: int) -> Evidence:
    if type(x) is not list or not x:
        raise _fail("evidence: expected a non-empty array")
    kind = x[0]
    if kind == ForkEvidence.KIND:
        a = _list(x, 3, "fork evidence")
        return ForkEvidence(header_from_array(a[1]), header_from_array(a[2]))
    if kind not in (1, 2, 3):
        raise _fail(f"unknown evidence kind {kind!r}")
    a = _list(x, 4 if kind != LinkageEvidence.KIND else 3, "evidence")
    rec = _list(a[1], 2, "award record")
    record = AwardRecord(header_from_array(rec[0]), _award_from_array(rec[1]))
    statement = signed_statement_from_array(a[2])
    if kind == EquivocationEvidence.KIND:
        return EquivocationEvidence(record, statement, signed_statement_from_array(a[3]))
    if kind == InvalidProofEvidence.KIND:
        return InvalidProofEvidence(record, statement, _blob(a[3], proof_max, "proof"))
    return LinkageEvidence(record, statement)


_SIMPLE: dict[int, Callable[[list[Any]], Operation]] = {
    GenesisAllocation.KIND: lambda a: GenesisAllocation(
        _bytes(a[1], KEY_BYTES, "recipient"), _amount(a[2], "amount")
    ),
    Transfer.KIND: lambda a: Transfer(
        _bytes(a[1], KEY_BYTES, "recipient"), _amount(a[2], "amount")
    ),
    Bond.KIND: lambda a: Bond(_amount(a[1], "amount")),
    Unbond.KIND: lambda a: Unbond(_amount(a[1], "amount")),
    Withdraw.KIND: lambda a: Withdraw(),
    Escrow.KIND: lambda a: Escrow(
        _bytes(a[1], HASH_BYTES, "job_id"),
        _bytes(a[2], HASH_BYTES, "bundle_id"),
        _amount(a[3], "amount"),
    ),
    Award.KIND: _award_from_array,
    Refund.KIND: lambda a: Refund(_bytes(a[1], HASH_BYTES, "job_id")),
    GenesisBond.KIND: lambda a: GenesisBond(
        _bytes(a[1], KEY_BYTES, "recipient"), _amount(a[2], "amount")
    ),
}
_ARITY = {0: 3, 1: 3, 2: 2, 3: 2, 4: 1, 5: 4, 6: 7, 7: 3, 8: 2, 9: 2, 10: 3}


def op_from_array(x: Any, proof_max: int) -> Operation:
    if type(x) is not list or not x or type(x[0]) is not int or x[0] not in _ARITY:
        raise _fail("operation: unknown kind")
    kind = x[0]
    a = _list(x, _ARITY[kind], "operation")
    if kind == Claim.KIND:
        return Claim(signed_statement_from_array(a[1]), _blob(a[2], proof_max, "proof"))
    if kind == Slash.KIND:
        return Slash(evidence_from_array(a[1], proof_max))
    return _SIMPLE[kind](a)


def decode_entry(data: bytes, proof_bytes_max: int) -> Entry:
    """Strictly decode one entry; any defect raises `InvalidTransition` (MALFORMED and friends)."""
    bytes_max = proof_bytes_max * 2 + ENTRY_OVERHEAD_BYTES_MAX
    if len(data) > bytes_max:
        raise InvalidTransition(Reason.TOO_LARGE, f"{len(data)} > {bytes_max} bytes")
    try:
        raw = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=0,
            max_bin_len=bytes_max,
            max_array_len=16,
            max_map_len=0,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.exceptions.UnpackException) as exc:
        raise _fail(type(exc).__name__) from None
    a = _list(raw, 6, "entry")
    op = op_from_array(a[5], proof_bytes_max)
    body_hash = compute_body_hash(op)
    header = EntryHeader(
        account=_bytes(a[0], KEY_BYTES, "account"),
        seq=_int(a[1], SEQ_MAX, "seq"),
        prev=_bytes(a[2], HASH_BYTES, "prev"),
        height=_int(a[3], HEIGHT_MAX, "height"),
        body_hash=body_hash,
        signature=_bytes(a[4], SIGNATURE_BYTES, "signature"),
    )
    entry = Entry(header, op, compute_header_hash(header))
    if encode_entry(entry) != data:
        raise InvalidTransition(Reason.NOT_CANONICAL, "encoding is not canonical")
    return entry
