"""`dsperse-node init` (data dir, identity key, commented config, optionally the network's genesis)
and `dsperse-node id`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from node.cli.common import add_data_dir, resolve_data_dir
from node.config import CONFIG_FILE_NAME, DEFAULT_CONFIG_TOML, load_config
from node.errors import DataDirError
from node.identity import KEY_FILE_NAME, NodeIdentity, load_identity, save_identity


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("init", help="create a data dir with a new identity key and config")
    add_data_dir(p)
    p.add_argument(
        "--force", action="store_true", help="replace an existing identity key (a new peer id!)"
    )
    p.add_argument(
        "--genesis",
        type=Path,
        default=None,
        metavar="F",
        help="join the network of this genesis file (checked, then installed as genesis.json)",
    )
    p.set_defaults(func=run_init)
    p = sub.add_parser("id", help="print this node's peer id and public key")
    add_data_dir(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_id)


def run_init(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args)
    identity = init_data_dir(data_dir, force=args.force, genesis=args.genesis)
    print(f"data dir:  {data_dir}")
    print(f"key:       {data_dir / KEY_FILE_NAME} (mode 0600)")
    print(f"config:    {data_dir / CONFIG_FILE_NAME}")
    print(f"peer id:   {identity.peer_id}")
    if args.genesis is not None:
        from node.genesis import GENESIS_FILE_NAME, load_installed_genesis

        installed = load_installed_genesis(data_dir)
        assert installed is not None  # init_data_dir installed it
        print(f"genesis:   {data_dir / GENESIS_FILE_NAME}")
        print(f"network:   {installed.network_id_hex}")
    return 0


def init_data_dir(
    data_dir: Path, *, force: bool = False, genesis: Path | None = None
) -> NodeIdentity:
    """Create a data dir with a new identity key and, unless one exists, the default config.
    Refuses to replace an existing key unless `force` (a new key is a new peer id). With
    `genesis`, the file is checked first (nothing is created if it is invalid or belongs to
    another network than the data dir's) and installed as `<data dir>/genesis.json`."""
    if data_dir.exists() and not data_dir.is_dir():
        raise DataDirError(f"{data_dir} exists and is not a directory")
    if genesis is not None:
        from node.genesis import check_installable, load_genesis

        check_installable(data_dir, load_genesis(genesis), genesis)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    identity = NodeIdentity.generate()
    save_identity(identity, data_dir / KEY_FILE_NAME, force=force)
    config_path = data_dir / CONFIG_FILE_NAME
    if not config_path.exists():
        tmp = config_path.with_name(f".{CONFIG_FILE_NAME}.tmp-{os.getpid()}")
        tmp.write_text(DEFAULT_CONFIG_TOML, encoding="utf-8")
        os.replace(tmp, config_path)
    load_config(data_dir)  # the file we leave behind must be valid
    if genesis is not None:
        from node.genesis import install_genesis

        install_genesis(data_dir, genesis)
    return identity


def run_id(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args)
    identity = load_identity(data_dir / KEY_FILE_NAME)
    if args.json:
        import json

        doc = {"peer_id": identity.peer_id, "public_key": identity.public_key.hex()}
        print(json.dumps(doc))
    else:
        print(f"peer id:    {identity.peer_id}")
        print(f"public key: {identity.public_key.hex()} (ed25519)")
    return 0
