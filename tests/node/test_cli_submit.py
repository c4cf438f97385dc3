"""`dsperse-node submit` against a real control server (in a background thread) with a fake node.

`FakeMarketNode` is a test double of the node side of the job routes (`POST /jobs`, `GET /job`):
it records the submission and answers each poll with the next document of a script, so a test
fixes exactly which states the command sees. Polling is sped up by patching the interval.
"""

from __future__ import annotations

import io
import json
import queue
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from rich.console import Console

from node.cli import cmd_submit, main
from node.control import (
    CONTROL_FILE_NAME,
    ControlError,
    ControlRequest,
    Routes,
    serve_control,
    write_control_file,
    write_control_token,
)

JOB = "ab" * 32
P0 = "12D3KooWProverZeroxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxabc000"
P1 = "12D3KooWProverOnexxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxabc111"
LOGITS = [0.5, -1.0, 15.25, 4.0, -16.0, 0.0, -8.0, 0.25, -5.0, -2.5]


def job_doc(state: str, slices: list[tuple[str, str, int, int]], **extra: Any) -> dict[str, Any]:
    rows = [
        {
            "index": i,
            "state": s,
            "prover": p,
            "round": r,
            "price": price,
            "proof_hash": f"{i:x}" * 64 if s in ("proven", "verified") else "",
        }
        for i, (s, p, r, price) in enumerate(slices)
    ]
    doc = {
        "job_id": JOB,
        "state": state,
        "reason": "",
        "elapsed_s": 1.5,
        "slices": rows,
        "paid": 0,
        "escrow": 40,
        "refunded": 0,
        "chain": "",
        "result_dir": "",
    }
    doc.update(extra)
    return doc


OPEN = ("open", "", 0, 0)
SCRIPT_DONE = [
    job_doc("announced", [OPEN, OPEN]),
    job_doc("bidding", [OPEN, OPEN]),
    job_doc("proving", [("awarded", P0, 1, 10), ("awarded", P1, 1, 11)]),
    job_doc("proving", [("proven", P0, 1, 10), ("awarded", P1, 1, 11)]),
    job_doc("verifying", [("verified", P0, 1, 10), ("proven", P1, 1, 11)]),
    job_doc(
        "done",
        [("verified", P0, 1, 10), ("verified", P1, 1, 11)],
        paid=21,
        refunded=19,
        chain="ok",
        outputs={"logits": {"shape": [1, 10], "data": LOGITS}},
        result_dir="/tmp/r",
    ),
]


class FakeMarketNode:
    def __init__(self, script: list[dict[str, Any]], refusal: str = "") -> None:
        self.script, self.refusal = script, refusal
        self.submitted: list[dict[str, Any]] = []
        self.polls: list[str] = []

    def routes(self) -> Routes:
        return {"POST /jobs": self.submit, "GET /job": self.job}

    def submit(self, request: ControlRequest) -> dict[str, Any]:
        if self.refusal:
            raise ControlError(409, self.refusal)
        self.submitted.append(request.body)
        return {"job_id": JOB, "slices": 2, "escrow": 40}

    def job(self, request: ControlRequest) -> dict[str, Any]:
        job_id = request.query.get("id", "")
        if job_id != JOB:
            raise ControlError(404, f"no job {job_id}")
        self.polls.append(job_id)
        return self.script[min(len(self.polls), len(self.script)) - 1]


@contextmanager
def running_node(data_dir: Path, node: FakeMarketNode) -> Iterator[str]:
    """A control server in a thread, found through data_dir like a real node's."""
    data_dir.mkdir(exist_ok=True)
    secret = write_control_token(data_dir)
    ready: queue.Queue[tuple[str, trio.lowlevel.TrioToken, trio.CancelScope]] = queue.Queue()

    async def serve() -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                start = partial(serve_control, "127.0.0.1:0", node.routes(), secret)
                addr = await nursery.start(start)
                ready.put((addr, trio.lowlevel.current_trio_token(), scope))

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    addr, trio_token, scope = ready.get(timeout=10)
    write_control_file(data_dir, addr)
    try:
        yield addr
    finally:
        trio.from_thread.run_sync(scope.cancel, trio_token=trio_token)
        thread.join(10)


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cmd_submit, "POLL_INTERVAL_S", 0.01)


