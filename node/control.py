"""The local control API: a tiny HTTP/1.0 JSON server on loopback for the dashboard, CLI, scripts.

Routes are keyed `"GET /path"` or `"POST /path"` and map to a handler `(ControlRequest) -> reply`,
sync or async; the old form, a bare `"/path"` with a zero-argument callable, still means GET. A
reply is a JSON document (a dict) or `(content type, body)`. A handler refuses a request by raising
`ControlError(status, message)`; any other exception answers 500 and is logged, and the server
goes on. Loopback only (a non-loopback address is refused), bounded requests (head size, body size,
read timeout, handler timeout, concurrent connections), one response per connection. GETs are open;
when the server has a token, every POST must carry `Authorization: Bearer <token>`. The node writes
its token, fresh at each start, to `<data dir>/control.token` (mode 0600), next to `control.addr`.
"""

from __future__ import annotations

import hmac
import inspect
import ipaddress
import json
import logging
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import trio

from node.errors import ConfigError, DataDirError, NodeError

REQUEST_HEAD_BYTES_MAX = 8 * 1024
REQUEST_BODY_BYTES_MAX = 64 * 1024
QUERY_FIELDS_MAX = 32
READ_TIMEOUT_S = 5.0  # the whole request (head and body) must arrive within this
HANDLER_TIMEOUT_S = 60.0  # a handler's awaited work; 504 after it
CONNECTIONS_MAX = 16
_log = logging.getLogger("node.control")

CONTROL_FILE_NAME = "control.addr"  # in the data dir: where a running node's control API is
CONTROL_TOKEN_FILE_NAME = "control.token"  # in the data dir: the bearer token for POSTs (0600)
_TOKEN_RE = re.compile(r"[0-9a-f]{64}")
METHODS = ("GET", "POST")


@dataclass(frozen=True, slots=True)
class ControlRequest:
    method: str
    path: str  # without the query string
    query: dict[str, str]
    body: Any  # POST: the parsed JSON object ({} if empty); GET: {}


