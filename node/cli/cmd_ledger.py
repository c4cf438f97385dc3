"""`dsperse-node ledger show|accounts|entries ACCOUNT|verify|root`: inspect the local replica.

The replica lives in `<data dir>/ledger.sqlite`. Opening it runs the store's integrity check
(rows re-hashed, chains re-linked, state root recomputed); `verify` also re-checks every
signature and piece of evidence. Commands only read: nothing is written to the database.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from node.cli.common import add_data_dir, resolve_data_dir


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ledger", help="inspect the local ledger replica")
    cmds = p.add_subparsers(dest="ledger_command", metavar="SUBCOMMAND", required=True)
    for name, helptext in (
        ("show", "summary: entries, supply, totals, slashes, state root"),
        ("accounts", "every account: balance, bonded, unbonding, slashed, chain length"),
        ("entries", "the entries of one account's chain with their status"),
        ("verify", "full check: hashes, chains, signatures, evidence, state root"),
        ("root", "print the state root (equal sets of entries give equal roots)"),
    ):
        q = cmds.add_parser(name, help=helptext)
        add_data_dir(q)
        if name == "entries":
            q.add_argument("account", metavar="ACCOUNT", help="peer id (12D3KooW…) or hex key")
        if name in ("show", "accounts", "entries"):
            q.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


class _NoProofVerifier:
    """Proofs were verified when entries arrived; the CLI re-checks everything else."""

    def verify(self, statement: object, proof: bytes) -> bool:
        return False


def _open(args: argparse.Namespace) -> Any:
    from ledger.env import LedgerEnv
    from ledger.store import LEDGER_FILE_NAME, LedgerStore, read_store_config
    from node.identity import Ed25519Scheme

    path = resolve_data_dir(args) / LEDGER_FILE_NAME
    config = read_store_config(Path(path))
    env = LedgerEnv(config, Ed25519Scheme(), _NoProofVerifier(), verify_proofs=False)
    return LedgerStore.open(path, env, create=False)


def run(args: argparse.Namespace) -> int:
    store = _open(args)
    try:
        handler = {
            "show": _show,
            "accounts": _accounts,
            "entries": _entries,
            "verify": _verify,
            "root": _root,
        }[args.ledger_command]
        return handler(store, args)
    finally:
        store.close(checkpoint=False)


def _label(account: bytes) -> str:
    from node.identity import compute_peer_id

    return compute_peer_id(account)


def _show(store: Any, args: argparse.Namespace) -> int:
    from ledger.accessors import (
        get_total_balances,
        get_total_escrow,
        get_total_stake,
        is_conserved,
    )

    lattice = store.lattice
    state, stats = lattice.state, lattice.statistics()
    doc = {
        "path": str(store.path),
        "entries": store.count,
        "canonical": stats.canonical,
        "pending": stats.pending,
        "accounts": stats.accounts,
        "supply": state.supply,
        "balances": get_total_balances(state),
        "stake": get_total_stake(state),
        "escrow": get_total_escrow(state),
        "burned": state.burned,
        "awards": len(state.awards),
        "awards_paid": sum(a.paid for a in state.awards.values()),
        "offences": len(state.offences),
        "conserved": is_conserved(state),
        "forks_seen": len(lattice.compute_fork_evidence()),
        "root": lattice.compute_root().hex(),
    }
    if args.json:
        print(json.dumps(doc))
    else:
        width = max(len(k) for k in doc)
        for key, value in doc.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _accounts(store: Any, args: argparse.Namespace) -> int:
    lattice = store.lattice
    state = lattice.state
    keys = sorted(set(state.accounts) | set(lattice.get_accounts()))
    rows = []
    for key in keys:
        acct = state.accounts.get(key)
        head = lattice.get_head(key)
        rows.append(
            {
                "peer_id": _label(key),
                "public_key": key.hex(),
                "balance": acct.balance if acct else 0,
                "bonded": acct.bonded if acct else 0,
                "unbonding": acct.unbonding_total() if acct else 0,
                "slashed": acct.slashed if acct else 0,
                "entries": head[0] if head else 0,
            }
        )
    if args.json:
        print(json.dumps(rows))
        return 0
    header = ("peer id", "balance", "bonded", "unbonding", "slashed", "entries")
    print(
        f"{header[0]:<52} {header[1]:>12} {header[2]:>12} {header[3]:>10} {header[4]:>10} "
        f"{header[5]:>7}"
    )
    for r in rows:
        print(
            f"{r['peer_id']:<52} {r['balance']:>12} {r['bonded']:>12} {r['unbonding']:>10} "
            f"{r['slashed']:>10} {r['entries']:>7}"
        )
    return 0


def _find_account(store: Any, text: str) -> bytes:
    from ledger.errors import LedgerError

    text = text.strip()
    keys = set(store.lattice.get_accounts()) | set(store.lattice.state.accounts)
    for key in keys:
        if text in (key.hex(), _label(key)):
            return bytes(key)
    raise LedgerError(f"no account {text!r} in this ledger (give a peer id or a 64-hex key)")


def _describe(op: Any) -> str:
    from ledger.encoding import op_to_array

    fields = []
    for value in op_to_array(op)[1:]:
        if isinstance(value, bytes):
            fields.append(value.hex()[:12])
        elif isinstance(value, list):
            fields.append("[…]")
        else:
            fields.append(str(value))
    return f"{type(op).__name__}({', '.join(fields)})"


def _entries(store: Any, args: argparse.Namespace) -> int:
    account = _find_account(store, args.account)
    lattice = store.lattice
    rows = []
    for entry in sorted(
        (e for e in lattice.iter_entries() if e.header.account == account),
        key=lambda e: (e.header.seq, e.hash),
    ):
        status, reason = lattice.get_status(entry.hash)
        rows.append(
            {
                "seq": entry.header.seq,
                "height": entry.header.height,
                "hash": entry.hash.hex(),
                "op": _describe(entry.op),
                "status": status.value,
                "reason": reason.value if reason else None,
            }
        )
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"account {_label(account)} ({account.hex()})")
    for r in rows:
        status = r["status"] + (f" ({r['reason']})" if r["reason"] else "")
        print(f"{r['seq']:>6} h={r['height']:<8} {r['hash'][:16]}  {status:<28} {r['op']}")
    return 0


def _verify(store: Any, args: argparse.Namespace) -> int:
    root = store.verify()
    print(f"ok: {store.count} entries; hashes, chains, signatures and evidence check out")
    print("proofs in claims were verified on arrival and are not re-run here")
    print(f"root {root.hex()}")
    return 0


def _root(store: Any, args: argparse.Namespace) -> int:
    print(store.lattice.compute_root().hex())
    return 0
