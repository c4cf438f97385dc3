"""`dsperse-node genesis new|show`: make a new network's genesis file, or check and print one.

`new` signs the genesis entries with a fresh one-time key and forgets it, so running it twice
with the same arguments makes two different networks (two network ids): make the file once and
hand that file to every node (`dsperse-node init --genesis FILE`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from node.errors import NodeError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("genesis", help="make or inspect a network genesis file")
    cmds = p.add_subparsers(dest="genesis_command", metavar="SUBCOMMAND", required=True)
    q = cmds.add_parser("new", help="make a new network: sign its genesis with a one-time key")
    q.add_argument("--out", type=Path, required=True, metavar="FILE", help="genesis file to write")
    q.add_argument(
        "--alloc",
        action="append",
        default=[],
        metavar="PEER_ID=AMOUNT",
        help="mint AMOUNT into an account's balance (repeatable; peer id or 64-hex key)",
    )
    q.add_argument(
        "--bond",
        action="append",
        default=[],
        metavar="PEER_ID=AMOUNT",
        help="mint AMOUNT straight into an account's bonded stake (repeatable)",
    )
    q.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="ledger parameter (supply_max, award_bond_min, unbond_delay_heights, "
        "slash_numerator, slash_denominator, reporter_numerator, reporter_denominator, "
        "proof_bytes_max, pending_max)",
    )
    q.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    q.set_defaults(func=run_new)
    q = cmds.add_parser("show", help="check a genesis file and print its network id and contents")
    q.add_argument("file", type=Path, metavar="FILE")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=run_show)


def run_new(args: argparse.Namespace) -> int:
    from node.genesis import (
        build_genesis,
        parse_assignment,
        parse_param,
        write_genesis,
    )

    out: Path = args.out
    if out.exists() and not args.force:
        raise NodeError(f"{out} already exists; refusing to overwrite it (use --force)")
    params: dict[str, int] = {}
    for text in args.param:
        key, value = parse_param(text)
        if key in params:
            raise NodeError(f"--param {key} given twice")
        params[key] = value
    allocations = [parse_assignment(text) for text in args.alloc]
    bonds = [parse_assignment(text) for text in args.bond]
    genesis = build_genesis(allocations, bonds, params)
    write_genesis(genesis, out)
    print(f"network id: {genesis.network_id_hex}")
    print(f"genesis:    {out} ({len(genesis.allocations)} allocations, {len(genesis.bonds)} bonds)")
    print("the one-time genesis key is discarded: nobody can mint on this network again")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from node.genesis import PARAM_NAMES, load_genesis
    from node.identity import compute_peer_id

    genesis = load_genesis(args.file)
    config = genesis.config
    params = {name: getattr(config, name) for name in PARAM_NAMES}
    allocations = [[compute_peer_id(a), n] for a, n in genesis.allocations]
    bonds = [[compute_peer_id(a), n] for a, n in genesis.bonds]
    supply = sum(n for _, n in (*genesis.allocations, *genesis.bonds))
    if args.json:
        doc = {
            "network_id": genesis.network_id_hex,
            "genesis_account": config.genesis_account.hex(),
            "params": params,
            "allocations": allocations,
            "bonds": bonds,
            "supply": supply,
            "entries": len(genesis.entries),
        }
        print(json.dumps(doc, sort_keys=True))
        return 0
    print(f"network id:      {genesis.network_id_hex}")
    print(f"genesis account: {config.genesis_account.hex()} (key discarded)")
    print(f"supply:          {supply} of supply_max {config.supply_max}")
    print("params:")
    for name, value in params.items():
        print(f"  {name:<22} {value}")
    for title, rows in (("allocations", allocations), ("bonds", bonds)):
        print(f"{title}:" + ("" if rows else " none"))
        for peer_id, amount in rows:
            print(f"  {peer_id:<52} {amount:>20}")
    return 0