@pytest.fixture
def job_files(tmp_path: Path) -> tuple[Path, Path]:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    x = tmp_path / "x.json"
    x.write_text(json.dumps({"input_data": [[0.0] * 64]}))
    return bundle, x


def submit(
    capsys: pytest.CaptureFixture[str], data_dir: Path, files: tuple[Path, Path], *args: str
) -> tuple[int, str, str]:
    bundle, x = files
    argv = ["submit", str(bundle), "--input", str(x), "--data-dir", str(data_dir), *args]
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_progress_lines_and_success(
    tmp_path: Path, job_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeMarketNode(SCRIPT_DONE)
    with running_node(tmp_path / "n", fake) as addr:
        code, out, err = submit(
            capsys,
            tmp_path / "n",
            job_files,
            "--max-price",
            "12",
            "--deadline",
            "90",
            "--out",
            "res",
        )
    assert (code, err) == (0, "")
    assert fake.submitted == [
        {
            "bundle": str(job_files[0]),
            "input": str(job_files[1]),
            "max_price": 12,
            "deadline_s": 90.0,
            "slice_deadline_s": None,
            "out": str(Path.cwd() / "res"),
        }
    ]
    p0, p1 = "12D3KooW…abc000", "12D3KooW…abc111"
    assert out.splitlines() == [
        f"submitted job {JOB} to the node at {addr}; result: {Path.cwd() / 'res'}",
        f"job {JOB}: announced (1.5 s)",
        "slice 0: open",
        "slice 1: open",
        f"job {JOB}: bidding (1.5 s)",
        f"job {JOB}: proving (1.5 s)",
        f"slice 0: awarded prover {p0} round 1 price 10",
        f"slice 1: awarded prover {p1} round 1 price 11",
        f"slice 0: proven prover {p0} round 1 price 10",
        f"job {JOB}: verifying (1.5 s)",
        f"slice 0: verified prover {p0} round 1 price 10",
        f"slice 1: proven prover {p1} round 1 price 11",
        f"job {JOB}: done (1.5 s)",
        f"slice 1: verified prover {p1} round 1 price 11",
        f"job {JOB}: done in 1.5 s",
        "output logits [1, 10]: argmax 2",
        "  0.5 -1 15.25 4 -16 0 -8 0.25 -5 -2.5",
        f"slice 0: verified prover {P0} round 1 price 10 proof {'0' * 64}",
        f"slice 1: verified prover {P1} round 1 price 11 proof {'1' * 64}",
        "total paid 21 (escrow 40, refunded 19)",
        "chain ok",
        "result /tmp/r",
    ]
    assert len(fake.polls) == len(SCRIPT_DONE)


def test_json_writes_the_final_document(
    tmp_path: Path, job_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "r.json"
    with running_node(tmp_path / "n", FakeMarketNode(SCRIPT_DONE)):
        code, _, _ = submit(capsys, tmp_path / "n", job_files, "--json", str(report))
    assert code == 0
    assert json.loads(report.read_text()) == SCRIPT_DONE[-1]


def test_a_failed_job_exits_1_with_its_reason(
    tmp_path: Path, job_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    reason = "slice 1: no valid proof after 3 rounds"
    script = [
        *SCRIPT_DONE[:3],
        job_doc(
            "failed", [("verified", P0, 1, 10), ("failed", P1, 3, 11)], reason=reason, refunded=29
        ),
    ]
    report = tmp_path / "r.json"
    with running_node(tmp_path / "n", FakeMarketNode(script)):
        code, out, err = submit(capsys, tmp_path / "n", job_files, "--json", str(report))
    assert code == 1
    assert err == f"dsperse-node submit: error: job {JOB} failed: {reason}\n"
    assert f"job {JOB}: failed: {reason} (1.5 s)" in out.splitlines()
    assert "slice 1: failed prover 12D3KooW…abc111 round 3 price 11" in out.splitlines()
    assert json.loads(report.read_text())["state"] == "failed"


def test_done_with_a_broken_chain_is_not_success(
    tmp_path: Path, job_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    script = [job_doc("done", [("verified", P0, 1, 10)], chain="wrong result: output 'y'")]
    with running_node(tmp_path / "n", FakeMarketNode(script)):
        code, out, err = submit(capsys, tmp_path / "n", job_files)
    assert code == 1 and "chain wrong result: output 'y'" in out.splitlines()
    assert err == (
        f"dsperse-node submit: error: job {JOB} is done but its chain does not "
        "verify: wrong result: output 'y'\n"
    )


def test_a_deadline_passed_is_a_timeout(
    tmp_path: Path,
    job_files: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cmd_submit, "DEADLINE_GRACE_S", 0.2)
    fake = FakeMarketNode([job_doc("bidding", [OPEN])])
    report = tmp_path / "r.json"
    with running_node(tmp_path / "n", fake):
        code, out, err = submit(
            capsys, tmp_path / "n", job_files, "--deadline", "0.1", "--json", str(report)
        )
    assert code == cmd_submit.EXIT_TIMEOUT == 3
    assert err == (
        f"dsperse-node submit: error: job {JOB} is still bidding 0.3 s after "
        "submission (deadline 0.1 s + 0.2 s grace)\n"
    )
    assert out.splitlines()[1:] == [f"job {JOB}: bidding (1.5 s)", "slice 0: open"]
    assert len(fake.polls) > 1 and json.loads(report.read_text())["state"] == "bidding"


def test_a_refused_submission_prints_the_reason(
    tmp_path: Path, job_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeMarketNode(SCRIPT_DONE, refusal="insufficient balance for escrow: have 5, need 40")
    with running_node(tmp_path / "n", fake):
        code, out, err = submit(capsys, tmp_path / "n", job_files)
    assert (code, out) == (1, "")
    assert err == "dsperse-node submit: error: insufficient balance for escrow: have 5, need 40\n"
    assert fake.polls == []


def test_without_a_node_the_error_is_one_line(
    tmp_path: Path, job_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = submit(capsys, tmp_path / "none", job_files)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "no node is running for" in err and "dsperse-node run --data-dir" in err
    (tmp_path / "stale").mkdir()
    with socket.socket() as s:  # a stale control.addr: the node died without cleaning up
        s.bind(("127.0.0.1", 0))
        stale = f"127.0.0.1:{s.getsockname()[1]}"
    (tmp_path / "stale" / CONTROL_FILE_NAME).write_text(stale + "\n")
    code, out, err = submit(capsys, tmp_path / "stale", job_files)
    assert (code, out) == (1, "")
    assert err == (
        f"dsperse-node submit: error: no node is running at {stale} "
        "(connection refused); start it with `dsperse-node run`\n"
    )


def test_bad_paths_and_values_are_refused(
    tmp_path: Path, job_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, x = job_files
    code, _, err = submit(capsys, tmp_path, (tmp_path, x))
    assert code == 1 and "is not a bundle (no manifest.json)" in err
    code, _, err = submit(capsys, tmp_path, (bundle, tmp_path / "nope.json"))
    assert code == 1 and "input file not found" in err
    for bad in (["--deadline", "-1"], ["--deadline", "nan"], ["--max-price", "0"]):
        with pytest.raises(SystemExit) as exc:
            submit(capsys, tmp_path, job_files, *bad)
        assert exc.value.code == 2


def test_the_live_table_renders_a_job() -> None:
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(cmd_submit.render_job(SCRIPT_DONE[3]))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert f"job {JOB[:16]}  proving  1.5 s" in text
    rows = [line.split() for line in text.splitlines() if "│" in line]
    assert rows[0] == ["│", "0", "│", "proven", "│", "12D3KooW…abc000", "│", "1", "│", "10", "│"]
    assert rows[1] == ["│", "1", "│", "awarded", "│", "12D3KooW…abc111", "│", "1", "│", "11", "│"]
    assert "paid 0 of escrow 40" in text


def test_outputs_show_an_argmax_only_for_class_scores() -> None:
    assert cmd_submit.format_output("y", {"shape": [1, 3], "data": [0.1, 0.7, 0.2]})[0] == (
        "output y [1, 3]: argmax 1"
    )
    image = cmd_submit.format_output("img", {"shape": [1, 4, 4], "data": [0.0] * 16})
    assert image == ["output img [1, 4, 4]", "  " + " ".join(["0"] * 10) + " … (16 values)"]
