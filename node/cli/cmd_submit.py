"""`dsperse-node submit BUNDLE --input X.json`: buy a proof of a model on an input from the network,
through the running node (found through `<data dir>/control.addr`, like `wallet`).

`POST /jobs` (with the token in `<data dir>/control.token`) hands the node the bundle, the input,
the price cap per slice, the deadline and where to write the result; the node escrows the fees,
announces the job, awards slices to bidders, verifies every proof and the chain, and writes the
RESULT_DIR (node.results). This command then polls `GET /job?id=` every 0.5 s and shows the slices
live (a rich table on a terminal; else one line per state change) until the job is done or failed,
and ends with the outputs, the prover and proof hash of each slice, what was paid, the chain
verdict and the result dir. Exit 0 only if the job is done and its chain verified; 1 if it failed
(the reason is printed); 3 if `--deadline` plus a grace of 30 s passes first.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from node.cli.cmd_wallet import parse_amount
from node.cli.common import CliError, add_data_dir, resolve_data_dir

POLL_INTERVAL_S = 0.5
DEADLINE_GRACE_S = 30.0  # the node needs a moment past the deadline to verify and refund
POLL_TIMEOUT_S = 10.0
# POST /jobs: the node answers within its 60 s handler bound (HANDLER_TIMEOUT_S in node.control).
SUBMIT_TIMEOUT_S = 65.0
DEADLINE_S_MAX = 7 * 24 * 3600.0
EXIT_TIMEOUT = 3
REASON_CHARS_MAX = 300
VALUES_SHOWN_MAX = 10
CLASSES_MAX = 1000  # a flat output at most this long is shown with its argmax
JOB_STATES = ("announced", "bidding", "proving", "verifying", "done", "failed")
FINAL_STATES = ("done", "failed")


def _deadline(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= DEADLINE_S_MAX:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(
            f"invalid deadline {text!r}: seconds, more than 0 and at most {DEADLINE_S_MAX:g}"
        )
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "submit",
        help="buy a proof of a model on an input from the network (through the running node)",
    )
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="the model's bundle folder")
    p.add_argument(
        "--input",
        type=Path,
        required=True,
        metavar="X.json",
        help='the input, EZKL\'s {"input_data": [...]}',
    )
    p.add_argument(
        "--max-price",
        type=parse_amount,
        default=None,
        metavar="P",
        help="most to pay per slice (default: the node's)",
    )
    p.add_argument(
        "--deadline",
        type=_deadline,
        default=None,
        metavar="S",
        help=f"seconds to finish in; gives up {DEADLINE_GRACE_S:g} s after it",
    )
    p.add_argument(
        "--slice-deadline",
        type=_deadline,
        default=None,
        metavar="S",
        help="seconds a prover has for its slice before it is re-awarded (default: the node's)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="RESULT_DIR",
        help="where the node writes the result (default: ./dsperse-result-<time>)",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="R",
        dest="json_out",
        help="write the final job document to R",
    )
    add_data_dir(p)
    p.add_argument("--no-progress", action="store_true", help="one line per change, no table")
    p.set_defaults(func=run)


# -- talking to the node ---------------------------------------------------------------------


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:REASON_CHARS_MAX]


class _Node:
    """The running node's control API, found through its data dir."""

    def __init__(self, data_dir: Path) -> None:
        from node.control import CONTROL_FILE_NAME, read_control_token

        path = data_dir / CONTROL_FILE_NAME
        try:
            self.addr = path.read_text(encoding="utf-8").strip()
        except OSError:
            self.addr = ""
        if not self.addr:
            raise CliError(
                f"no node is running for {data_dir} ({path} missing); "
                f"start it with `dsperse-node run --data-dir {data_dir}`"
            )
        self.data_dir = data_dir
        self.token = read_control_token(data_dir)

    def call(self, method: str, path: str, body: dict[str, Any] | None, timeout_s: float) -> Any:
        from node.control_client import control_request

        status, doc = control_request(self.addr, method, path, body, self.token, timeout_s)
        if status == 200 and isinstance(doc, dict):
            return doc
        what = f"{method} {path.partition('?')[0]}"
        reason = _one_line(doc.get("error", doc) if isinstance(doc, dict) else doc)
        if status == 403:
            raise CliError(
                f"the node at {self.addr} refused the control token in "
                f"{self.data_dir / 'control.token'} (403); is {self.data_dir} its "
                "data dir, from its current start?"
            )
        if status == 404 and reason.startswith("no route"):  # the server's own 404
            raise CliError(f"the node at {self.addr} does not serve {what} (an older node?)")
        if 400 <= status < 500:  # the node refused: its reason is the message
            raise CliError(reason)
        raise CliError(f"the node at {self.addr} answered {what} with {status}: {reason}")


