"""Run one EZKL job in a freshly spawned Python process, with time and memory caps and peak RSS.

EZKL holds the GIL for a whole proof and its thread pool deadlocks after fork (docs/ezkl-pitfalls.md
E1, E2), so the parent never imports ezkl: every job is `python -m slicing.worker REQUEST RESULT` in
a new process (spawned, never forked), named by an operation of `slicing.ezkl_prover.OPS` and JSON
arguments. The parent blocks in `os.wait4` (which releases the GIL) while a monitor thread samples
/proc/<pid>/status and kills the child at the caps. Peak RSS is the larger of the sampled peak and
the VmHWM the child reports itself; its ru_maxrss is not its own (docs/ezkl-pitfalls.md E3).

Another thread can cancel a job: pass `cancel=` (a `threading.Event`) or run the calls inside
`cancel_on(event)`, which covers every job the calling thread starts in the block (e.g. the setup
and prove jobs of one `EzklProver.prove_slice`). Once the event is set the monitor kills the child
within `MONITOR_INTERVAL_S`, and run_job raises `WorkerCancelled`; a job not started yet is never
spawned.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slicing.errors import WorkerCapExceeded, WorkerError

MONITOR_INTERVAL_S = 0.1
LOG_TAIL_CHARS = 400


class WorkerCancelled(WorkerError):
    """A job was cancelled from another thread (its cancel event was set); its child is gone."""


_local = threading.local()  # .cancel: the event `cancel_on` installed for this thread


@contextmanager
def cancel_on(event: threading.Event) -> Iterator[None]:
    """Every `run_job` this thread starts inside the block is cancelled when `event` is set."""
    previous = getattr(_local, "cancel", None)
    _local.cancel = event
    try:
        yield
    finally:
        _local.cancel = previous


@dataclass(frozen=True, slots=True)
class WorkerResult:
    """What a job returned (JSON), how long it ran and the peak resident memory of its process."""

    value: Any
    wall_s: float
    peak_rss_mb: float


def _read_rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a live process in kB; (0, 0) once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    rss = int(fields.get("VmRSS", "0 kB").split()[0])
    hwm = int(fields.get("VmHWM", "0 kB").split()[0])
    return rss, hwm


class _Monitor(threading.Thread):
    """Samples a child's RSS; kills it when it passes the time or memory cap."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        timeout_s: float,
        max_rss_mb: float | None,
        cancel: threading.Event | None = None,
    ):
        super().__init__(daemon=True)
        self.proc = proc
        self.timeout_s = timeout_s
        self.max_rss_mb = max_rss_mb
        self.cancel = cancel
        self.stop = threading.Event()
        self.started_at = time.monotonic()
        self.peak_kb = 0
        self.cap_hit: str | None = None  # "time", "memory" or "cancelled"

    def run(self) -> None:
        while not self.stop.wait(MONITOR_INTERVAL_S):
            rss, hwm = _read_rss_kb(self.proc.pid)
            self.peak_kb = max(self.peak_kb, rss, hwm)
            if self.cancel is not None and self.cancel.is_set():
                self.cap_hit = "cancelled"
            elif time.monotonic() - self.started_at > self.timeout_s:
                self.cap_hit = "time"
            elif self.max_rss_mb is not None and self.peak_kb / 1024 > self.max_rss_mb:
                self.cap_hit = "memory"
            if self.cap_hit is not None:
                self.proc.kill()
                return


def run_job(
    op: str,
    args: dict[str, Any],
    *,
    timeout_s: float,
    max_rss_mb: float | None = None,
    cancel: threading.Event | None = None,
) -> WorkerResult:
    """Run `slicing.ezkl_prover.OPS[op](**args)` in a new process: JSON result, time, peak RSS.

    Raises WorkerCapExceeded when killed at a cap, WorkerCancelled when `cancel` (by default the
    event of an enclosing `cancel_on`) is set, WorkerError when the job raised or crashed.
    """
    if cancel is None:
        cancel = getattr(_local, "cancel", None)
    if cancel is not None and cancel.is_set():
        raise WorkerCancelled(f"{op}: cancelled before it started")
    with tempfile.TemporaryDirectory(prefix="dsperse-job-") as tmp:
        request, result, log = Path(tmp, "request.json"), Path(tmp, "result.json"), Path(tmp, "log")
        request.write_text(json.dumps({"op": op, "args": args}))
        cmd = [sys.executable, "-m", "slicing.worker", str(request), str(result)]
        with log.open("wb") as log_file:
            proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
            monitor = _Monitor(proc, timeout_s, max_rss_mb, cancel)
            monitor.start()
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            except BaseException:  # interrupted (Ctrl-C): never leave a prover running behind us
                proc.kill()
                os.waitpid(proc.pid, 0)
                proc.returncode = -9
                raise
            finally:
                monitor.stop.set()
                monitor.join(timeout=5.0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall_s = time.monotonic() - monitor.started_at
        del usage  # ru_maxrss is no good here: Linux carries the pre-exec high-water mark over
        # exec, so a child spawned from a large parent (e.g. a test process holding big models)
        # would report the parent's RSS. The child's own VmHWM (after exec) is in the result.
        peak_kb = monitor.peak_kb
        if monitor.cap_hit == "cancelled":
            raise WorkerCancelled(f"{op}: cancelled after {wall_s:.1f} s (worker killed)")
        if monitor.cap_hit is not None:
            raise WorkerCapExceeded(monitor.cap_hit, wall_s, peak_kb / 1024)
        if not result.exists():
            tail = log.read_text(errors="replace")[-LOG_TAIL_CHARS:].strip().replace("\n", " | ")
            raise WorkerError(f"worker for {op} died (exit {proc.returncode}): {tail}")
        outcome = json.loads(result.read_text())
        peak_kb = max(peak_kb, int(outcome.get("vm_hwm_kb", 0)))
        peak_mb = peak_kb / 1024
    if not outcome["ok"]:
        raise WorkerError(f"{op}: {outcome['error']}")
    return WorkerResult(value=outcome["value"], wall_s=wall_s, peak_rss_mb=peak_mb)


def main(argv: list[str]) -> int:
    """Child side: run one operation and write {"ok", "value" | "error"} atomically."""
    request_path, result_path = Path(argv[0]), Path(argv[1])
    request = json.loads(request_path.read_text())
    from slicing import ezkl_prover  # only in the child: the parent never loads ezkl

    try:
        value = ezkl_prover.OPS[request["op"]](**request["args"])
        outcome: dict[str, Any] = {"ok": True, "value": value}
    except Exception as exc:  # the process boundary: report any failure as one line, then exit
        message = " ".join(str(exc).split()) or type(exc).__name__
        outcome = {"ok": False, "error": f"{type(exc).__name__}: {message}"[:LOG_TAIL_CHARS]}
    outcome["vm_hwm_kb"] = _read_rss_kb(os.getpid())[1]  # this process's own peak, after exec
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(outcome))
    tmp.replace(result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
