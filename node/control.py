"""The local control API: a tiny HTTP/1.0 JSON server on loopback for the dashboard and scripts.

`GET /status` returns the node's statistics, `GET /health` a liveness line. Loopback only (a
non-loopback address is refused), bounded requests (head size, read timeout, concurrent
connections), one response per connection. No write operations yet.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio

from node.errors import ConfigError

REQUEST_HEAD_BYTES_MAX = 8 * 1024
READ_TIMEOUT_S = 5.0
CONNECTIONS_MAX = 16
_log = logging.getLogger("node.control")

# A route returns a JSON document, or (content type, body) for other formats (e.g. /metrics).
CONTROL_FILE_NAME = "control.addr"  # in the data dir: where a running node's control API is

Routes = dict[str, Callable[[], dict[str, Any] | tuple[str, bytes]]]


def parse_control_listen(listen: str) -> tuple[str, int]:
    """`host:port` on a loopback address; port 0 = any free port."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"control listen {listen!r} must be HOST:PORT")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"control listen {listen!r}: {host!r} is not an IP address") from None
    if not ip.is_loopback:
        raise ConfigError(f"control listen {listen!r} must be a loopback address")
    return host, int(port_text)


def _response(status: str, doc: dict[str, Any]) -> bytes:
    body = json.dumps(doc, default=str).encode()
    head = (
        f"HTTP/1.0 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _raw_response(status: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def _read_head(stream: trio.SocketStream) -> bytes | None:
    buf = b""
    with trio.move_on_after(READ_TIMEOUT_S):
        while b"\r\n\r\n" not in buf and len(buf) <= REQUEST_HEAD_BYTES_MAX:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return None
            buf += chunk
        return buf
    return None


async def _handle(routes: Routes, limiter: trio.CapacityLimiter, stream: trio.SocketStream) -> None:
    try:
        limiter.acquire_nowait()
    except trio.WouldBlock:
        await stream.aclose()
        return
    try:
        head = await _read_head(stream)
        if head is None or len(head) > REQUEST_HEAD_BYTES_MAX:
            reply = _response("400 Bad Request", {"error": "incomplete or oversize request"})
        else:
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            route = routes.get(parts[1]) if len(parts) == 3 and parts[0] == "GET" else None
            if route is None:
                reply = _response("404 Not Found", {"error": "GET " + " ".join(sorted(routes))})
            else:
                doc = route()
                if isinstance(doc, tuple):
                    reply = _raw_response("200 OK", *doc)
                else:
                    reply = _response("200 OK", doc)
        with trio.move_on_after(READ_TIMEOUT_S):
            await stream.send_all(reply)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        _log.debug("control client went away")
    finally:
        limiter.release()
        await stream.aclose()


async def serve_control(
    listen: str, routes: Routes, *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve until cancelled; `task_status.started("host:port")` with the bound address."""
    host, port = parse_control_listen(listen)
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {listen} for the control API: {exc}") from None
    bound_host, bound_port = listeners[0].socket.getsockname()[:2]
    limiter = trio.CapacityLimiter(CONNECTIONS_MAX)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, partial(_handle, routes, limiter), listeners)
        task_status.started(f"{bound_host}:{bound_port}")


def write_control_file(data_dir: Path, control_addr: str) -> None:
    """Record where this node's control API listens (for `dsperse-node dashboard --data-dir`)."""
    if not control_addr:
        return
    tmp = data_dir / f".{CONTROL_FILE_NAME}.tmp"
    tmp.write_text(control_addr + "\n", encoding="utf-8")
    os.replace(tmp, data_dir / CONTROL_FILE_NAME)


def remove_control_file(data_dir: Path) -> None:
    (data_dir / CONTROL_FILE_NAME).unlink(missing_ok=True)
