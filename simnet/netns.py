"""A private multi-host network on this machine, built from Linux network namespaces.

`NetnsLab(count)` makes one *hub* namespace holding a Linux bridge and one namespace per node,
each joined to the bridge by a veth pair and given an address in 10.213.0.0/16 (node i gets
10.213.<i // 250>.<i % 250 + 2>). No namespace has a default route and none is linked to the
host's own namespace, so no packet can leave the lab: every address is on-link, on the bridge.

    with NetnsLab(4) as lab:
        lab.exec_prefix(0)          # ["ip", "netns", "exec", "dsp-1a2b3c-n0"]: run a command there
        lab.address(2)              # "10.213.0.4"
        lab.partition([[0, 1], [2, 3]])
        lab.heal()

Partitions move the hub-side veth ends: each group gets its own bridge in the hub, and the ends
of nodes in no group leave every bridge. A frame only crosses a bridge between its own ports, so
groups cannot reach each other at all (no ARP, no TCP: packets are dropped, not refused, like a
real network split) while each group stays fully connected. `heal()` puts every end back on the
main bridge and deletes the group bridges. Established TCP connections survive a partition.

Every name carries a random run tag (`dsp-<6 hex>-hub`, `dsp-<6 hex>-n<i>`), so runs never
collide. `teardown()` (idempotent) kills what still runs in the lab's namespaces and deletes
them; it also runs at exit and on SIGINT/SIGTERM while the lab is entered (the previous signal
handlers are chained to, and restored on exit). Every `ip` call is bounded by a timeout and a
failure raises `NetnsError` naming the command.

A node's control API listens on 127.0.0.1 *inside its namespace*: `netns_control_call` reaches it
by running `python -m simnet.netns call` there (one request, JSON in on stdin, JSON out), and
`NetnsLab.control_via(i)` is that call bound to node i, to plug into `NodeProcess.control_via`.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from node.errors import NodeError

IP_TIMEOUT_S = 10.0
CALL_MARGIN_S = 10.0  # `ip netns exec` + interpreter start-up, on top of the request's own timeout
SUBNET_PREFIX = "10.213"
SUBNET_BITS = 16
HOSTS_PER_OCTET = 250
COUNT_MAX = 250 * 64  # 10.213.0.x .. 10.213.63.x
MAIN_BRIDGE = "br0"
NODE_IFACE = "eth0"
NAME_PREFIX = "dsp-"

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class NetnsError(RuntimeError):
    """An `ip` command failed or timed out (the message names the command and its stderr)."""


def run_ip(*args: str, timeout_s: float = IP_TIMEOUT_S) -> str:
    """`ip ARGS...` with a timeout; its stdout, or `NetnsError` naming the failing command."""
    argv = ["ip", *args]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise NetnsError(f"`{' '.join(argv)}` did not finish within {timeout_s:g} s") from None
    except OSError as exc:
        raise NetnsError(f"cannot run `{' '.join(argv)}`: {exc}") from None
    if proc.returncode != 0:
        raise NetnsError(
            f"`{' '.join(argv)}` exited {proc.returncode}: {proc.stderr.strip() or '(no output)'}"
        )
    return proc.stdout


def list_namespaces() -> list[str]:
    """Names of every named network namespace on this machine (`ip netns list`)."""
    return [line.split()[0] for line in run_ip("netns", "list").splitlines() if line.strip()]


@functools.cache
def is_available() -> bool:
    """True if we are root and can make a namespace with a bridge and a veth pair in it."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"{NAME_PREFIX}{secrets.token_hex(3)}-probe"
    try:
        run_ip("netns", "add", probe)
    except NetnsError:
        return False
    try:
        run_ip("-n", probe, "link", "add", "br0", "type", "bridge")
        run_ip("-n", probe, "link", "add", "va", "type", "veth", "peer", "name", "vb")
        run_ip("-n", probe, "link", "set", "va", "master", "br0")
        return True
    except NetnsError:
        return False
    finally:
        with contextlib.suppress(NetnsError):
            run_ip("netns", "del", probe)


def compute_address(i: int) -> str:
    """Node i's address in the lab's /16 (.0, .1 and .250-.255 of each /24 are never used)."""
    return f"{SUBNET_PREFIX}.{i // HOSTS_PER_OCTET}.{i % HOSTS_PER_OCTET + 2}"


