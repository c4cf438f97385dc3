"""A synchronous client of the control API (node/control.py), for CLI commands and scripts.

Stdlib only (http.client), so a command that talks to a running node does not load trio. One
request per connection, like the server. A node that is not there, or does not answer in time,
raises `ControlUnreachable` with a one-line message saying what to do.
"""

from __future__ import annotations

import http.client
import json
from typing import Any

from node.errors import NodeError

CONTROL_REPLY_BYTES_MAX = 4 << 20


class ControlUnreachable(NodeError):
    """No node answers at the control address (refused, timed out, or the connection broke)."""


class ControlReplyError(NodeError):
    """The node answered with something that is not a control API reply."""


def _split_addr(addr: str) -> tuple[str, int]:
    host, sep, port_text = addr.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ControlUnreachable(f"bad control address {addr!r}: expected HOST:PORT")
    return host.strip("[]"), int(port_text)


def control_request(
    addr: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    token: str | None = None,
    timeout_s: float = 10.0,
) -> tuple[int, Any]:
    """(HTTP status, the reply: parsed JSON, or text for other content types).

    A POST always sends a JSON body (`{}` if `body` is None); `token` goes in
    `Authorization: Bearer`. `timeout_s` bounds the connect and each read."""
    host, port = _split_addr(addr)
    headers = {"Accept": "application/json"}
    payload = None
    if body is not None or method == "POST":
        payload = json.dumps(body if body is not None else {}).encode()
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request(method, path, body=payload, headers=headers)
        reply = conn.getresponse()
        data = reply.read(CONTROL_REPLY_BYTES_MAX + 1)
        status, content_type = reply.status, reply.getheader("Content-Type", "")
    except ConnectionRefusedError:
        raise ControlUnreachable(f"no node is running at {addr} (connection refused); "
                                 "start it with `dsperse-node run`") from None  # fmt: skip
    except TimeoutError:
        raise ControlUnreachable(
            f"the node at {addr} did not answer {method} {path} within {timeout_s:g} s"
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise ControlUnreachable(f"cannot talk to the node at {addr}: {exc}") from None
    finally:
        conn.close()
    if len(data) > CONTROL_REPLY_BYTES_MAX:
        raise ControlReplyError(f"the node at {addr} sent a reply over {CONTROL_REPLY_BYTES_MAX} "
                                f"bytes for {method} {path}")  # fmt: skip
    if not content_type.startswith("application/json"):
        return status, data.decode("utf-8", "replace")
    try:
        return status, json.loads(data)
    except ValueError:
        raise ControlReplyError(
            f"the node at {addr} sent invalid JSON for {method} {path} (status {status})"
        ) from None
