"""NetnsLab: namespaces on a private bridge, reachability by TCP, partitions that truly block,
heal, and a teardown that leaves nothing behind (also on SIGTERM).

Reachability is checked with a tiny TCP listener inside one namespace and a connect from
another (both `python` under `ip netns exec`): no ping, and no traffic outside the lab.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from node.control_client import ControlUnreachable
from simnet.netns import (
    NetnsError,
    NetnsLab,
    compute_address,
    is_available,
    list_namespaces,
    netns_control_call,
    run_ip,
)

needs_netns = pytest.mark.skipif(
    not is_available(), reason="needs root and working `ip netns` (namespaces, bridge, veth)"
)
PORT = 7100
CONNECT_TIMEOUT_S = 1.5

LISTENER = """
import socket, sys, time
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
srv.settimeout(0.5)
print("ready", flush=True)
deadline = time.monotonic() + 120  # bounded: it stops by itself
while time.monotonic() < deadline:
    try:
        conn, _ = srv.accept()
    except TimeoutError:
        continue
    conn.close()
"""

JSON_SERVER = """
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        reply = json.dumps({"echo": body, "auth": self.headers.get("Authorization")}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
srv = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
srv.timeout = 30
print("ready", flush=True)
srv.handle_request()  # one request, or none within 30 s
"""


def ours(lab: NetnsLab) -> list[str]:
    return [ns for ns in list_namespaces() if ns.startswith(lab.prefix)]


def start_in(lab: NetnsLab, i: int, script: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*lab.exec_prefix(i), sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def stop(proc: subprocess.Popen[str]) -> int:
    """End a helper we started (if it still runs) and close its pipe."""
    if proc.poll() is None:
        proc.kill()
    code = proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()
    return code


def can_connect(lab: NetnsLab, src: int, dst: int, port: int = PORT) -> bool:
    code = (
        "import socket, sys\n"
        f"socket.create_connection(({lab.address(dst)!r}, {port}), timeout={CONNECT_TIMEOUT_S})"
        ".close()"
    )
    argv = [*lab.exec_prefix(src), sys.executable, "-c", code]
    return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    with NetnsLab(4) as made:
        yield made
    assert ours(made) == []


def test_addresses_follow_the_plan() -> None:
    assert compute_address(0) == "10.213.0.2"
    assert compute_address(249) == "10.213.0.251"
    assert compute_address(250) == "10.213.1.2"
    with pytest.raises(ValueError):
        NetnsLab(0)


def test_a_partition_is_checked_before_anything_changes() -> None:
    lab = NetnsLab(3)  # not built: a bad argument must fail before any `ip` call
    with pytest.raises(ValueError, match="more than one group"):
        lab.partition([[0, 1], [1, 2]])
    with pytest.raises(IndexError):
        lab.partition([[0, 3]])


@needs_netns
def test_namespaces_are_made_with_addresses_and_removed(lab: NetnsLab) -> None:
    names = ours(lab)
    assert sorted(names) == sorted([lab.hub, *(lab.namespace(i) for i in range(4))])
    for i in range(4):
        assert lab.exec_prefix(i) == ["ip", "netns", "exec", lab.namespace(i)]
        shown = run_ip("-n", lab.namespace(i), "-o", "addr", "show")
        assert f"inet {lab.address(i)}/16" in shown and "inet 127.0.0.1/8" in shown
        routes = run_ip("-n", lab.namespace(i), "route", "show")
        assert "default" not in routes  # nothing can leave the lab
        assert lab.bridge_of(i) == "br0"
    lab.teardown()
    assert ours(lab) == []
    lab.teardown()  # idempotent


@needs_netns
def test_tcp_reaches_across_the_bridge_not_across_a_partition_and_again_after_heal(
    lab: NetnsLab,
) -> None:
    listener = start_in(lab, 0, LISTENER, lab.address(0), str(PORT))
    other = start_in(lab, 3, LISTENER, lab.address(3), str(PORT))
    try:
        assert can_connect(lab, 1, 0) and can_connect(lab, 2, 0) and can_connect(lab, 2, 3)
        lab.partition([[0, 1], [2, 3]])
        assert [lab.bridge_of(i) for i in range(4)] == ["brp0", "brp0", "brp1", "brp1"]
        assert can_connect(lab, 1, 0)  # each side stays connected
        assert can_connect(lab, 2, 3)
        assert not can_connect(lab, 2, 0)  # ... and cannot reach the other
        assert not can_connect(lab, 1, 3)
        lab.partition([[1, 2]])  # a new split replaces the old; 0 and 3 are cut off alone
        assert lab.bridge_of(0) is None and lab.bridge_of(3) is None
        assert not can_connect(lab, 1, 0) and not can_connect(lab, 2, 3)
        lab.heal()
        assert [lab.bridge_of(i) for i in range(4)] == ["br0"] * 4
        assert can_connect(lab, 2, 0) and can_connect(lab, 1, 3)
    finally:
        stop(listener)
        stop(other)


@needs_netns
def test_teardown_ends_what_still_runs_inside(lab: NetnsLab) -> None:
    proc = start_in(lab, 2, LISTENER, lab.address(2), str(PORT))
    lab.teardown()
    assert proc.wait(timeout=10) == -signal.SIGKILL
    stop(proc)
    assert ours(lab) == []


@needs_netns
def test_control_call_runs_inside_the_namespace(lab: NetnsLab) -> None:
    server = start_in(lab, 1, JSON_SERVER, str(PORT))
    try:
        call = lab.control_via(1)
        status, reply = call(f"127.0.0.1:{PORT}", "POST", "/x", {"a": 1}, "tok", 5.0)
        assert status == 201 and reply == {"echo": {"a": 1}, "auth": "Bearer tok"}
    finally:
        stop(server)
    # The same port on our own loopback is someone else's (or nobody's) business; inside node 2
    # nothing listens there.
    with pytest.raises(ControlUnreachable, match="connection refused"):
        netns_control_call(lab.namespace(2), f"127.0.0.1:{PORT}", "GET", "/status", timeout_s=2)
    lab.teardown()
    with pytest.raises(ControlUnreachable, match=lab.namespace(2)):
        netns_control_call(lab.namespace(2), f"127.0.0.1:{PORT}", "GET", "/status", timeout_s=2)


@needs_netns
def test_an_ip_failure_names_the_command() -> None:
    with pytest.raises(NetnsError, match="ip netns del dsp-nonexistent-x"):
        run_ip("netns", "del", "dsp-nonexistent-x")


@needs_netns
def test_sigterm_tears_the_lab_down() -> None:
    script = textwrap.dedent("""
        import time
        from simnet.netns import NetnsLab
        with NetnsLab(2) as lab:
            print(lab.prefix, flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    prefix = proc.stdout.readline().strip()
    assert prefix.startswith("dsp-") and any(ns.startswith(prefix) for ns in list_namespaces())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM  # the default action still happens
    proc.stdout.close()
    assert not any(ns.startswith(prefix) for ns in list_namespaces())
