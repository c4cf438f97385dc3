"""Operating errors from the environment print one line on stderr and exit non-zero, no traceback.

Each case runs the real CLI in a subprocess (`python -m node …`), so the whole path is checked:
argument parsing, the command, the error handling in `node.cli.main`, and what reaches stderr.
Programmer errors are the exception: they keep their traceback (checked in-process).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from node.cli import main

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "slicing" / "models"
CLI_TIMEOUT_S = 120.0
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-m", "node", *args],
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`dsperse-node {' '.join(args)}` still running after {exc.timeout} s")


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], command: str, *fragments: str
) -> str:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    line = lines[0]
    assert line.startswith(f"dsperse-node {command}: error: "), line
    for fragment in fragments:
        assert fragment in line, line
    return line


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "node"
    assert main(["init", "--data-dir", str(path)]) == 0
    return path


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something else is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the real CLI ---------------------------------------------------------------------------


def test_slice_with_a_missing_model(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    result = run_cli(
        "slice", str(missing), "--input", str(MODELS / "digits_sample.json"),
        "--out", str(tmp_path / "bundle"), "--no-circuits", "--quiet",
    )  # fmt: skip
    assert_one_line_error(result, "slice", str(missing))


def test_slice_out_under_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n", encoding="utf-8")
    result = run_cli(
        "slice", str(MODELS / "digits_cnn.onnx"), "--input", str(MODELS / "digits_sample.json"),
        "--out", str(blocker / "sub" / "bundle"), "--no-circuits", "--quiet",
    )  # fmt: skip
    assert_one_line_error(result, "slice", str(blocker), "not a directory")
    assert blocker.read_text(encoding="utf-8") == "not a directory\n"


@pytest.mark.skipif(IS_ROOT, reason="root may write into a read-only directory")
def test_slice_out_in_a_read_only_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        result = run_cli(
            "slice", str(MODELS / "digits_cnn.onnx"), "--input",
            str(MODELS / "digits_sample.json"), "--out", str(locked / "bundle"),
            "--no-circuits", "--quiet",
        )  # fmt: skip
    finally:
        locked.chmod(0o700)
    assert_one_line_error(result, "slice", "Permission denied")


def test_run_on_a_port_already_in_use(data_dir: Path, busy_port: int) -> None:
    listen = f"/ip4/127.0.0.1/tcp/{busy_port}"
    result = run_cli("run", "--data-dir", str(data_dir), "--listen", listen)
    assert_one_line_error(result, "run", listen, "in use")
    assert not (data_dir / "control.addr").exists()


def test_dashboard_to_a_closed_port() -> None:
    addr = f"127.0.0.1:{closed_port()}"
    result = run_cli("dashboard", "--control", addr, "--once")
    assert_one_line_error(result, "dashboard", addr, "refused")


def test_id_with_a_key_that_is_a_directory(data_dir: Path) -> None:
    # Readable by nobody as a key file, root included (a chmod 000 file root still reads).
    key = data_dir / "identity.key"
    key.unlink()
    key.mkdir(mode=0o700)
    result = run_cli("id", "--data-dir", str(data_dir))
    assert_one_line_error(result, "id", str(key))


@pytest.mark.skipif(IS_ROOT, reason="root reads a mode-000 file")
def test_id_with_an_unreadable_key(data_dir: Path) -> None:
    key = data_dir / "identity.key"
    key.chmod(0o000)
    try:
        result = run_cli("id", "--data-dir", str(data_dir))
    finally:
        key.chmod(0o600)
    assert_one_line_error(result, "id", str(key))


# -- the handler itself (in-process, with a stand-in command) ---------------------------------


def _command_raising(exc: BaseException) -> SimpleNamespace:
    def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        def fail(args: argparse.Namespace) -> int:
            raise exc

        sub.add_parser("explode").set_defaults(func=fail)

    return SimpleNamespace(register=register)


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (PermissionError(13, "Permission denied", "/x/out"), "Permission denied: /x/out"),
        (IsADirectoryError(21, "Is a directory", "/x/key"), "Is a directory: /x/key"),
        (FileNotFoundError(2, "No such file or directory", "/a", None, "/b"),
         "No such file or directory: /a: /b"),
        (ConnectionRefusedError(111, "Connection refused"), "Connection refused"),
        (OSError("disk on fire"), "disk on fire"),
    ],
)  # fmt: skip
def test_an_os_error_is_one_line(
    exc: OSError, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explode"], extra=(_command_raising(exc),)) == 1  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert err == f"dsperse-node explode: error: {line}\n"


@pytest.mark.parametrize("exc", [RuntimeError("bug"), KeyError("bug"), TypeError("bug")])
def test_a_programmer_error_propagates(exc: Exception) -> None:
    with pytest.raises(type(exc)):
        main(["explode"], extra=(_command_raising(exc),))  # type: ignore[arg-type]
