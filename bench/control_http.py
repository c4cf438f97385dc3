"""A lean control-API client for benchmarks: one raw HTTP/1.0 request per connection (the
server closes it). http.client costs the bench process several times more CPU per request, and
a bench shares the same 2 cores with the nodes, so the cheaper the poller the less it distorts
what it times."""

from __future__ import annotations

import json
import socket
from typing import Any


def http(
    addr: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    token: str = "",
    *,
    timeout_s: float = 10.0,
) -> tuple[int, Any]:
    """(status, parsed JSON or text) of one request to `addr` (host:port)."""
    host, _, port = addr.rpartition(":")
    payload = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.0\r\nHost: {host}\r\n"
    if payload:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(head.encode() + b"\r\n" + payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    status_line, _, rest = data.partition(b"\r\n")
    _, _, text = rest.partition(b"\r\n\r\n")
    status = int(status_line.split()[1])
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text.decode("utf-8", "replace")
