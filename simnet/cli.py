"""`dsperse-node simnet`: many real nodes on this machine, with faults injected."""

from __future__ import annotations

import argparse

from node.cli.common import not_implemented


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simnet", help="run many real nodes on this machine with faults injected"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise not_implemented("simnet")
