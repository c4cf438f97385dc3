"""The canonical network genesis: its ledger config, the genesis key's signed chain, the file.

A network is born from one file (`genesis.json`). `build_genesis` makes a fresh one-time ed25519
key, puts it in the config as `genesis_account`, signs one `GenesisAllocation` per allocation and
then one `GenesisBond` per bond with it, and drops the private key: nobody can ever mint again,
not even whoever made the genesis. The network id is the sha256 of a domain tag, the config and
the entry hashes in chain order, so it names the config *and* the initial distribution; because
the key is fresh, two builds from the same inputs are two different networks (by design: a
network id is never reused by accident).

`load_genesis` trusts nothing in the file: every entry is decoded strictly, its signature checked,
the chain re-linked, the summaries compared with the entries, the entries applied to a fresh
lattice and the network id recomputed. `install_genesis` binds a data dir to one network.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ledger.accessors import is_conserved
from ledger.builders import ChainWriter
from ledger.config import LedgerConfig, mainnet_config
from ledger.constants import AMOUNT_MAX, ZERO_HASH
from ledger.containers import Entry, GenesisAllocation, GenesisBond
from ledger.encoding import decode_entry, encode_entry
from ledger.env import LedgerEnv
from ledger.errors import InvalidTransition, LedgerError
from ledger.interfaces import ProofStatementView
from ledger.lattice import EntryStatus, Lattice
from node.config import NodeConfig
from node.errors import NodeError
from node.identity import PUBLIC_KEY_BYTES, Ed25519Scheme, NodeIdentity, compute_peer_id
from node.identity import parse_account as identity_parse_account

GENESIS_FILE_NAME = "genesis.json"
GENESIS_FORMAT = "dsperse-genesis/1"
GENESIS_BYTES_MAX = 16 * 1024 * 1024
DOMAIN_NETWORK = b"dsperse-node/network/v1\x00"
# What `--param` may set: every LedgerConfig field but the key, which is always fresh.
PARAM_NAMES = tuple(f.name for f in fields(LedgerConfig) if f.name != "genesis_account")
_DOCUMENT_KEYS = frozenset({"format", "network_id", "params", "allocations", "bonds", "entries"})

Allocation = tuple[bytes, int]  # (32-byte ed25519 public key, amount)


class GenesisError(NodeError):
    """A genesis file or genesis input is invalid, unreadable, or for another network."""


@dataclass(frozen=True)
class Genesis:
    config: LedgerConfig
    entries: tuple[Entry, ...]  # the genesis key's chain: allocations, then bonds
    allocations: tuple[Allocation, ...]
    bonds: tuple[Allocation, ...]

    @property
    def network_id(self) -> bytes:
        return compute_network_id(self.config, self.entries)

    @property
    def network_id_hex(self) -> str:
        return self.network_id.hex()


def compute_network_id(config: LedgerConfig, entries: Sequence[Entry]) -> bytes:
    """sha256(domain || config || entry hashes in chain order): 32 bytes."""
    digest = hashlib.sha256(DOMAIN_NETWORK + config.to_bytes())
    for entry in entries:
        digest.update(entry.hash)
    return digest.digest()


# ---------------------------------------------------------------------------- accounts


def parse_account(text: str) -> bytes:
    """A 32-byte ed25519 public key from a libp2p peer id (`12D3KooW…`) or 64 hex digits."""
    try:
        return identity_parse_account(text)
    except ValueError:
        raise GenesisError(
            f"{text.strip()!r} is not an ed25519 peer id (12D3KooW…) or a 64-hex key"
        ) from None


def parse_assignment(text: str) -> Allocation:
    """`ACCOUNT=AMOUNT` (a command-line `--alloc` / `--bond`)."""
    account, sep, amount = text.partition("=")
    if not sep:
        raise GenesisError(f"{text!r}: expected PEER_ID=AMOUNT")
    return parse_account(account), _parse_int(amount, f"amount in {text!r}")


def parse_param(text: str) -> tuple[str, int]:
    """`KEY=VALUE` (a command-line `--param`)."""
    key, sep, value = text.partition("=")
    if not sep:
        raise GenesisError(f"{text!r}: expected KEY=VALUE")
    return key.strip(), _parse_int(value, f"value of {key.strip()}")


def _parse_int(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise GenesisError(f"{what} must be an integer, not {text.strip()!r}") from None


# ---------------------------------------------------------------------------- building


def compute_config(genesis_account: bytes, params: Mapping[str, int]) -> LedgerConfig:
    """The mainnet defaults with `params` on top; unknown or out-of-range params are refused."""
    base = mainnet_config(genesis_account)
    values = {name: getattr(base, name) for name in PARAM_NAMES}
    for name, value in params.items():
        if name not in values:
            raise GenesisError(f"unknown genesis param {name!r} (known: {', '.join(PARAM_NAMES)})")
        if type(value) is not int:
            raise GenesisError(f"genesis param {name} must be an integer, not {value!r}")
        values[name] = value
    try:
        return LedgerConfig(genesis_account=genesis_account, **values)
    except LedgerError as exc:
        raise GenesisError(str(exc)) from None


def check_distribution(
    allocations: Sequence[Allocation], bonds: Sequence[Allocation], supply_max: int
) -> None:
    """Each list names an account once, amounts are positive, the total fits the cap."""
    if not allocations and not bonds:
        raise GenesisError("a genesis needs at least one allocation or bond")
    for what, items in (("allocation", allocations), ("bond", bonds)):
        seen: set[bytes] = set()
        for account, amount in items:
            label = compute_peer_id(account) if len(account) == PUBLIC_KEY_BYTES else account.hex()
            if len(account) != PUBLIC_KEY_BYTES:
                raise GenesisError(f"{what} account {label} is not a 32-byte ed25519 key")
            if account in seen:
                raise GenesisError(f"duplicate {what} for {label}")
            seen.add(account)
            if type(amount) is not int or not 0 < amount <= AMOUNT_MAX:
                raise GenesisError(f"{what} for {label}: amount must be positive, not {amount}")
    total = sum(amount for _, amount in (*allocations, *bonds))
    if total > supply_max:
        raise GenesisError(f"allocations and bonds total {total}, above supply_max {supply_max}")


def build_genesis(
    allocations: Sequence[Allocation], bonds: Sequence[Allocation], params: Mapping[str, int]
) -> Genesis:
    """A new network: fresh one-time genesis key, its signed chain, then the key is dropped."""
    key = NodeIdentity.generate()
    config = compute_config(key.public_key, params)
    check_distribution(allocations, bonds, config.supply_max)
    writer = ChainWriter(key)
    entries = [writer.append(GenesisAllocation(a, n)) for a, n in allocations]
    entries += [writer.append(GenesisBond(a, n)) for a, n in bonds]
    # The private key goes out of scope here and is never written anywhere: no more minting.
    del writer, key
    genesis = Genesis(config, tuple(entries), tuple(allocations), tuple(bonds))
    check_entries(genesis)
    return genesis


# ---------------------------------------------------------------------------- checking


class _NoClaims:
    """A genesis holds no claims, so no proof is ever verified (and none can be valid)."""

    def verify(self, statement: ProofStatementView, proof: bytes) -> bool | None:
        return None


def check_entries(genesis: Genesis) -> None:
    """The entries are the genesis key's valid chain and say what the summaries say."""
    config, scheme = genesis.config, Ed25519Scheme()
    prev = ZERO_HASH
    for i, entry in enumerate(genesis.entries):
        header = entry.header
        if not isinstance(entry.op, GenesisAllocation | GenesisBond):
            raise GenesisError(f"entry {i} is a {type(entry.op).__name__}, not a genesis entry")
        if header.account != config.genesis_account:
            raise GenesisError(f"entry {i} is not signed by the genesis account")
        if header.seq != i or header.prev != prev:
            raise GenesisError(f"entry {i} does not extend the genesis chain (seq or prev)")
        if not scheme.verify(header.account, entry.hash, header.signature):
            raise GenesisError(f"entry {i} has a bad signature")
        prev = entry.hash
    ops = [e.op for e in genesis.entries]
    kinds = [isinstance(op, GenesisBond) for op in ops]
    if kinds != sorted(kinds):
        raise GenesisError("a genesis allocation entry comes after a genesis bond entry")
    allocated = tuple((op.recipient, op.amount) for op in ops if isinstance(op, GenesisAllocation))
    bonded = tuple((op.recipient, op.amount) for op in ops if isinstance(op, GenesisBond))
    if allocated != genesis.allocations:
        raise GenesisError("allocations do not match the signed entries")
    if bonded != genesis.bonds:
        raise GenesisError("bonds do not match the signed entries")
    check_distribution(genesis.allocations, genesis.bonds, config.supply_max)
    apply_genesis(genesis)


