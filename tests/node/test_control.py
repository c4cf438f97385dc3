"""node.control: old and new routes, POST bodies and bounds, auth, handler errors, timeouts."""

from __future__ import annotations

import json
import logging
import socket
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from node.control import (
    CONTROL_TOKEN_FILE_NAME,
    HANDLER_TIMEOUT_S,
    QUERY_FIELDS_MAX,
    REQUEST_BODY_BYTES_MAX,
    ControlError,
    ControlRequest,
    Routes,
    compile_routes,
    read_control_token,
    remove_control_token,
    serve_control,
    write_control_token,
)
from node.control_client import ControlUnreachable, control_request
from node.errors import DataDirError

WAIT_S = 10.0
TOKEN = "ab" * 32


def echo(request: ControlRequest) -> dict[str, Any]:
    return {"method": request.method, "path": request.path, "query": request.query,
            "body": request.body}  # fmt: skip


async def slow_echo(request: ControlRequest) -> dict[str, Any]:
    await trio.sleep(0)
    return {"async": True, **echo(request)}


def conflict(_request: ControlRequest) -> dict[str, Any]:
    raise ControlError(409, "insufficient balance: have 5, need 7")


def broken(_request: ControlRequest) -> dict[str, Any]:
    raise RuntimeError("a handler bug")


def not_a_reply(_request: ControlRequest) -> Any:
    return ["a", "list"]


ROUTES: Routes = {
    "/status": lambda: {"ok": True},
    "/metrics": lambda: ("text/plain; version=0.0.4", b"up 1\n"),
    "GET /echo": echo,
    "POST /echo": echo,
    "POST /async": slow_echo,
    "POST /conflict": conflict,
    "GET /broken": broken,
    "GET /not-a-reply": not_a_reply,
}


@asynccontextmanager
async def serving(
    routes: Routes = ROUTES, token: str | None = None, **kwargs: Any
) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        serve = partial(serve_control, "127.0.0.1:0", routes, token, **kwargs)
        yield await nursery.start(serve)
        nursery.cancel_scope.cancel()


async def exchange(addr: str, raw: bytes) -> tuple[int, Any]:
    """Send raw bytes, read the reply to EOF: (status, JSON doc or body bytes)."""
    host, port = addr.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    data = b""
    async with stream:
        await stream.send_all(raw)
        await stream.send_eof()  # a short body then ends instead of waiting out the read timeout
        with trio.fail_after(WAIT_S):
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(body) if b"application/json" in head else body


def post(target: str, body: bytes, token: str | None = None, length: int | None = None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    size = len(body) if length is None else length
    return f"POST {target} HTTP/1.0\r\n{auth}Content-Length: {size}\r\n\r\n".encode() + body


async def get(addr: str, target: str) -> tuple[int, Any]:
    return await exchange(addr, f"GET {target} HTTP/1.0\r\n\r\n".encode())


async def test_old_and_new_style_get_routes() -> None:
    async with serving() as addr:
        assert await get(addr, "/status") == (200, {"ok": True})
        assert await get(addr, "/metrics") == (200, b"up 1\n")
        status, doc = await get(addr, "/echo")
        assert status == 200
        assert doc == {"method": "GET", "path": "/echo", "query": {}, "body": {}}
        status, doc = await get(addr, "/nope")
        assert status == 404 and "GET /status" in doc["error"] and "POST /echo" in doc["error"]
        # an old-style route is GET only
        assert (await exchange(addr, post("/status", b"{}")))[0] == 404


async def test_query_parsing_is_decoded_and_bounded() -> None:
    async with serving() as addr:
        status, doc = await get(addr, "/echo?a=1&b=x%20y&c=")
        assert status == 200 and doc["path"] == "/echo"
        assert doc["query"] == {"a": "1", "b": "x y", "c": ""}
        status, doc = await get(addr, "/echo?a=1&a=2")
        assert status == 400 and "twice" in doc["error"]
        many = "&".join(f"k{i}=v" for i in range(QUERY_FIELDS_MAX + 1))
        status, doc = await get(addr, f"/echo?{many}")
        assert status == 400 and "query parameters" in doc["error"]


async def test_post_carries_a_json_object() -> None:
    async with serving() as addr:
        status, doc = await exchange(addr, post("/echo?x=1", b'{"amount": 5}'))
        assert status == 200
        assert doc["query"] == {"x": "1"} and doc["body"] == {"amount": 5}
        assert (await exchange(addr, post("/echo", b"")))[1]["body"] == {}


async def test_post_body_errors_are_400_with_a_reason() -> None:
    async with serving() as addr:
        cases = {
            b"POST /echo HTTP/1.0\r\n\r\n{}": "Content-Length",
            post("/echo", b"", length=REQUEST_BODY_BYTES_MAX + 1): "exceeds",
            post("/echo", b"{not json"): "not valid JSON",
            post("/echo", b"[1, 2]"): "JSON object",
            post("/echo", b'{"a": NaN}'): "not valid JSON",
            post("/echo", b'{"a": "\xff"}'): "not valid JSON",
            post("/echo", b"{}", length=10): "body ended",
            b"POST /echo HTTP/1.0\r\nContent-Length: -1\r\n\r\n": "bad Content-Length",
            b"POST /echo HTTP/1.0\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}": "duplicate",
        }
        for raw, reason in cases.items():
            status, doc = await exchange(addr, raw)
            assert (status, reason in doc["error"]) == (400, True), (raw, doc)


async def test_a_body_of_the_maximum_size_is_accepted() -> None:
    async with serving() as addr:
        filler = "x" * (REQUEST_BODY_BYTES_MAX - len('{"f": ""}'))
        body = json.dumps({"f": filler}).encode()
        assert len(body) == REQUEST_BODY_BYTES_MAX
        status, doc = await exchange(addr, post("/echo", body))
        assert status == 200 and doc["body"]["f"] == filler


async def test_with_a_token_every_post_needs_it_and_gets_stay_open() -> None:
    async with serving(token=TOKEN) as addr:
        status, doc = await exchange(addr, post("/echo", b"{}"))
        assert status == 403 and "Bearer" in doc["error"]
        assert (await exchange(addr, post("/echo", b"{}", token="cd" * 32)))[0] == 403
        assert (await exchange(addr, post("/echo", b"{}", token=TOKEN)))[0] == 200
        assert (await get(addr, "/status"))[0] == 200


async def test_a_control_error_answers_its_status() -> None:
    async with serving() as addr:
        status, doc = await exchange(addr, post("/conflict", b"{}"))
        assert (status, doc) == (409, {"error": "insufficient balance: have 5, need 7"})


async def test_a_handler_bug_is_a_logged_500_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="node.control")
    async with serving() as addr:
        assert await get(addr, "/broken") == (500, {"error": "internal error: RuntimeError"})
        assert await get(addr, "/not-a-reply") == (500, {"error": "internal error: TypeError"})
        assert await get(addr, "/status") == (200, {"ok": True})
    records = [r for r in caplog.records if r.name == "node.control"]
    assert records[0].levelno == logging.ERROR and records[0].exc_info is not None
    assert "GET /broken" in records[0].getMessage()


