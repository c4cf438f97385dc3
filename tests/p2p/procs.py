"""Real `dsperse-node run` processes for integration tests and the benchmark.

Each node gets its own data dir (`dsperse-node init`), listens on 127.0.0.1 port 0, logs JSON
lines on stderr. Reader threads put every stdout line and every JSON event into a queue; tests
wait on the queue with a timeout (never a sleep).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Event = dict[str, Any]
REPO = Path(__file__).resolve().parents[2]


def init_data_dirs(dirs: Sequence[Path]) -> None:
    """`dsperse-node init` for each dir, all at once."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "node", "init", "--data-dir", str(d)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=REPO,
        )
        for d in dirs
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"init failed: {err.decode()}")


class NodeProc:
    """One node process and the events it has reported so far."""

    def __init__(self, data_dir: Path, extra_args: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.extra_args = list(extra_args)
        self.events: list[Event] = []
        self.peer_id = ""
        self.addr = ""
        self.control = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._queue: queue.Queue[Event] = queue.Queue()

    def start(self, bootstrap: Sequence[str] = (), advert_interval_s: float = 1.0) -> None:
        args = [sys.executable, "-m", "node", "run", "--data-dir", str(self.data_dir)]
        args += ["--listen", "/ip4/127.0.0.1/tcp/0", "--control-listen", "127.0.0.1:0"]
        args += ["--advert-interval", str(advert_interval_s), "--log-format", "json"]
        for addr in bootstrap:
            args += ["--bootstrap", addr]
        self._queue = queue.Queue()
        self.events = []
        self.addr = self.control = ""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [*args, *self.extra_args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
            env=env,
        )
        for stream, kind in ((self.proc.stdout, "stdout"), (self.proc.stderr, "stderr")):
            threading.Thread(
                target=self._pump, args=(stream, kind, self._queue), daemon=True
            ).start()

    @staticmethod
    def _pump(stream: Any, kind: str, q: queue.Queue[Event]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            if kind == "stderr" and line.startswith("{"):
                try:
                    q.put(json.loads(line))
                    continue
                except json.JSONDecodeError:
                    pass
            q.put({"event": f"{kind}_line", "line": line})
        stream.close()
        q.put({"event": f"{kind}_closed"})

    def _absorb(self, event: Event) -> None:
        self.events.append(event)
        line = event.get("line", "")
        if event["event"] == "stdout_line":
            if line.startswith("peer id:"):
                self.peer_id = line.split()[-1]
            elif line.startswith("listening:") and not self.addr:
                self.addr = line.split()[-1]
            elif line.startswith("control:"):
                self.control = line.split()[-1]

    def wait_for(
        self, predicate: Callable[[Event], bool], timeout_s: float, since: int = 0
    ) -> Event:
        """The first event from index `since` on (seen or new) matching `predicate`."""
        for event in self.events[since:]:
            if predicate(event):
                return event
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.data_dir.name}: no matching event in {timeout_s} s")
            try:
                event = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            self._absorb(event)
            if predicate(event):
                return event

    def wait_ready(self, timeout_s: float = 90) -> None:
        self.wait_for(lambda e: e.get("line", "").startswith("control:"), timeout_s)

    def wait_adverts_from(self, peers: set[str], timeout_s: float) -> None:
        missing = set(peers)
        self.wait_for(
            lambda e: e.get("event") == "advert_received" and _discard(missing, e["peer"]),
            timeout_s,
        )

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.control, timeout=10) as response:
            doc: dict[str, Any] = json.loads(response.read())
        return doc

    def send_signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout_s: float = 20) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return -9


def _discard(missing: set[str], peer: str) -> bool:
    missing.discard(peer)
    return not missing