def apply_genesis(genesis: Genesis) -> Lattice:
    """A fresh replica holding the genesis entries, each applied (else GenesisError)."""
    lattice = Lattice(LedgerEnv(genesis.config, Ed25519Scheme(), _NoClaims()))
    for i, entry in enumerate(genesis.entries):
        try:
            lattice.add(entry)
        except InvalidTransition as exc:
            raise GenesisError(f"entry {i} is invalid: {exc}") from None
    for i, entry in enumerate(genesis.entries):
        status, reason = lattice.get_status(entry.hash)
        if status is not EntryStatus.APPLIED:
            why = reason.value if reason else status.value
            raise GenesisError(f"entry {i} does not apply: {why}")
    if not is_conserved(lattice.state):
        raise GenesisError("the genesis state does not conserve supply")
    return lattice


# ---------------------------------------------------------------------------- the file


def genesis_to_document(genesis: Genesis) -> dict[str, Any]:
    config = genesis.config
    params: dict[str, Any] = {name: getattr(config, name) for name in PARAM_NAMES}
    params["genesis_account"] = config.genesis_account.hex()
    return {
        "format": GENESIS_FORMAT,
        "network_id": genesis.network_id_hex,
        "params": params,
        "allocations": [[compute_peer_id(a), n] for a, n in genesis.allocations],
        "bonds": [[compute_peer_id(a), n] for a, n in genesis.bonds],
        "entries": [encode_entry(e).hex() for e in genesis.entries],
    }


