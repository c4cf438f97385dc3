"""Helpers shared by the tests that drive real node processes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

POLL_S = 0.2


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll `cond` until it holds (a cross-process condition: the processes share no events
    with the test); the seconds it took. Raises AssertionError naming `what` on timeout."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(POLL_S)
    return time.monotonic() - start


def cli(
    *args: str, check: bool = False, timeout_s: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """`dsperse-node ARGS` in a subprocess; with `check`, a non-zero exit fails the test."""
    proc = subprocess.run(
        [sys.executable, "-m", "simnet", *args], capture_output=True, text=True, timeout=timeout_s
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}: {proc.stderr}")
    return proc
