"""Helpers shared by the CLI subcommands: the data-dir flag, errors, unfinished commands."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from node.config import default_data_dir
from node.errors import NodeError


class CliError(Exception):
    """A command-line failure with its exit code (2 = usage / not available)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# The root error of each package. A package's errors are operating errors the user can act on.
_ERROR_ROOTS = (
    ("node.errors", "NodeError"),
    ("ledger.errors", "LedgerError"),
    ("slicing.errors", "SlicingError"),
    ("p2p.errors", "P2PError"),
)


def user_errors() -> tuple[type[BaseException], ...]:
    """The error roots of every package that is already imported (never imports one itself)."""
    roots: list[type[BaseException]] = [NodeError]
    for module_name, cls_name in _ERROR_ROOTS[1:]:
        module = sys.modules.get(module_name)
        cls = getattr(module, cls_name, None) if module else None
        if isinstance(cls, type) and issubclass(cls, BaseException):
            roots.append(cls)
    return tuple(roots)


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: `<what>: <path>` (both paths of a rename; no path for sockets)."""
    what = exc.strerror or str(exc) or type(exc).__name__
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return ": ".join([what, *paths])


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="D",
        help=f"node data directory (default: {default_data_dir()})",
    )


def resolve_data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir) if args.data_dir is not None else default_data_dir()


def not_implemented(command: str, issue: int = 0) -> CliError:
    """The error an unfinished command raises: it says so and exits 2, never pretends."""
    where = f"tracked in issue #{issue}" if issue else "planned in a later issue"
    return CliError(f"`{command}` is not implemented yet ({where})", exit_code=2)


def import_optional(name: str) -> object:
    """Import a module by name (lets subcommands load heavy packages only when run)."""
    return importlib.import_module(name)
