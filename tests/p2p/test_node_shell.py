"""Around the runtime: topic names, structured logs, `dsperse-node run` flags and errors."""

from __future__ import annotations

import argparse
import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from node.cli.cmd_run import apply_flags
from node.config import NodeConfig
from node.errors import ConfigError
from node.logs import log_event, setup_logging
from node.topics import GOSSIP_TOPICS, REQUEST_PROTOCOLS, TOPIC_MESSAGE_TYPES
from node.wire import REGISTRY
from tests.p2p.procs import REPO


def test_topics_and_protocols_are_unique_versioned_and_typed() -> None:
    names = [*GOSSIP_TOPICS, *REQUEST_PROTOCOLS]
    assert len(set(names)) == len(names)
    assert all(t.startswith("/dsperse/") and t.rsplit("/", 1)[1].isdigit() for t in GOSSIP_TOPICS)
    assert all(p.startswith("/dsperse/") and p.endswith(".0.0") for p in REQUEST_PROTOCOLS)
    assert set(TOPIC_MESSAGE_TYPES) == set(GOSSIP_TOPICS)
    registered = {name for (name, _v), _cls in REGISTRY}
    for types in TOPIC_MESSAGE_TYPES.values():
        assert types <= registered


@pytest.fixture
def restore_logging() -> object:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:], level = saved
    root.setLevel(level)


def test_json_logs_are_one_object_per_line_with_event_fields(restore_logging: object) -> None:
    out = io.StringIO()
    setup_logging("info", "json", out)
    log = logging.getLogger("node.test")
    log_event(log, "peer_connected", peer="12D3KooWabc", count=2)
    log_event(log, "quiet", logging.DEBUG, x=1)  # below the level
    logging.getLogger("libp2p.network.auto_connector").info("AUTO_CONNECTOR_STATE noise")
    logging.getLogger("libp2p.transport.tcp.tcp").error("Failed to open TCP stream: x")
    logging.getLogger("libp2p.pubsub").warning("Rate limit exceeded")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(d["logger"], d["event"]) for d in lines] == [
        ("node.test", "peer_connected"),
        ("libp2p.pubsub", None),
    ]
    assert lines[0]["peer"] == "12D3KooWabc" and lines[0]["count"] == 2
    assert lines[0]["level"] == "info" and isinstance(lines[0]["ts"], float)


def test_text_logs_are_one_line_per_record(restore_logging: object) -> None:
    out = io.StringIO()
    setup_logging("debug", "text", out)
    log_event(logging.getLogger("node.test"), "advert_received", peer="p", new=True)
    (line,) = out.getvalue().splitlines()
    assert "INFO" in line and "node.test: advert_received peer=p new=True" in line


def _args(**kw: object) -> argparse.Namespace:
    base = dict(
        listen=None,
        bootstrap=None,
        advert_interval=None,
        control_listen=None,
        log_format=None,
        log_level=None,
    )
    return argparse.Namespace(**{**base, **kw})


def test_flags_override_the_config_with_the_same_validation() -> None:
    config = NodeConfig(data_dir=Path("/d")).with_overrides("network", bootstrap=("/a",))
    out = apply_flags(
        config,
        _args(listen=["/ip4/127.0.0.1/tcp/0"], bootstrap=["/b"], advert_interval=2.5),
    )
    assert out.network.listen == ("/ip4/127.0.0.1/tcp/0",)
    assert out.network.bootstrap == ("/a", "/b")
    assert out.network.advert_interval_s == 2.5
    assert out.log == config.log and out.prover == config.prover
    with pytest.raises(ConfigError, match="advert_interval_s"):
        apply_flags(config, _args(advert_interval=0.0))


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )


def test_run_without_init_and_with_bad_addresses_fails_with_one_line(tmp_path: Path) -> None:
    result = _run_cli("run", "--data-dir", str(tmp_path / "none"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"dsperse-node run: error: {tmp_path / 'none'} has no identity; "
        "run `dsperse-node init` first"
    ]
    assert _run_cli("init", "--data-dir", str(tmp_path / "n")).returncode == 0
    for flag, value in (("--bootstrap", "/ip4/127.0.0.1/tcp/1"), ("--listen", "/nope")):
        result = _run_cli("run", "--data-dir", str(tmp_path / "n"), flag, value)
        assert result.returncode == 1, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("dsperse-node run: error:") and value in line
    result = _run_cli("run", "--data-dir", str(tmp_path / "n"), "--control-listen", "0.0.0.0:1")
    assert result.returncode == 1
    assert "loopback" in result.stderr
