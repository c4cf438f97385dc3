"""The command line: every subcommand has help; unfinished ones say so and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from node.cli import build_parser
from simnet import cli as simnet_cli
from simnet.entry import main

SUBCOMMANDS = sorted(
    build_parser(extra=(simnet_cli,))._subparsers._group_actions[0].choices  # type: ignore[union-attr]
)


def test_the_planned_subcommands_exist() -> None:
    assert {"init", "id", "run", "slice", "submit", "ledger", "dashboard", "simnet"} <= set(
        SUBCOMMANDS
    )


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage: dsperse-node" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_an_unfinished_command_says_so_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    # `submit` arrives with the market issue; until then it must refuse honestly.
    assert main(["submit"]) == 2
    assert "not implemented yet" in capsys.readouterr().err


def test_console_script_runs_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simnet", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stdout.startswith("dsperse-node ")
