"""`dsperse-node dashboard`: a live terminal view of a running node, from its control API.

It reads `GET /status` once a second (each request under a timeout) and renders it with
`node.dashboard.render`: the node, the peers whose signed adverts it holds (price, free slots,
age), gossip counters and refusals. `--once` prints a single frame (scripts, tests).
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from typing import Any

from node.cli.common import CliError, add_data_dir, resolve_data_dir

STATUS_TIMEOUT_S = 3.0
STATUS_BYTES_MAX = 4 << 20


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dashboard", help="live terminal dashboard of a running node")
    add_data_dir(p)
    p.add_argument("--control", metavar="HOST:PORT", help="control API address (default: "
                   "the one the node in --data-dir wrote at start)")  # fmt: skip
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="refresh (1 s)")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.set_defaults(func=run)


def _control_addr(args: argparse.Namespace) -> str:
    if args.control:
        return str(args.control)
    from node.control import CONTROL_FILE_NAME  # trio loads only when a command runs

    path = resolve_data_dir(args) / CONTROL_FILE_NAME
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        raise CliError(f"no running node found ({path} missing); start `dsperse-node run` "
                       "or pass --control HOST:PORT") from None  # fmt: skip


def fetch_status(addr: str) -> dict[str, Any]:
    url = f"http://{addr}/status"
    try:
        with urllib.request.urlopen(url, timeout=STATUS_TIMEOUT_S) as reply:
            doc: dict[str, Any] = json.loads(reply.read(STATUS_BYTES_MAX))
            return doc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise CliError(f"cannot read {url}: {exc}") from None


def build_snapshot(status: dict[str, Any], now_ms: int) -> Any:
    from node.dashboard import NodeRow, ProviderRow, Snapshot

    node, transport = status.get("node", {}), status.get("transport", {})
    msgs_in = transport.get("messages_in", {})
    me = NodeRow(
        name="self",
        peer_id=node.get("peer_id", "?"),
        state="up",
        peers=int(transport.get("peers_count", 0)),
        adverts_seen=len(status.get("providers", {})),
        msgs_in=sum(sum(v.values()) for v in msgs_in.values()),
        msgs_out=sum(transport.get("messages_out", {}).values()),
        rejected=sum(v.get("reject", 0) for v in msgs_in.values()),
    )
    connected = set(transport.get("peers", []))
    providers = tuple(
        ProviderRow(
            peer_id=peer,
            connected=peer in connected,
            free_slots=int(p.get("free_slots", 0)),
            price_per_slice=int(p.get("price", 0)),
            age_s=max(0, now_ms - int(p.get("seen_ms", now_ms))) / 1000,
        )
        for peer, p in sorted(status.get("providers", {}).items())
    )
    figures = (
        ("uptime", f"{node.get('uptime_s', 0)} s"),
        ("adverts published / received",
         f"{node.get('adverts_published', 0)} / {node.get('adverts_received', 0)}"),
        ("drops", json.dumps(transport.get("drops", {}))),
        ("refused gossip", json.dumps(status.get("gossip", {}))),
        ("mesh", json.dumps(transport.get("mesh", {}))),
    )  # fmt: skip
    return Snapshot(
        title=f"dsperse node {node.get('peer_id', '?')}",
        phase="running",
        elapsed_s=float(node.get("uptime_s", 0.0)),
        nodes=(me,),
        providers=providers,
        figures=figures,
    )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from node.dashboard import render

    if not 0.1 <= args.interval <= 3600:
        raise CliError("--interval must be between 0.1 and 3600 seconds", exit_code=2)
    addr = _control_addr(args)
    console = Console()
    if args.once:
        console.print(render(build_snapshot(fetch_status(addr), time.time_ns() // 1_000_000)))
        return 0
    with Live(console=console, auto_refresh=False, screen=False) as live:
        while True:
            snapshot = build_snapshot(fetch_status(addr), time.time_ns() // 1_000_000)
            live.update(render(snapshot), refresh=True)
            time.sleep(args.interval)  # the refresh period of a terminal view