def _require_submitted(doc: dict[str, Any], addr: str) -> str:
    job_id = doc.get("job_id")
    ok = isinstance(job_id, str) and job_id and all(c in "0123456789abcdef" for c in job_id)
    if not (ok and type(doc.get("slices")) is int and type(doc.get("escrow")) is int):
        raise CliError(f"the node at {addr} sent an unexpected reply to POST /jobs")
    return str(job_id)


def _require_job(doc: dict[str, Any], addr: str) -> dict[str, Any]:
    slices = doc.get("slices")
    rows_ok = isinstance(slices, list) and all(
        isinstance(s, dict) and type(s.get("index")) is int for s in slices
    )
    if doc.get("state") not in JOB_STATES or not rows_ok:
        raise CliError(f"the node at {addr} sent an unexpected reply to GET /job")
    return doc


# -- progress --------------------------------------------------------------------------------


def compute_short_id(peer: str) -> str:
    return peer if len(peer) <= 16 else f"{peer[:8]}…{peer[-6:]}"


def _slice_view(s: dict[str, Any]) -> tuple[str, str, int, int]:
    return (
        str(s.get("state", "?")),
        str(s.get("prover") or ""),
        int(s.get("round") or 0),
        int(s.get("price") or 0),
    )


def render_job(doc: dict[str, Any]) -> Any:
    """The live table of a job document: one row per slice (a pure function of `doc`)."""
    from rich.table import Table

    title = f"job {str(doc.get('job_id', ''))[:16]}  {doc.get('state')}  "
    title += f"{float(doc.get('elapsed_s') or 0.0):.1f} s"
    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("slice", "right"),
        ("state", "left"),
        ("prover", "left"),
        ("round", "right"),
        ("price", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for s in doc.get("slices", []):
        state, prover, rnd, price = _slice_view(s)
        table.add_row(
            str(s["index"]),
            state,
            compute_short_id(prover) if prover else "-",
            str(rnd) if rnd else "-",
            str(price) if price else "-",
        )
    table.caption = f"paid {doc.get('paid', 0)} of escrow {doc.get('escrow', 0)}"
    return table


class _Progress(Protocol):
    def update(self, doc: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class LineProgress:
    """One line per change of the job's state or of a slice's (state, prover, round, price)."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write
        self._state: str | None = None
        self._slices: dict[int, tuple[str, str, int, int]] = {}

    def update(self, doc: dict[str, Any]) -> None:
        if doc["state"] != self._state:
            self._state = doc["state"]
            reason = f": {_one_line(doc['reason'])}" if doc.get("reason") else ""
            self._write(
                f"job {doc.get('job_id', '')}: {self._state}{reason} "
                f"({float(doc.get('elapsed_s') or 0.0):.1f} s)"
            )
        for s in doc["slices"]:
            view = _slice_view(s)
            if self._slices.get(s["index"]) == view:
                continue
            self._slices[s["index"]] = view
            state, prover, rnd, price = view
            line = f"slice {s['index']}: {state}"
            line += f" prover {compute_short_id(prover)}" if prover else ""
            line += f" round {rnd}" if rnd else ""
            line += f" price {price}" if price else ""
            self._write(line)

    def close(self) -> None:
        return None


class LiveProgress:
    """The rich table, redrawn after each poll (auto_refresh off: no refresh thread)."""

    def __init__(self) -> None:
        from rich.live import Live

        self._live = Live(auto_refresh=False)
        self._live.start()

    def update(self, doc: dict[str, Any]) -> None:
        self._live.update(render_job(doc), refresh=True)

    def close(self) -> None:
        self._live.stop()


def _print_line(line: str) -> None:
    print(line, flush=True)


def follow_job(
    node: _Node,
    job_id: str,
    progress: _Progress,
    timeout_s: float | None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[dict[str, Any], bool]:
    """Poll the job until it is done or failed: (its last document, whether it ended in time)."""
    give_up_at = None if timeout_s is None else clock() + timeout_s
    while True:
        doc = _require_job(node.call("GET", f"/job?id={job_id}", None, POLL_TIMEOUT_S), node.addr)
        progress.update(doc)
        if doc["state"] in FINAL_STATES:
            return doc, True
        if give_up_at is not None and clock() >= give_up_at:
            return doc, False
        sleep(POLL_INTERVAL_S)


# -- the final report ------------------------------------------------------------------------


def _is_finite_list(data: object) -> bool:
    return isinstance(data, list) and all(
        type(v) in (int, float) and math.isfinite(v) for v in data
    )


def format_output(name: str, out: dict[str, Any]) -> list[str]:
    """An output tensor: its shape, its argmax if it looks like class scores, its values."""
    shape, data = out.get("shape", []), out.get("data", [])
    if not _is_finite_list(data):
        return [f"output {name}: {_one_line(data)}"]
    head = f"output {name} {shape}"
    flat = isinstance(shape, list) and sum(1 for d in shape if d != 1) <= 1
    if flat and 2 <= len(data) <= CLASSES_MAX:
        head += f": argmax {max(range(len(data)), key=data.__getitem__)}"
    shown = " ".join(f"{v:.4g}" for v in data[:VALUES_SHOWN_MAX])
    more = f" … ({len(data)} values)" if len(data) > VALUES_SHOWN_MAX else ""
    return [head, f"  {shown}{more}"]


def format_report(doc: dict[str, Any]) -> list[str]:
    """The end of a finished job: outputs, provers and proof hashes, payments, chain, result."""
    lines = [f"job {doc.get('job_id')}: {doc['state']} in {float(doc.get('elapsed_s') or 0):.1f} s"]
    for name, out in (doc.get("outputs") or {}).items():
        lines += format_output(str(name), out if isinstance(out, dict) else {"data": out})
    for s in doc["slices"]:
        state, prover, rnd, price = _slice_view(s)
        lines.append(
            f"slice {s['index']}: {state} prover {prover or '-'} round {rnd} "
            f"price {price} proof {s.get('proof_hash') or '-'}"
        )
    lines.append(
        f"total paid {doc.get('paid', 0)} (escrow {doc.get('escrow', 0)}, "
        f"refunded {doc.get('refunded', 0)})"
    )
    lines.append(f"chain {_one_line(doc.get('chain', '?'))}")
    lines.append(f"result {doc.get('result_dir', '-')}")
    return lines


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path = path.absolute()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)  # atomic: a reader never sees half a document


def _request(args: argparse.Namespace) -> dict[str, Any]:
    bundle, input_path = args.bundle.absolute(), args.input.absolute()
    if not (bundle / "manifest.json").is_file():
        raise CliError(
            f"{bundle} is not a bundle (no manifest.json); make one with `dsperse-node slice`"
        )
    if not input_path.is_file():
        raise CliError(f"input file not found: {input_path}")
    out = args.out or Path(f"dsperse-result-{time.strftime('%Y%m%d-%H%M%S')}")
    return {
        "bundle": str(bundle),
        "input": str(input_path),
        "max_price": args.max_price,
        "deadline_s": args.deadline,
        "slice_deadline_s": args.slice_deadline,
        "out": str(out.absolute()),
    }


def run(args: argparse.Namespace) -> int:
    body = _request(args)
    node = _Node(resolve_data_dir(args))
    job_id = _require_submitted(node.call("POST", "/jobs", body, SUBMIT_TIMEOUT_S), node.addr)
    live = not args.no_progress and sys.stdout.isatty()
    if not live:
        _print_line(f"submitted job {job_id} to the node at {node.addr}; result: {body['out']}")
    timeout_s = None if args.deadline is None else args.deadline + DEADLINE_GRACE_S
    progress: _Progress = LiveProgress() if live else LineProgress(_print_line)
    try:
        doc, in_time = follow_job(node, job_id, progress, timeout_s)
    except KeyboardInterrupt:
        progress.close()
        print(
            f"job {job_id} goes on at the node; `dsperse-node submit` stopped following it",
            file=sys.stderr,
        )
        raise
    progress.close()
    if args.json_out is not None:
        _write_json(args.json_out, doc)
    if not in_time:
        raise CliError(
            f"job {job_id} is still {doc['state']} {timeout_s:g} s after submission "
            f"(deadline {args.deadline:g} s + {DEADLINE_GRACE_S:g} s grace)",
            exit_code=EXIT_TIMEOUT,
        )
    if doc["state"] == "failed":
        raise CliError(f"job {job_id} failed: {_one_line(doc.get('reason') or 'no reason given')}")
    for line in format_report(doc):
        _print_line(line)
    if doc.get("chain") != "ok":
        raise CliError(
            f"job {job_id} is done but its chain does not verify: {_one_line(doc.get('chain'))}"
        )
    return 0
