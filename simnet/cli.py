"""`dsperse-node simnet`: many real nodes on this machine, real EZKL proofs, faults, a dashboard."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _positive(kind: type, lo: float, hi: float):  # type: ignore[no-untyped-def]
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind.__name__}: {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range [{lo}, {hi}]")
        return value

    return parse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simnet",
        help="run many real nodes on this machine with real proofs and faults injected",
        description="Start N real `dsperse-node run` processes on 127.0.0.1 (py-libp2p, Noise, "
        "gossipsub), wait until every node hears every other's signed capacity advert, SIGKILL "
        "and restart nodes on a seeded schedule, send seeded wallet operations through the nodes "
        "(one turns byzantine and forks its chain) and check that every replica converges, "
        "and submit proof jobs of a shipped ONNX model that the other nodes prove with real "
        "EZKL through the market. Exit 0 only if every check passes.",
    )
    p.add_argument("--nodes", type=_positive(int, 2, 64), default=6, help="node processes (6)")
    p.add_argument("--seed", type=int, default=None, help="seed of the fault schedule (random)")
    p.add_argument("--workdir", type=Path, default=Path("out/simnet"), help="(out/simnet)")
    p.add_argument("--model", choices=("digits", "cifar"), default="digits", help="(digits)")
    p.add_argument(
        "--max-logrows", type=_positive(int, 10, 22), default=15, help="slice budget (15)"
    )
    p.add_argument("--kills", type=_positive(int, 0, 64), default=1, help="crash faults (1)")
    p.add_argument("--ledger-entries", type=_positive(int, 10, 100_000), default=300)
    p.add_argument("--mesh-timeout", type=_positive(float, 1, 3600), default=120.0, metavar="S")
    p.add_argument("--jobs", type=_positive(int, 0, 1000), default=2, help="proof jobs (2)")
    p.add_argument("--no-prove", action="store_true", help="skip the EZKL proving workload")
    p.add_argument("--no-dashboard", action="store_true", help="plain log lines, no live view")
    p.add_argument("--keep", action="store_true", help="reuse node data dirs (same peer ids)")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from simnet.cluster import Simnet, SimnetOptions, print_report, write_report

    seed = args.seed if args.seed is not None else time.time_ns() % 1_000_000
    options = SimnetOptions(
        nodes=args.nodes,
        seed=seed,
        workdir=args.workdir,
        model=args.model,
        max_logrows=args.max_logrows,
        kills=args.kills,
        ledger_entries=args.ledger_entries,
        jobs=args.jobs,
        mesh_timeout_s=args.mesh_timeout,
        prove=not args.no_prove,
        dashboard=not args.no_dashboard and sys.stdout.isatty(),
        keep=args.keep,
    )
    console = Console()
    report = Simnet(options, console).run()
    print_report(report, console)
    path = args.json or (args.workdir / "report.json")
    write_report(report, path)
    console.print(f"report: {path}")
    if not report.ok:
        console.print(f"reproduce: dsperse-node simnet --seed {seed} --nodes {args.nodes}")
    return 0 if report.ok else 1
