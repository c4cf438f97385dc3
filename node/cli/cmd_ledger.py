"""`dsperse-node ledger`: inspect the local ledger replica."""

from __future__ import annotations

import argparse

from node.cli.common import add_data_dir, not_implemented


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ledger", help="inspect the local ledger replica (not implemented yet)")
    add_data_dir(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise not_implemented("ledger", 5)
