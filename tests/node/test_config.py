"""Config files: the shipped default is valid; every kind of mistake is named precisely."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from node.config import (
    DEFAULT_CONFIG_TOML,
    LedgerNodeConfig,
    NodeConfig,
    config_from_mapping,
    load_config,
)
from node.errors import ConfigError


def test_default_toml_parses_to_the_default_config(tmp_path: Path) -> None:
    config = config_from_mapping(tomllib.loads(DEFAULT_CONFIG_TOML), tmp_path)
    assert config == NodeConfig(data_dir=tmp_path)


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path) == NodeConfig(data_dir=tmp_path)


def test_values_are_read(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        '[network]\nbootstrap = ["/ip4/127.0.0.1/tcp/1/p2p/x"]\nadvert_interval_s = 2\n'
        "[prover]\nslots = 3\n"
    )
    config = load_config(tmp_path)
    assert config.network.bootstrap == ("/ip4/127.0.0.1/tcp/1/p2p/x",)
    assert config.network.advert_interval_s == 2.0
    assert config.prover.slots == 3


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[netwrok]\n", r"unknown config section \[netwrok\]"),
        ("[network]\nlisten_addr = []\n", r"unknown key \[network\] listen_addr"),
        ('[prover]\nslots = "2"\n', r"\[prover\] slots must be an integer"),
        ("[prover]\nslots = true\n", r"\[prover\] slots must be an integer"),
        ("[prover]\nmax_logrows = 99\n", r"\[prover\] max_logrows = 99 is out of range"),
        ("[network]\nbootstrap = [1]\n", r"\[network\] bootstrap must be a list of strings"),
        ('[log]\nlevel = "loud"\n', r"\[log\] level must be one of"),
        ("network = 3\n", r"\[network\] must be a table"),
        ("[network\n", "invalid TOML"),
        ("[ledger]\ngenesis = 3\n", r"\[ledger\] genesis must be a str"),
        (
            "[ledger]\nsync_interval_s = 0.01\n",
            r"\[ledger\] sync_interval_s = 0.01 is out of range",
        ),
        ("[ledger]\nsync_requests_per_s = 0\n", r"\[ledger\] sync_requests_per_s = 0.0 is out"),
        ("[ledger]\nsync_bytes_per_s = 1024\n", r"\[ledger\] sync_bytes_per_s = 1024 is out"),
        ("[ledger]\nsync_bytes_per_s = 1.5\n", r"\[ledger\] sync_bytes_per_s must be an integer"),
        ("[ledger]\ngenesis_file = 'x'\n", r"unknown key \[ledger\] genesis_file"),
    ],
)
def test_bad_config_is_refused_with_the_key_at_fault(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(tmp_path)


def test_binary_and_huge_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path)
    (tmp_path / "config.toml").write_bytes(b"#" * 300_000)
    with pytest.raises(ConfigError, match="limit"):
        load_config(tmp_path)


def test_ledger_section_is_read(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        '[ledger]\ngenesis = "nets/main.json"\nsync_interval_s = 5\n'
        "sync_requests_per_s = 10\nsync_bytes_per_s = 65536\n"
    )
    ledger = load_config(tmp_path).ledger
    assert ledger == LedgerNodeConfig("nets/main.json", 5.0, 10.0, 65536)
    assert ledger.genesis_path(tmp_path) == tmp_path / "nets" / "main.json"


def test_ledger_defaults_and_genesis_paths(tmp_path: Path) -> None:
    ledger = NodeConfig(data_dir=tmp_path).ledger
    assert (ledger.sync_interval_s, ledger.sync_requests_per_s) == (2.0, 50.0)
    assert ledger.sync_bytes_per_s == 8 * 1024 * 1024
    assert ledger.genesis_path(tmp_path) is None  # the installed genesis.json, if any
    assert LedgerNodeConfig(genesis="/etc/g.json").genesis_path(tmp_path) == Path("/etc/g.json")
    assert "[ledger]" in DEFAULT_CONFIG_TOML and 'genesis = ""' in DEFAULT_CONFIG_TOML