class ControlError(NodeError):
    """Raised by a handler to answer `status` with `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"ControlError status {status} is not an HTTP error status")
        super().__init__(message)
        self.status = status
        self.message = message


# A reply is a JSON document, or (content type, body) for other formats (e.g. /metrics).
Reply = dict[str, Any] | tuple[str, bytes]
Handler = Callable[[ControlRequest], Reply | Awaitable[Reply]]
LegacyRoute = Callable[[], Reply]
Routes = dict[str, LegacyRoute | Handler]
_Table = dict[tuple[str, str], Handler]


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


def compile_routes(routes: Routes) -> _Table:
    """`{(method, path): handler}`; an old-form key `/path` becomes GET with the request dropped."""
    table: _Table = {}
    for key, fn in routes.items():
        method, sep, path = key.partition(" ")
        if not sep:
            method, path = "GET", key
            fn = partial(_call_legacy, cast(LegacyRoute, fn))
        if method not in METHODS or not path.startswith("/") or " " in path:
            raise ValueError(f"control route {key!r} must be '/path', 'GET /path' or 'POST /path'")
        if (method, path) in table:
            raise ValueError(f"control route {method} {path} is defined twice")
        table[(method, path)] = cast(Handler, fn)
    return table


def _call_legacy(route: LegacyRoute, _request: ControlRequest) -> Reply:
    return route()


# -- responses -------------------------------------------------------------------------------


def _raw_response(status: int, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.0 {status} {HTTPStatus(status).phrase}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _response(status: int, doc: dict[str, Any]) -> bytes:
    return _raw_response(status, "application/json", json.dumps(doc, default=str).encode())


def _error(status: int, message: str) -> bytes:
    return _response(status, {"error": message})


def _encode_reply(result: object) -> bytes:
    if isinstance(result, dict):
        return _response(200, result)
    if (
        isinstance(result, tuple)
        and len(result) == 2
        and isinstance(result[0], str)
        and isinstance(result[1], bytes)
    ):
        return _raw_response(200, result[0], result[1])
    raise TypeError(f"a control handler returned {type(result).__name__}, not a dict or tuple")


# -- requests --------------------------------------------------------------------------------


class _BadRequest(Exception):
    """A malformed request; answered 400 with the message (never leaves this module)."""


async def _read_head(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    """(head without the blank line, the bytes after it); the caller bounds the time."""
    buf = b""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        if len(buf) > REQUEST_HEAD_BYTES_MAX:
            raise _BadRequest("incomplete or oversize request")
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise _BadRequest("incomplete or oversize request")
        buf += chunk
    if end > REQUEST_HEAD_BYTES_MAX:
        raise _BadRequest("incomplete or oversize request")
    return buf[:end], buf[end + 4 :]


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """(method, target, headers with lower-case names)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise _BadRequest("malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest("malformed header line")
        name = name.lower()
        if name in headers and name in ("content-length", "authorization"):
            raise _BadRequest(f"duplicate {name} header")
        headers[name] = value.strip()
    return parts[0], parts[1], headers


def _parse_target(target: str) -> tuple[str, dict[str, str]]:
    if not target.startswith("/"):
        raise _BadRequest("the request target must be a path")
    split = urlsplit(target)
    try:
        pairs = parse_qsl(split.query, keep_blank_values=True, max_num_fields=QUERY_FIELDS_MAX)
    except ValueError:
        raise _BadRequest(f"more than {QUERY_FIELDS_MAX} query parameters") from None
    query: dict[str, str] = {}
    for name, value in pairs:
        if name in query:
            raise _BadRequest(f"query parameter {name!r} given twice")
        query[name] = value
    return split.path, query


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def _read_body(stream: trio.SocketStream, headers: dict[str, str], start: bytes) -> Any:
    length_text = headers.get("content-length")
    if length_text is None:
        raise _BadRequest("a POST needs a Content-Length header")
    if not length_text.isdigit() or len(length_text) > 12:
        raise _BadRequest(f"bad Content-Length {length_text[:20]!r}")
    length = int(length_text)
    if length > REQUEST_BODY_BYTES_MAX:
        raise _BadRequest(f"body of {length} bytes exceeds {REQUEST_BODY_BYTES_MAX} bytes")
    data = start[:length]
    while len(data) < length:
        chunk = await stream.receive_some(length - len(data))
        if not chunk:
            raise _BadRequest(f"body ended after {len(data)} of {length} bytes")
        data += chunk
    if not data.strip():
        return {}
    try:
        body = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _BadRequest(f"the body is not valid JSON: {str(exc)[:120]}") from None
    if not isinstance(body, dict):
        raise _BadRequest("the body must be a JSON object")
    return body


@dataclass(frozen=True, slots=True)
class _Server:
    table: _Table
    token: str | None
    handler_timeout_s: float
    limiter: trio.CapacityLimiter


def _is_authorised(server: _Server, headers: dict[str, str]) -> bool:
    if server.token is None:
        return True
    given = headers.get("authorization", "").encode("latin-1")
    return hmac.compare_digest(given, f"Bearer {server.token}".encode())


async def _read_request(server: _Server, stream: trio.SocketStream) -> ControlRequest | bytes:
    """The request, or the error reply to send instead."""
    try:
        with trio.move_on_after(READ_TIMEOUT_S):
            head, rest = await _read_head(stream)
            method, target, headers = _parse_head(head)
            path, query = _parse_target(target)
            if (method, path) not in server.table:
                routes = ", ".join(f"{m} {p}" for m, p in sorted(server.table))
                return _error(404, f"no route {method} {path}; routes: {routes}")
            body: Any = {}
            if method == "POST":
                if not _is_authorised(server, headers):
                    return _error(403, "a POST needs 'Authorization: Bearer <token>' with the "
                                  "token in the node's data dir (control.token)")  # fmt: skip
                body = await _read_body(stream, headers, rest)
            return ControlRequest(method=method, path=path, query=query, body=body)
        return _error(400, f"the request did not arrive within {READ_TIMEOUT_S:g} s")
    except _BadRequest as exc:
        return _error(400, str(exc))


async def _call(server: _Server, request: ControlRequest) -> bytes:
    handler = server.table[(request.method, request.path)]
    try:
        with trio.move_on_after(server.handler_timeout_s):
            result = handler(request)
            if inspect.isawaitable(result):
                result = await result
            return _encode_reply(result)
        return _error(504, f"{request.method} {request.path} did not finish within "
                      f"{server.handler_timeout_s:g} s")  # fmt: skip
    except ControlError as exc:
        return _error(exc.status, exc.message)
    except Exception as exc:  # a handler bug answers 500 and is logged; the node keeps running
        _log.error("control handler %s %s failed", request.method, request.path, exc_info=exc)
        return _error(500, f"internal error: {type(exc).__name__}")


async def _handle(server: _Server, stream: trio.SocketStream) -> None:
    try:
        server.limiter.acquire_nowait()
    except trio.WouldBlock:
        await stream.aclose()
        return
    try:
        request = await _read_request(server, stream)
        reply = request if isinstance(request, bytes) else await _call(server, request)
        with trio.move_on_after(READ_TIMEOUT_S):
            await stream.send_all(reply)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        _log.debug("control client went away")
    finally:
        server.limiter.release()
        await stream.aclose()


async def serve_control(
    listen: str,
    routes: Routes,
    token: str | None = None,
    *,
    handler_timeout_s: float = HANDLER_TIMEOUT_S,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; `task_status.started("host:port")` with the bound address.

    With a `token`, every POST must carry `Authorization: Bearer <token>` (else 403)."""
    if token is not None and not token:
        raise ValueError("the control token must be None or a non-empty string")
    server = _Server(compile_routes(routes), token, handler_timeout_s,
                     trio.CapacityLimiter(CONNECTIONS_MAX))  # fmt: skip
    host, port = parse_control_listen(listen)
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {listen} for the control API: {exc}") from None
    bound_host, bound_port = listeners[0].socket.getsockname()[:2]
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, partial(_handle, server), listeners)
        task_status.started(f"{bound_host}:{bound_port}")


# -- files in the data dir -------------------------------------------------------------------


def write_control_file(data_dir: Path, control_addr: str) -> None:
    """Record where this node's control API listens (for `dsperse-node dashboard --data-dir`)."""
    if not control_addr:
        return
    tmp = data_dir / f".{CONTROL_FILE_NAME}.tmp"
    tmp.write_text(control_addr + "\n", encoding="utf-8")
    os.replace(tmp, data_dir / CONTROL_FILE_NAME)


def remove_control_file(data_dir: Path) -> None:
    (data_dir / CONTROL_FILE_NAME).unlink(missing_ok=True)


def write_control_token(data_dir: Path) -> str:
    """A fresh token (32 random bytes, hex) in `<data_dir>/control.token`, mode 0600, atomically.

    Call it at every node start, before the control API listens and before control.addr is
    written, so a client that finds the address also finds the matching token."""
    token = secrets.token_hex(32)
    path = data_dir / CONTROL_TOKEN_FILE_NAME
    tmp = data_dir / f".{CONTROL_TOKEN_FILE_NAME}.tmp-{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)  # left by a crash of this pid's predecessor
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(token + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise DataDirError(f"cannot write the control token {path}: {exc.strerror}") from None
    return token


def read_control_token(data_dir: Path) -> str | None:
    """The running node's control token, or None if there is none (no node, or an older one)."""
    path = data_dir / CONTROL_TOKEN_FILE_NAME
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataDirError(f"cannot read the control token {path}: {exc}") from None
    if not text:
        return None
    if not _TOKEN_RE.fullmatch(text):
        raise DataDirError(f"{path} is malformed (expected 64 hex digits); restart the node")
    return text


def remove_control_token(data_dir: Path) -> None:
    (data_dir / CONTROL_TOKEN_FILE_NAME).unlink(missing_ok=True)