def genesis_to_json(genesis: Genesis) -> str:
    """The canonical text of a genesis file."""
    return json.dumps(genesis_to_document(genesis), sort_keys=True, indent=2) + "\n"


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"duplicate key {duplicates[0]!r}")
    return dict(pairs)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def _hex(value: Any, n: int | None, what: str) -> bytes:
    if not isinstance(value, str) or value != value.lower() or len(value) % 2:
        raise GenesisError(f"{what} must be lowercase hex")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise GenesisError(f"{what} must be lowercase hex") from None
    if n is not None and len(raw) != n:
        raise GenesisError(f"{what} must be {n} bytes")
    return raw


def _pairs(value: Any, what: str) -> tuple[Allocation, ...]:
    if not isinstance(value, list):
        raise GenesisError(f"{what} must be a list of [peer id, amount]")
    out = []
    for i, item in enumerate(value):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise GenesisError(f"{what}[{i}] must be [peer id, amount]")
        if type(item[1]) is not int:
            raise GenesisError(f"{what}[{i}]: amount must be an integer")
        out.append((parse_account(item[0]), item[1]))
    return tuple(out)


def _params(value: Any) -> LedgerConfig:
    if not isinstance(value, dict):
        raise GenesisError("params must be an object")
    expected = {*PARAM_NAMES, "genesis_account"}
    if set(value) != expected:
        missing, unknown = sorted(expected - set(value)), sorted(set(value) - expected)
        raise GenesisError(f"params: missing {missing}, unknown {unknown}")
    account = _hex(value["genesis_account"], PUBLIC_KEY_BYTES, "params.genesis_account")
    return compute_config(account, {k: value[k] for k in PARAM_NAMES})