async def test_an_async_handler_is_awaited() -> None:
    async with serving() as addr:
        status, doc = await exchange(addr, post("/async", b'{"n": 1}'))
        assert status == 200 and doc["async"] is True and doc["body"] == {"n": 1}


async def test_a_handler_past_its_timeout_answers_504_and_is_cancelled() -> None:
    cancelled = trio.Event()

    async def stuck(_request: ControlRequest) -> dict[str, Any]:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async with serving({"POST /stuck": stuck}, handler_timeout_s=0.05) as addr:
        status, doc = await exchange(addr, post("/stuck", b"{}"))
        assert status == 504 and "0.05 s" in doc["error"]
        assert cancelled.is_set()
    assert HANDLER_TIMEOUT_S == 60.0


async def test_cancelling_the_server_cancels_a_running_handler() -> None:
    entered, exited = trio.Event(), trio.Event()

    async def stuck(_request: ControlRequest) -> dict[str, Any]:
        entered.set()
        try:
            await trio.sleep_forever()
        finally:
            exited.set()

    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(serve_control, "127.0.0.1:0", {"GET /stuck": stuck})
            nursery.start_soon(get, addr, "/stuck")
            await entered.wait()
            nursery.cancel_scope.cancel()
    assert exited.is_set()


def test_route_keys_are_checked() -> None:
    for key in ("PUT /x", "GET x", "status", "GET /a b"):
        with pytest.raises(ValueError):
            compile_routes({key: echo})
    with pytest.raises(ValueError, match="twice"):
        compile_routes({"/x": lambda: {}, "GET /x": echo})


def test_control_error_needs_an_error_status() -> None:
    assert ControlError(422, "bad peer id").status == 422
    with pytest.raises(ValueError):
        ControlError(200, "fine")


# -- the token file --------------------------------------------------------------------------


def test_the_token_is_fresh_private_and_readable(tmp_path: Path) -> None:
    assert read_control_token(tmp_path) is None
    first = write_control_token(tmp_path)
    path = tmp_path / CONTROL_TOKEN_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 64 and int(first, 16) >= 0
    assert read_control_token(tmp_path) == first
    second = write_control_token(tmp_path)
    assert second != first and read_control_token(tmp_path) == second
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONTROL_TOKEN_FILE_NAME]
    path.write_text("not a token\n")
    with pytest.raises(DataDirError, match="malformed"):
        read_control_token(tmp_path)
    remove_control_token(tmp_path)
    assert read_control_token(tmp_path) is None


# -- the client ------------------------------------------------------------------------------


async def test_the_client_talks_to_the_server() -> None:
    async with serving(token=TOKEN) as addr:
        call = partial(control_request, addr)
        assert await trio.to_thread.run_sync(call, "GET", "/status") == (200, {"ok": True})
        assert await trio.to_thread.run_sync(call, "GET", "/metrics") == (200, "up 1\n")
        status, doc = await trio.to_thread.run_sync(call, "POST", "/echo", {"a": 1}, TOKEN)
        assert status == 200 and doc["body"] == {"a": 1}
        status, _ = await trio.to_thread.run_sync(call, "POST", "/echo", {"a": 1})
        assert status == 403
        status, doc = await trio.to_thread.run_sync(call, "POST", "/conflict", None, TOKEN)
        assert (status, doc["error"]) == (409, "insufficient balance: have 5, need 7")


def test_the_client_says_when_no_node_runs() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ControlUnreachable) as info:
        control_request(f"127.0.0.1:{port}", "GET", "/status", timeout_s=2.0)
    message = str(info.value)
    assert message == (f"no node is running at 127.0.0.1:{port} (connection refused); "
                       "start it with `dsperse-node run`")  # fmt: skip
    with pytest.raises(ControlUnreachable, match="HOST:PORT"):
        control_request("nowhere", "GET", "/status")


def test_the_client_times_out_with_one_line() -> None:
    with socket.socket() as s:  # listens, never answers
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        addr = f"127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(ControlUnreachable, match=r"did not answer GET /status within 0.2 s"):
            control_request(addr, "GET", "/status", timeout_s=0.2)
