"""The command line: every subcommand has help; usage errors exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def test_submit_without_its_arguments_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["submit"])
    assert exit_info.value.code == 2
    assert "--input" in capsys.readouterr().err


def test_console_script_runs_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simnet", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stdout.startswith("dsperse-node ")


# ---------------------------------------------------------------------------- genesis


def _peer(seed: bytes) -> str:
    from node.identity import NodeIdentity

    return NodeIdentity.from_seed(seed * 32).peer_id


def test_genesis_new_then_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "genesis.json"
    alice, bob = _peer(b"a"), _peer(b"b")
    argv = ["genesis", "new", "--out", str(out), "--alloc", f"{alice}=1000"]
    argv += ["--bond", f"{bob}=300", "--param", "award_bond_min=100"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    network_id = printed.split("network id:")[1].split()[0]
    assert len(network_id) == 64
    assert main(["genesis", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert network_id in shown and alice in shown and bob in shown and "award_bond_min" in shown
    assert main(["genesis", "show", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["network_id"] == network_id and doc["params"]["award_bond_min"] == 100
    assert doc["allocations"] == [[alice, 1000]] and doc["bonds"] == [[bob, 300]]
    assert doc["supply"] == 1300
    # A second `new` would be another network: it refuses to overwrite without --force.
    assert main(argv) == 1
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ([], "at least one allocation or bond"),
        (["--alloc", "nobody=5"], "not an ed25519 peer id"),
        (["--alloc", "A"], "expected PEER_ID=AMOUNT"),
        (["--alloc", "{a}=0"], "amount must be positive"),
        (["--alloc", "{a}=5", "--alloc", "{a}=6"], "duplicate allocation"),
        (["--alloc", "{a}=5", "--param", "colour=1"], "unknown genesis param 'colour'"),
        (["--alloc", "{a}=5", "--param", "supply_max=x"], "must be an integer"),
        (["--alloc", "{a}=5", "--param", "supply_max=0"], "supply_max out of range"),
        (["--alloc", "{a}=5", "--param", "supply_max=4"], "above supply_max 4"),
        (["--alloc", "{a}=5", "--param", "pending_max=1", "--param", "pending_max=2"], "twice"),
    ],
)
def test_genesis_new_bad_args_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], match: str
) -> None:
    out = tmp_path / "g.json"
    argv = ["genesis", "new", "--out", str(out), *(x.format(a=_peer(b"a")) for x in extra)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("dsperse-node genesis: error: ") and match in err
    assert err.count("\n") == 1
    assert not out.exists()


def test_genesis_show_refuses_a_tampered_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "g.json"
    assert main(["genesis", "new", "--out", str(out), "--alloc", f"{_peer(b'a')}=10"]) == 0
    doc = json.loads(out.read_text())
    doc["allocations"][0][1] = 11
    out.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["genesis", "show", str(out)]) == 1
    err = capsys.readouterr().err
    assert "allocations do not match the signed entries" in err and err.count("\n") == 1
    assert main(["genesis", "show", str(tmp_path / "absent.json")]) == 1
    assert "no genesis file" in capsys.readouterr().err


def test_init_with_genesis_installs_it_and_refuses_another_network(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    for path in (first, second):
        assert main(["genesis", "new", "--out", str(path), "--alloc", f"{_peer(b'a')}=10"]) == 0
    capsys.readouterr()
    data_dir = tmp_path / "node"
    assert main(["init", "--data-dir", str(data_dir), "--genesis", str(first)]) == 0
    assert "network:" in capsys.readouterr().out
    assert (data_dir / "genesis.json").read_bytes() == first.read_bytes()
    key_before = (data_dir / "identity.key").read_bytes()
    argv = ["init", "--data-dir", str(data_dir), "--force", "--genesis", str(second)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "belongs to network" in err and "use a new data dir" in err
    # Refused before anything changed: same key, same genesis.
    assert (data_dir / "identity.key").read_bytes() == key_before
    assert (data_dir / "genesis.json").read_bytes() == first.read_bytes()
    # A bad genesis creates no data dir at all.
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["init", "--data-dir", str(tmp_path / "n2"), "--genesis", str(bad)]) == 1
    assert not (tmp_path / "n2").exists()