def genesis_from_document(doc: Any) -> Genesis:
    """Check a parsed genesis document completely (see the module docstring)."""
    if not isinstance(doc, dict):
        raise GenesisError("not a JSON object")
    if doc.get("format") != GENESIS_FORMAT:
        raise GenesisError(f"format is {doc.get('format')!r}, expected {GENESIS_FORMAT!r}")
    if set(doc) != _DOCUMENT_KEYS:
        missing, unknown = sorted(_DOCUMENT_KEYS - set(doc)), sorted(set(doc) - _DOCUMENT_KEYS)
        raise GenesisError(f"missing keys {missing}, unknown keys {unknown}")
    config = _params(doc["params"])
    if not isinstance(doc["entries"], list):
        raise GenesisError("entries must be a list of hex strings")
    entries = []
    for i, text in enumerate(doc["entries"]):
        data = _hex(text, None, f"entries[{i}]")
        try:
            entries.append(decode_entry(data, config.proof_bytes_max))
        except InvalidTransition as exc:
            raise GenesisError(f"entries[{i}] does not decode: {exc}") from None
    genesis = Genesis(
        config,
        tuple(entries),
        _pairs(doc["allocations"], "allocations"),
        _pairs(doc["bonds"], "bonds"),
    )
    check_entries(genesis)
    claimed = _hex(doc["network_id"], 32, "network_id")
    if claimed != genesis.network_id:
        raise GenesisError(
            f"network_id {claimed.hex()} does not match its contents ({genesis.network_id_hex})"
        )
    return genesis


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(GENESIS_BYTES_MAX + 1)
    except FileNotFoundError:
        raise GenesisError(f"no genesis file at {path}") from None
    except OSError as exc:
        raise GenesisError(f"cannot read genesis file {path}: {exc.strerror}") from None
    if len(data) > GENESIS_BYTES_MAX:
        raise GenesisError(f"genesis file {path} is larger than {GENESIS_BYTES_MAX} bytes")
    return data


def parse_genesis(data: bytes, source: str) -> Genesis:
    try:
        doc = json.loads(
            data.decode("utf-8"), object_pairs_hook=_object, parse_constant=_refuse_constant
        )
    except UnicodeDecodeError:
        raise GenesisError(f"genesis file {source} is not UTF-8 text") from None
    except ValueError as exc:  # json.JSONDecodeError and our own refusals
        raise GenesisError(f"genesis file {source} is not valid JSON: {exc}") from None
    except RecursionError:
        raise GenesisError(f"genesis file {source} is nested too deeply") from None
    try:
        return genesis_from_document(doc)
    except GenesisError as exc:
        raise GenesisError(f"genesis file {source}: {exc}") from None


def load_genesis(path: Path) -> Genesis:
    """Read and fully check a genesis file; GenesisError names the file and the problem."""
    return parse_genesis(_read(path), str(path))


def _write_atomically(data: bytes, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise GenesisError(f"cannot write genesis file {path}: {exc.strerror}") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def write_genesis(genesis: Genesis, path: Path) -> None:
    """Write the canonical file atomically (a reader never sees half a genesis)."""
    _write_atomically(genesis_to_json(genesis).encode("utf-8"), path)


# ---------------------------------------------------------------------------- data dirs


def load_installed_genesis(data_dir: Path) -> Genesis | None:
    """The genesis installed in a data dir, or None if there is none."""
    path = data_dir / GENESIS_FILE_NAME
    if not path.exists():
        return None
    return load_genesis(path)


def check_installable(data_dir: Path, genesis: Genesis, source: Path) -> Genesis | None:
    """Refuse a genesis of another network than the one a data dir belongs to; returns the
    installed genesis when it is the same network (installing is then a no-op)."""
    installed = load_installed_genesis(data_dir)
    if installed is not None and installed.network_id != genesis.network_id:
        raise GenesisError(
            f"{data_dir} belongs to network {installed.network_id_hex}; {source} is network "
            f"{genesis.network_id_hex}: use a new data dir"
        )
    return installed


def install_genesis(data_dir: Path, source: Path) -> Genesis:
    """Check `source` and copy it to `<data_dir>/genesis.json` atomically (same network: no-op)."""
    data = _read(source)
    genesis = parse_genesis(data, str(source))
    if not data_dir.is_dir():
        raise GenesisError(f"{data_dir} is not a directory; run `dsperse-node init` first")
    installed = check_installable(data_dir, genesis, source)
    if installed is None:
        _write_atomically(data, data_dir / GENESIS_FILE_NAME)
    return genesis


def resolve_genesis(config: NodeConfig) -> Genesis | None:
    """The genesis a node runs with: `[ledger] genesis` if set, else the one installed."""
    path = config.ledger.genesis_path(config.data_dir)
    if path is not None:
        return load_genesis(path)
    return load_installed_genesis(config.data_dir)
