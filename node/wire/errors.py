"""Wire-format errors: one exception type carrying a machine-readable reason code."""

from __future__ import annotations

from enum import Enum

from node.errors import NodeError


class WireReason(Enum):
    """Why an encoded message was refused. Each value is a stable counter label."""

    TOO_LARGE = "too_large"  # encoded envelope exceeds the size limit
    MALFORMED = "malformed"  # not a single well-formed msgpack value
    NOT_CANONICAL = "not_canonical"  # decodes, but is not the canonical encoding of its value
    BAD_ENVELOPE = "bad_envelope"  # envelope is not the exact map of typed fields
    UNKNOWN_TYPE = "unknown_type"  # message type is not in the registry
    UNSUPPORTED_VERSION = "unsupported_version"  # known type, unknown version
    BAD_FIELDS = "bad_fields"  # body has missing or extra fields
    BAD_FIELD_TYPE = "bad_field_type"  # a body field has the wrong type
    FIELD_TOO_LARGE = "field_too_large"  # a str/bytes/list field exceeds its limit
    VALUE_OUT_OF_RANGE = "value_out_of_range"  # an integer field is outside its range
    INVALID_VALUE = "invalid_value"  # a field breaks a message-specific rule
    STALE = "stale"  # timestamp older than the skew window
    FUTURE = "future"  # timestamp further in the future than the skew window
    BAD_SIGNATURE = "bad_signature"  # signature does not verify for the signer key
    REPLAY = "replay"  # this exact envelope was already accepted
    WRONG_NETWORK = "wrong_network"  # signed for another network id (another genesis)


class WireError(NodeError, ValueError):
    """An encoded message was refused; `reason` says why, `detail` says where."""

    def __init__(self, reason: WireReason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
