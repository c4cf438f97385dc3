"""Real node processes for the simnet: start, read their announced addresses, poll, kill, restart.

Each node is `python -m simnet run --data-dir D ...` (the same code path as `dsperse-node run`).
Its stdout header (peer id, listen multiaddrs, control URL) is read by a thread; its stderr (JSON
log lines) goes to `<data dir>/node.log`. Every wait has a timeout; nothing here sleeps to
synchronise except the status poll interval of the caller.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from node.cli.cmd_identity import init_data_dir as create_data_dir
from node.identity import KEY_FILE_NAME, NodeIdentity, load_identity

STATUS_TIMEOUT_S = 2.0
STOP_TIMEOUT_S = 15.0
STATUS_BYTES_MAX = 4 << 20

# (control addr, method, path, body, token, timeout_s) -> (HTTP status, JSON): how `call` reaches
# a node whose control API is not on our loopback (e.g. inside a network namespace).
ControlVia = Callable[[str, str, str, dict[str, Any] | None, str | None, float], tuple[int, Any]]


def init_data_dir(data_dir: Path) -> NodeIdentity:
    """A node data dir made by `dsperse-node init`'s own code, or the existing one reused."""
    key_path = data_dir / KEY_FILE_NAME
    if key_path.exists():
        return load_identity(key_path)
    return create_data_dir(data_dir)


@dataclass
class NodeProcess:
    """One `dsperse-node run` child process and what it announced."""

    name: str
    data_dir: Path
    advert_interval_s: float = 1.0
    peer_id: str = ""
    listen_addrs: list[str] = field(default_factory=list)
    control_url: str = ""
    restarts: int = 0
    state: str = "down"
    extra_args: list[str] = field(default_factory=list)  # e.g. ["--resync"]
    argv_prefix: list[str] = field(default_factory=list)  # e.g. ["ip", "netns", "exec", "ns1"]
    listen: str = "/ip4/127.0.0.1/tcp/0"
    control_via: ControlVia | None = None  # None: the control API is on our own loopback
    popen: subprocess.Popen[str] | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _reader: threading.Thread | None = None
    _log_file: TextIO | None = None

    def start(self, bootstrap: list[str]) -> None:
        """Spawn the node; `wait_ready` tells when it has printed its addresses."""
        if self.popen is not None and self.popen.poll() is None:
            raise RuntimeError(f"{self.name} is already running")  # programmer error
        self._ready = threading.Event()
        self.listen_addrs = []
        self.control_url = ""
        argv = [
            *self.argv_prefix,
            sys.executable,
            "-m",
            "simnet",
            "run",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            self.listen,
            "--control-listen",
            "127.0.0.1:0",
            "--advert-interval",
            str(self.advert_interval_s),
            "--log-format",
            "json",
        ]
        for addr in bootstrap:
            argv += ["--bootstrap", addr]
        argv += self.extra_args
        self._log_file = open(self.data_dir / "node.log", "a", encoding="utf-8")  # noqa: SIM115
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.popen = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.state = "starting"
        self._reader = threading.Thread(target=self._read_header, args=(self.popen,), daemon=True)
        self._reader.start()

    def _read_header(self, popen: subprocess.Popen[str]) -> None:
        assert popen.stdout is not None
        for line in popen.stdout:
            key, _, value = line.partition(":")
            value = value.strip()
            if key == "peer id":
                self.peer_id = value
            elif key == "listening":
                self.listen_addrs.append(value)
            elif key == "control":
                self.control_url = value
                self._ready.set()
        popen.stdout.close()
        self._ready.set()  # EOF: the process ended; wait_ready sees it is not running

    def wait_ready(self, timeout_s: float) -> bool:
        """True once the node printed its control URL; False on timeout or early exit."""
        ok = self._ready.wait(timeout_s) and self.is_running() and bool(self.control_url)
        self.state = "up" if ok else "down"
        return ok

    def is_running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def bootstrap_addr(self) -> str:
        loopback = [a for a in self.listen_addrs if a.startswith("/ip4/127.")]
        if self.listen.startswith("/ip4/127."):
            return (loopback or self.listen_addrs)[0]
        others = [a for a in self.listen_addrs if not a.startswith("/ip4/127.")]
        return (others or self.listen_addrs)[0]

    @property
    def control_addr(self) -> str:
        """host:port of the control API (from the announced URL)."""
        return self.control_url.removeprefix("http://").split("/", 1)[0]

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout_s: float = 10.0
    ) -> tuple[int, Any]:
        """One control API request (POSTs carry the node's token): (HTTP status, JSON)."""
        from node.control import read_control_token
        from node.control_client import control_request

        token = read_control_token(self.data_dir) if method == "POST" else None
        if self.control_via is not None:
            return self.control_via(self.control_addr, method, path, body, token, timeout_s)
        return control_request(self.control_addr, method, path, body, token, timeout_s)

    def ledger(self) -> dict[str, Any] | None:
        """`GET /ledger` (the replica: root, entries, accounts, sync), or None if unreachable."""
        from node.errors import NodeError

        if not self.control_url or not self.is_running():
            return None
        try:
            status, doc = self.call("GET", "/ledger", timeout_s=STATUS_TIMEOUT_S * 2)
        except NodeError:
            return None
        return doc if status == 200 and isinstance(doc, dict) else None

    def status(self) -> dict[str, Any] | None:
        """The node's control API `/status`, or None if it does not answer in time."""
        if not self.control_url or not self.is_running():
            return None
        try:
            with urllib.request.urlopen(self.control_url, timeout=STATUS_TIMEOUT_S) as reply:
                doc: dict[str, Any] = json.loads(reply.read(STATUS_BYTES_MAX))
                return doc
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def rss_mb(self) -> float:
        if not self.is_running() or self.popen is None:
            return 0.0
        try:
            text = Path(f"/proc/{self.popen.pid}/status").read_text()
        except OSError:
            return 0.0
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def kill(self) -> None:
        """SIGKILL: no chance to flush or say goodbye (the crash fault)."""
        if self.popen is not None and self.is_running():
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=STOP_TIMEOUT_S)
        self.state = "killed"
        self._close_log()

    def stop(self) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not stop in time. The exit code (None if killed)."""
        if self.popen is None:
            return None
        if self.is_running():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=STOP_TIMEOUT_S)
                self.state = "killed"
                self._close_log()
                return None
        self.state = "down"
        self._close_log()
        return self.popen.returncode

    def _close_log(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=STOP_TIMEOUT_S)  # it closes stdout at EOF
            self._reader = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
