"""The `dsperse-node` command line. Each subcommand lives in its own module under node/cli/.

A module exposes `register(subparsers)`, which adds its parser(s) and sets `func(args) -> int`.
Heavy packages (libp2p, ezkl, onnx) are imported inside the handlers, so `--help` stays fast.
Operating errors (`NodeError` and the packages' own roots, and every `OSError`: a missing or
unwritable path, a port in use, a refused connection) print one line and exit 1; usage errors exit
2 (argparse's convention); an unfinished command says so and exits 2. Any other exception is a
programmer error and propagates with its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from node import __version__
from node.cli import (
    cmd_dashboard,
    cmd_genesis,
    cmd_identity,
    cmd_ledger,
    cmd_run,
    cmd_slice,
    cmd_submit,
    cmd_verify,
    cmd_wallet,
)
from node.cli.common import CliError, describe_os_error, user_errors

_MODULES = (
    cmd_identity,
    cmd_genesis,
    cmd_run,
    cmd_slice,
    cmd_submit,
    cmd_verify,
    cmd_ledger,
    cmd_dashboard,
    cmd_wallet,
)


def build_parser(extra: Sequence[ModuleType] = ()) -> argparse.ArgumentParser:
    """The parser; `extra` are command modules of higher layers (simnet adds `simnet` this way,
    because nothing may import simnet: the console script enters through `simnet.entry`)."""
    parser = argparse.ArgumentParser(
        prog="dsperse-node",
        description="A peer-to-peer network of zkML provers: slice ONNX models, prove the slices "
        "with EZKL on many machines, settle on a replicated ledger.",
    )
    parser.add_argument("--version", action="version", version=f"dsperse-node {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (*_MODULES, *extra):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None, extra: Sequence[ModuleType] = ()) -> int:
    parser = build_parser(extra)
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except user_errors() as exc:
        print(f"dsperse-node {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except CliError as exc:
        print(f"dsperse-node {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        # The environment refused (no such file, permission denied, address in use): the user
        # can act on that, so one line and no traceback. Checked after the package roots, some
        # of which are OSErrors too (p2p's DialFailed, ListenFailed) and carry a better message.
        print(f"dsperse-node {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
