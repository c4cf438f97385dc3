"""Request/response over one stream: one length-prefixed request frame, one response frame.

Transport-independent: it runs over any `ByteStream` (the libp2p transport adapts yamux streams
to it). The server enforces the request size limit before reading the body and a deadline on the
whole exchange; the client enforces the response size limit. Every failure is counted by reason.
"""

from __future__ import annotations

from typing import Protocol

import trio

from p2p.abc import PeerId, RequestHandler, TransportSettings
from p2p.codec import decode_response, encode_frame, encode_response, read_frame
from p2p.counters import TransportCounters
from p2p.errors import MessageTooLarge, P2PError, RequestFailed


class ByteStream(Protocol):
    """A bidirectional byte stream; `read` returns b"" at end of stream, errors raise
    RequestFailed (transport failures) so the code here never sees transport exceptions."""

    async def read(self, n: int) -> bytes: ...
    async def write(self, data: bytes) -> None: ...
    async def close(self) -> None: ...
    async def reset(self) -> None: ...


async def serve_request(
    stream: ByteStream,
    peer: PeerId,
    protocol_id: str,
    handler: RequestHandler,
    settings: TransportSettings,
    counters: TransportCounters,
) -> None:
    """Answer one request on `stream`; never raises for anything the remote did."""
    try:
        with trio.fail_after(settings.request_timeout_s):
            body = await read_frame(stream.read, settings.request_bytes_max)
            try:
                response = encode_response(True, await handler(peer, body))
            except P2PError as exc:  # the handler's refusal goes back to the requester
                response = encode_response(False, str(exc).encode())
            await stream.write(encode_frame(response, settings.response_bytes_max + 1))
        counters.requests_in[protocol_id] += 1
        await stream.close()
    except trio.TooSlowError:
        counters.drop("request_in_timeout")
        await stream.reset()
    except (MessageTooLarge, RequestFailed) as exc:
        counters.drop(f"request_in_{type(exc).__name__}")
        await stream.reset()


async def exchange_request(stream: ByteStream, frame: bytes, settings: TransportSettings) -> bytes:
    """Send one request frame and read the response body (raises RequestFailed on errors)."""
    try:
        await stream.write(frame)
        payload = await read_frame(stream.read, settings.response_bytes_max + 1)
    except MessageTooLarge as exc:
        await stream.reset()
        raise RequestFailed(f"response too large: {exc}") from None
    except RequestFailed:
        await stream.reset()
        raise
    except trio.Cancelled:
        with trio.CancelScope(shield=True):
            await stream.reset()
        raise
    await stream.close()
    return decode_response(payload)