class NetnsLab:
    """`count` namespaces on one private bridge (see the module docstring)."""

    def __init__(self, count: int, tag: str | None = None) -> None:
        if not 1 <= count <= COUNT_MAX:
            raise ValueError(f"count must be in 1..{COUNT_MAX}, not {count}")
        self.count = count
        self.tag = tag or secrets.token_hex(3)
        self.hub = f"{NAME_PREFIX}{self.tag}-hub"
        self._made: list[str] = []  # namespaces that exist now, in creation order
        self._group_bridges: list[str] = []
        self._lock = threading.RLock()  # the signal handler may run while the lock is held
        self._old_handlers: dict[int, _Handler] = {}
        self._atexit_registered = False

    # --- naming -------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        """Every namespace of this lab starts with this (the run tag)."""
        return f"{NAME_PREFIX}{self.tag}-"

    def namespace(self, i: int) -> str:
        self._check_index(i)
        return f"{self.prefix}n{i}"

    def address(self, i: int) -> str:
        self._check_index(i)
        return compute_address(i)

    def exec_prefix(self, i: int) -> list[str]:
        """Prepend to an argv to run it inside node i's namespace."""
        return ["ip", "netns", "exec", self.namespace(i)]

    def control_via(self, i: int) -> Callable[..., tuple[int, Any]]:
        """`netns_control_call` bound to node i's namespace (for `NodeProcess.control_via`)."""
        return functools.partial(netns_control_call, self.namespace(i))

    def _hub_iface(self, i: int) -> str:
        return f"v{i}"

    def _check_index(self, i: int) -> None:
        if not 0 <= i < self.count:
            raise IndexError(f"node index {i} is not in 0..{self.count - 1}")

    # --- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> NetnsLab:
        self._install_cleanup()
        try:
            self.build()
        except BaseException:
            self.teardown()
            self._remove_cleanup()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.teardown()
        finally:
            self._remove_cleanup()

    def build(self) -> None:
        """Make the hub with its bridge, then every node namespace on it."""
        with self._lock:
            if self._made:
                raise NetnsError(f"lab {self.tag} is already built")
            self._add_namespace(self.hub)
            run_ip("-n", self.hub, "link", "set", "lo", "up")
            run_ip("-n", self.hub, "link", "add", MAIN_BRIDGE, "type", "bridge", "stp_state", "0")
            run_ip("-n", self.hub, "link", "set", MAIN_BRIDGE, "up")
            for i in range(self.count):
                ns, hub_end = self.namespace(i), self._hub_iface(i)
                self._add_namespace(ns)
                # Both ends are created inside namespaces: nothing ever appears on the host.
                run_ip("-n", self.hub, "link", "add", hub_end, "type", "veth",
                       "peer", "name", NODE_IFACE, "netns", ns)  # fmt: skip
                run_ip("-n", self.hub, "link", "set", hub_end, "master", MAIN_BRIDGE)
                run_ip("-n", self.hub, "link", "set", hub_end, "up")
                run_ip("-n", ns, "link", "set", "lo", "up")
                run_ip("-n", ns, "addr", "add", f"{self.address(i)}/{SUBNET_BITS}",
                       "dev", NODE_IFACE)  # fmt: skip
                run_ip("-n", ns, "link", "set", NODE_IFACE, "up")

    def _add_namespace(self, ns: str) -> None:
        run_ip("netns", "add", ns)
        self._made.append(ns)

    def teardown(self) -> None:
        """Kill what still runs in the lab's namespaces and delete them all (idempotent)."""
        with self._lock:
            errors = []
            for ns in reversed(self._made):
                try:
                    self._kill_processes(ns)
                    run_ip("netns", "del", ns)
                except NetnsError as exc:
                    if ns in _existing_namespaces():
                        errors.append(str(exc))
                        continue
                self._made.remove(ns)
            self._group_bridges = []
            if errors:
                raise NetnsError("; ".join(errors))

    def _kill_processes(self, ns: str) -> None:
        """SIGKILL the processes still inside one of our namespaces (ours by construction)."""
        for word in run_ip("netns", "pids", ns).split():
            if word.isdigit() and int(word) != os.getpid():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(word), signal.SIGKILL)

    def _install_cleanup(self) -> None:
        if not self._atexit_registered:
            atexit.register(self.teardown)
            self._atexit_registered = True
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread; atexit still holds
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[signum] = signal.signal(signum, self._on_signal)

    def _remove_cleanup(self) -> None:
        if self._atexit_registered:
            atexit.unregister(self.teardown)
            self._atexit_registered = False
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._old_handlers = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        previous = self._old_handlers.get(signum, signal.SIG_DFL)
        try:
            self.teardown()
        except NetnsError as exc:
            print(f"netns teardown on signal {signum} failed: {exc}", file=sys.stderr)
        self._remove_cleanup()
        if callable(previous):
            previous(signum, frame)  # SIGINT's default handler raises KeyboardInterrupt
        elif previous == signal.SIG_DFL:
            os.kill(os.getpid(), signum)  # the default action, now that the handler is back

    # --- faults -------------------------------------------------------------------------

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        """Split the network: each group on its own bridge; nodes in no group reach nobody."""
        seen: set[int] = set()
        for group in groups:
            for i in group:
                self._check_index(i)
                if i in seen:
                    raise ValueError(f"node {i} is in more than one group")
                seen.add(i)
        self.heal()
        with self._lock:
            for i in range(self.count):
                if i not in seen:
                    run_ip("-n", self.hub, "link", "set", self._hub_iface(i), "nomaster")
            for k, group in enumerate(groups):
                bridge = f"brp{k}"
                run_ip("-n", self.hub, "link", "add", bridge, "type", "bridge", "stp_state", "0")
                self._group_bridges.append(bridge)
                run_ip("-n", self.hub, "link", "set", bridge, "up")
                for i in group:
                    run_ip("-n", self.hub, "link", "set", self._hub_iface(i), "master", bridge)

    def heal(self) -> None:
        """Every node back on the main bridge; the group bridges are deleted."""
        with self._lock:
            for i in range(self.count):
                run_ip("-n", self.hub, "link", "set", self._hub_iface(i), "master", MAIN_BRIDGE)
            for bridge in self._group_bridges:
                run_ip("-n", self.hub, "link", "del", bridge)
            self._group_bridges = []

    def bridge_of(self, i: int) -> str | None:
        """The hub bridge node i's veth end is on now (None if it is on none)."""
        out = run_ip("-n", self.hub, "-o", "link", "show", self._hub_iface(i))
        words = out.split()
        return words[words.index("master") + 1] if "master" in words else None


