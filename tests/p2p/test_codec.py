"""Framing: property round trips, limits enforced on the announced length, strict varints."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2p.codec import (
    FrameDecoder,
    decode_response,
    decode_varint_prefix,
    encode_frame,
    encode_response,
    encode_varint,
    read_frame,
)
from p2p.errors import MessageTooLarge, PeerEOF, RequestFailed


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varint_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert decode_varint_prefix(encoded + b"tail") == (value, len(encoded))
    assert decode_varint_prefix(encoded[:-1]) is None


@given(st.lists(st.binary(max_size=300), max_size=8), st.data())
def test_frames_survive_any_chunking(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(p, 300) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder(300)
    frames: list[bytes] = []
    for lo, hi in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        frames += decoder.feed(stream[lo:hi])
    assert frames == payloads
    assert decoder.pending_bytes == 0


def test_decoder_refuses_an_oversize_announcement_before_the_body() -> None:
    with pytest.raises(MessageTooLarge):
        FrameDecoder(100).feed(encode_varint(101))
    with pytest.raises(MessageTooLarge):
        encode_frame(b"x" * 101, 100)


def test_non_minimal_and_overlong_varints_are_refused() -> None:
    with pytest.raises(RequestFailed, match="non-minimal"):
        decode_varint_prefix(b"\x81\x00")
    with pytest.raises(RequestFailed, match="longer than 10"):
        decode_varint_prefix(b"\xff" * 10)


class _Reader:
    """An async byte source that hands out at most `step` bytes per read."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step, self.reads = data, step, 0

    async def read(self, n: int) -> bytes:
        self.reads += 1
        chunk, self.data = self.data[: min(n, self.step)], self.data[min(n, self.step) :]
        return chunk


@given(st.binary(max_size=2000), st.integers(1, 64))
async def test_read_frame_reads_exactly_one_frame(payload: bytes, step: int) -> None:
    reader = _Reader(encode_frame(payload, 2000) + b"next", step)
    assert await read_frame(reader.read, 2000) == payload
    assert reader.data == b"next"


async def test_read_frame_limit_and_eof() -> None:
    reader = _Reader(encode_varint(10_000) + b"x" * 10_000, 4096)
    with pytest.raises(MessageTooLarge):
        await read_frame(reader.read, 9_999)
    assert reader.reads <= 2  # the body was never read
    with pytest.raises(PeerEOF):
        await read_frame(_Reader(encode_varint(5) + b"abc", 10).read, 100)


def test_response_status() -> None:
    assert decode_response(encode_response(True, b"body")) == b"body"
    with pytest.raises(RequestFailed, match="remote error: nope"):
        decode_response(encode_response(False, b"nope"))
    with pytest.raises(RequestFailed):
        decode_response(b"")
    with pytest.raises(RequestFailed):
        decode_response(b"\x07abc")
