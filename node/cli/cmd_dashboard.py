"""`dsperse-node dashboard`: live terminal dashboard of a node or simnet."""

from __future__ import annotations

import argparse

from node.cli.common import add_data_dir, not_implemented


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "dashboard", help="live terminal dashboard of a node or simnet (not implemented yet)"
    )
    add_data_dir(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise not_implemented("dashboard", 0)
