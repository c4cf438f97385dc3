"""Node configuration: a frozen `NodeConfig` read from `<data dir>/config.toml`, flags on top.

Unknown sections or keys, wrong types and out-of-range values are refused with the exact
key at fault (a typo must never be silently ignored). The default data dir follows XDG:
`$XDG_DATA_HOME/dsperse-node`, else `~/.local/share/dsperse-node`.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.errors import ConfigError

CONFIG_FILE_NAME = "config.toml"
CONFIG_BYTES_MAX = 256 * 1024


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dsperse-node"


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    listen: tuple[str, ...] = ("/ip4/0.0.0.0/tcp/4001",)
    bootstrap: tuple[str, ...] = ()
    advert_interval_s: float = 10.0
    peers_target: int = 6  # dial peers learned from adverts until connected to this many


@dataclass(frozen=True, slots=True)
class ProverConfig:
    slots: int = 1
    price_per_slice: int = 10
    max_logrows: int = 17
    memory_mb_max: int = 4096


@dataclass(frozen=True, slots=True)
class ControlConfig:
    listen: str = "127.0.0.1:0"  # control API (dashboard, scripts); port 0 = pick one


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: str = "text"  # "text" or "json"


@dataclass(frozen=True, slots=True)
class LedgerNodeConfig:
    genesis: str = ""  # path to the network's genesis file; relative to the data dir
    sync_interval_s: float = 2.0  # seconds between anti-entropy rounds with a peer
    sync_requests_per_s: float = 50.0  # ledger-sync requests served per second per peer
    sync_bytes_per_s: int = 8 * 1024 * 1024  # ledger-sync bytes served per second per peer

    def genesis_path(self, data_dir: Path) -> Path | None:
        """The genesis file this key names (relative paths are under `data_dir`), if any."""
        if not self.genesis:
            return None
        return data_dir / Path(self.genesis).expanduser()


@dataclass(frozen=True, slots=True)
class NodeConfig:
    data_dir: Path = field(default_factory=default_data_dir)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    prover: ProverConfig = field(default_factory=ProverConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    log: LogConfig = field(default_factory=LogConfig)
    ledger: LedgerNodeConfig = field(default_factory=LedgerNodeConfig)

    def with_overrides(self, section: str, **values: Any) -> NodeConfig:
        """A copy with some keys of one section replaced (how command-line flags apply)."""
        current = getattr(self, section)
        return dataclasses.replace(self, **{section: dataclasses.replace(current, **values)})


_RANGES: dict[tuple[str, str], tuple[float, float]] = {
    ("network", "advert_interval_s"): (0.1, 3600),
    ("network", "peers_target"): (0, 1000),
    ("prover", "slots"): (0, 1024),
    ("prover", "price_per_slice"): (0, 2**63 - 1),
    ("prover", "max_logrows"): (1, 32),
    ("prover", "memory_mb_max"): (64, 2**32),
    ("ledger", "sync_interval_s"): (0.1, 3600),
    ("ledger", "sync_requests_per_s"): (1, 10_000),
    ("ledger", "sync_bytes_per_s"): (64 * 1024, 1024**3),
}
_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("log", "level"): ("debug", "info", "warning", "error"),
    ("log", "format"): ("text", "json"),
}
_SECTIONS: dict[str, type] = {
    "network": NetworkConfig,
    "prover": ProverConfig,
    "control": ControlConfig,
    "log": LogConfig,
    "ledger": LedgerNodeConfig,
}


def _coerce(section: str, key: str, value: Any, default: Any) -> Any:
    where = f"[{section}] {key}"
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings")
        return tuple(value)
    if isinstance(default, (bool, str)):
        if type(value) is not type(default):
            raise ConfigError(f"{where} must be a {type(default).__name__}")
        choices = _CHOICES.get((section, key))
        if choices and value not in choices:
            raise ConfigError(f"{where} must be one of {', '.join(choices)}, not {value!r}")
        return value
    if isinstance(default, float):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{where} must be a number")
        value = float(value)
    elif isinstance(default, int) and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(f"{where} must be an integer")
    lo, hi = _RANGES.get((section, key), (float("-inf"), float("inf")))
    if not lo <= value <= hi:
        raise ConfigError(f"{where} = {value} is out of range [{lo:g}, {hi:g}]")
    return value


def config_from_mapping(data: dict[str, Any], data_dir: Path) -> NodeConfig:
    """Build a config from parsed TOML, refusing anything unknown or ill-typed."""
    config = NodeConfig(data_dir=data_dir)
    for section, values in data.items():
        if section not in _SECTIONS:
            raise ConfigError(f"unknown config section [{section}]")
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table")
        cls = _SECTIONS[section]
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        updates = {}
        for key, value in values.items():
            if key not in defaults:
                known = ", ".join(defaults)
                raise ConfigError(f"unknown key [{section}] {key} (known: {known})")
            updates[key] = _coerce(section, key, value, defaults[key])
        config = config.with_overrides(section, **updates)
    return config


def load_config(data_dir: Path) -> NodeConfig:
    """Read `<data_dir>/config.toml` if present; defaults otherwise."""
    path = data_dir / CONFIG_FILE_NAME
    if not path.exists():
        return NodeConfig(data_dir=data_dir)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > CONFIG_BYTES_MAX:
        raise ConfigError(f"{path} is {len(raw)} bytes; the limit is {CONFIG_BYTES_MAX}")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        return config_from_mapping(data, data_dir)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


DEFAULT_CONFIG_TOML = """\
# dsperse-node configuration. Command-line flags override these values.
# Every key is optional; unknown keys are an error, so typos are caught.

[network]
# Multiaddrs to listen on (TCP; Noise encryption is always on).
listen = ["/ip4/0.0.0.0/tcp/4001"]
# Peers to join the mesh through: full multiaddrs ending in /p2p/<peer id>.
bootstrap = []
# Seconds between signed capacity adverts on gossip.
advert_interval_s = 10.0
# Dial peers learned from their signed capacity adverts until connected to this many
# (0 = only the bootstrap peers). Keeps the mesh from being a star around the bootstrap node.
peers_target = 6

[prover]
# Slices proven at once (each proof runs in its own process). 0 = never prove.
slots = 1
# Asking price per slice proof, in the ledger's smallest unit.
price_per_slice = 10
# Largest circuit (EZKL logrows) this machine accepts; memory roughly doubles per logrow.
max_logrows = 17
# Peak memory a single proof may use, in MB.
memory_mb_max = 4096

[control]
# Local control API for the dashboard and scripts (loopback only). Port 0 = any free port.
listen = "127.0.0.1:0"
# Prometheus metrics are served at /metrics on this same address.

[log]
# debug | info | warning | error
level = "info"
# text | json (one JSON object per line)
format = "text"

[ledger]
# The network's genesis file (`dsperse-node genesis new` makes one; `init --genesis F` installs
# it as genesis.json in the data dir). Relative paths are relative to the data dir.
# Empty = the genesis.json installed in the data dir, if any.
genesis = ""
# Seconds between ledger anti-entropy rounds (frontier exchange) with a peer.
sync_interval_s = 2.0
# Ledger-sync requests served per second to one peer, and bytes per second.
sync_requests_per_s = 50.0
sync_bytes_per_s = 8388608
"""