def _existing_namespaces() -> set[str]:
    try:
        return set(list_namespaces())
    except NetnsError:
        return set()


# --- the control API from outside the namespace ---------------------------------------------


def netns_control_call(
    ns: str,
    addr: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    token: str | None = None,
    timeout_s: float = 10.0,
) -> tuple[int, Any]:
    """`control_request` run inside namespace `ns`: (HTTP status, JSON reply).

    The request (token included) goes on the child's stdin, never on its command line. A node
    that does not answer raises `ControlUnreachable`, as the loopback client does."""
    from node.control_client import ControlReplyError, ControlUnreachable

    request = {"addr": addr, "method": method, "path": path, "body": body, "token": token,
               "timeout_s": timeout_s}  # fmt: skip
    argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "simnet.netns", "call"]
    try:
        proc = subprocess.run(
            argv,
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=timeout_s + CALL_MARGIN_S,
        )
    except subprocess.TimeoutExpired:
        raise ControlUnreachable(
            f"the node at {addr} in {ns} did not answer {method} {path} within "
            f"{timeout_s + CALL_MARGIN_S:g} s"
        ) from None
    try:
        reply = json.loads(proc.stdout)
    except ValueError:
        raise ControlUnreachable(
            f"cannot reach the node at {addr} in {ns} (exit {proc.returncode}): "
            f"{proc.stderr.strip()[-500:] or '(no output)'}"
        ) from None
    if not isinstance(reply, dict):
        raise ControlReplyError(f"`{' '.join(argv)}` printed {reply!r}")
    if "error" in reply:
        kind = ControlReplyError if reply.get("kind") == "reply" else ControlUnreachable
        raise kind(f"{reply['error']} (in {ns})")
    return int(reply["status"]), reply["reply"]


def _main_call() -> int:
    """Read one request as JSON on stdin, send it, print `{status, reply}` or `{error, kind}`."""
    from node.control_client import ControlReplyError, control_request

    request = json.loads(sys.stdin.read())
    try:
        status, reply = control_request(
            request["addr"],
            request["method"],
            request["path"],
            request.get("body"),
            request.get("token"),
            float(request.get("timeout_s", 10.0)),
        )
    except ControlReplyError as exc:
        print(json.dumps({"error": str(exc), "kind": "reply"}))
        return 1
    except NodeError as exc:
        print(json.dumps({"error": str(exc), "kind": "unreachable"}))
        return 1
    print(json.dumps({"status": status, "reply": reply}))
    return 0


def main(argv: Sequence[str]) -> int:
    if list(argv) != ["call"]:
        print("usage: python -m simnet.netns call   (one control request as JSON on stdin)",
              file=sys.stderr)  # fmt: skip
        return 2
    return _main_call()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
