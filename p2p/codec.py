"""Length-prefixed framing for request/response streams, with size limits on both sides.

A frame is an unsigned LEB128 varint length followed by that many bytes (the libp2p convention,
compatible with go `msgio` varint readers and js `it-length-prefixed`). A response frame starts
with one status byte: 0 = ok (the rest is the body), 1 = error (the rest is a UTF-8 reason).
The limit is checked on the announced length before any body byte is read, so an oversize frame
costs the reader at most 10 bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from p2p.errors import MessageTooLarge, PeerEOF, RequestFailed

VARINT_BYTES_MAX = 10  # a u64 needs at most 10 LEB128 bytes
STATUS_OK = 0
STATUS_ERROR = 1
ERROR_REASON_BYTES_MAX = 200

ReadFn = Callable[[int], Awaitable[bytes]]  # read up to n bytes; b"" at end of stream


def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varint must be non-negative")  # programmer error
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_frame(payload: bytes, bytes_max: int) -> bytes:
    """One frame; raises MessageTooLarge if the payload exceeds `bytes_max`."""
    if len(payload) > bytes_max:
        raise MessageTooLarge(f"frame of {len(payload)} bytes exceeds {bytes_max}")
    return encode_varint(len(payload)) + payload


def decode_varint_prefix(buf: bytes) -> tuple[int, int] | None:
    """(value, bytes used) of a varint at the start of `buf`, or None if incomplete."""
    value = 0
    for i, byte in enumerate(buf[:VARINT_BYTES_MAX]):
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i > 0 and byte == 0:
                raise RequestFailed("non-minimal varint length prefix")
            return value, i + 1
    if len(buf) >= VARINT_BYTES_MAX:
        raise RequestFailed("varint length prefix longer than 10 bytes")
    return None


class FrameDecoder:
    """Sans-IO incremental decoder: feed bytes, get whole frames (each checked against a limit)."""

    def __init__(self, bytes_max: int) -> None:
        self._bytes_max = bytes_max
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames: list[bytes] = []
        while True:
            head = decode_varint_prefix(bytes(self._buf[:VARINT_BYTES_MAX]))
            if head is None:
                return frames
            length, used = head
            if length > self._bytes_max:
                raise MessageTooLarge(f"frame announces {length} bytes; limit {self._bytes_max}")
            if len(self._buf) < used + length:
                return frames
            frames.append(bytes(self._buf[used : used + length]))
            del self._buf[: used + length]

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)


async def read_exactly(read: ReadFn, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await read(n - len(buf))
        if not chunk:
            raise PeerEOF(f"stream ended after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


async def read_frame(read: ReadFn, bytes_max: int) -> bytes:
    """Read one frame; the limit is enforced on the announced length before reading the body."""
    prefix = bytearray()
    while True:
        byte = await read_exactly(read, 1)
        prefix += byte
        head = decode_varint_prefix(bytes(prefix))
        if head is not None:
            break
    length, _ = head
    if length > bytes_max:
        raise MessageTooLarge(f"frame announces {length} bytes; limit {bytes_max}")
    return await read_exactly(read, length)


def encode_response(ok: bool, body: bytes) -> bytes:
    """The payload of a response frame (status byte + body or error reason)."""
    if ok:
        return bytes([STATUS_OK]) + body
    return bytes([STATUS_ERROR]) + body[:ERROR_REASON_BYTES_MAX]


def decode_response(payload: bytes) -> bytes:
    """The body of an ok response; raises RequestFailed for an error or a malformed response."""
    if not payload:
        raise RequestFailed("empty response frame")
    status, body = payload[0], payload[1:]
    if status == STATUS_OK:
        return body
    if status == STATUS_ERROR:
        reason = body[:ERROR_REASON_BYTES_MAX].decode("utf-8", errors="replace")
        raise RequestFailed(f"remote error: {reason}")
    raise RequestFailed(f"unknown response status {status}")
