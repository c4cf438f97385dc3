"""`dsperse-node simnet`: run many real nodes on this machine with faults injected."""

from __future__ import annotations

import argparse

from node.cli.common import add_data_dir, not_implemented


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simnet",
        help="run many real nodes on this machine with faults injected (not implemented yet)",
    )
    add_data_dir(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise not_implemented("simnet", 0)
