"""`dsperse-node ledger show|accounts|entries ACCOUNT|verify|root`: inspect the local replica.

The replica lives in `<data dir>/ledger.sqlite`. Opening it runs the store's integrity check
(rows re-hashed, chains re-linked, state root recomputed); `verify` also re-checks every
signature and piece of evidence, and re-verifies with EZKL the proof of every claim and of every
invalid-proof evidence whose bundle is in `<data dir>/bundles` (`node.proof_verifier`), listing
those it cannot check. Commands only read: they open one read snapshot (SQLite WAL lets a running
node keep writing meanwhile) and close without a checkpoint, so nothing is written to the
database; EZKL verification reads the SRS from `<data dir>/cache` and never creates one.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.cli.common import add_data_dir, resolve_data_dir

if TYPE_CHECKING:
    from ledger.interfaces import ProofVerifier


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ledger", help="inspect the local ledger replica")
    cmds = p.add_subparsers(dest="ledger_command", metavar="SUBCOMMAND", required=True)
    for name, helptext in (
        ("show", "summary: entries, supply, totals, slashes, state root"),
        ("accounts", "every account: balance, bonded, unbonding, slashed, chain length"),
        ("entries", "the entries of one account's chain with their status"),
        ("verify", "full check: hashes, chains, signatures, evidence, proofs, state root"),
        ("root", "print the state root (equal sets of entries give equal roots)"),
    ):
        q = cmds.add_parser(name, help=helptext)
        add_data_dir(q)
        if name == "entries":
            q.add_argument("account", metavar="ACCOUNT", help="peer id (12D3KooW…) or hex key")
        if name in ("show", "accounts", "entries"):
            q.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def _open(args: argparse.Namespace) -> Any:
    from ledger.env import LedgerEnv
    from ledger.store import LEDGER_FILE_NAME, LedgerStore, read_store_config
    from node.identity import Ed25519Scheme
    from node.proof_verifier import UndecidedVerifier

    path = resolve_data_dir(args) / LEDGER_FILE_NAME
    config = read_store_config(Path(path))
    # The store's own re-check runs every entry-only check except proofs (verify_proofs=False, so
    # the verifier is never asked): a proof whose bundle is absent would be PROOF_UNDECIDED and
    # read as corruption. `verify` re-checks proofs itself, in `_check_proofs`.
    env = LedgerEnv(config, Ed25519Scheme(), UndecidedVerifier(), verify_proofs=False)
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
        store.close(checkpoint=False)  # a checkpoint writes the root: stay read-only


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


@dataclass(frozen=True, slots=True)
class _ProofCheck:
    entry_hash: bytes
    kind: str  # "claim" or "invalid-proof evidence"
    bundle_id: bytes
    verdict: bool | None  # the verifier's answer
    holds: bool | None  # the entry is right about its proof (None: cannot check here)


def _check_proofs(entries: Iterable[Any], verifier: ProofVerifier) -> list[_ProofCheck]:
    """Re-verify the proof of every claim (must verify) and of every invalid-proof evidence
    (must not), in (height, hash) order."""
    from ledger.containers import Claim, InvalidProofEvidence, Slash

    checks = []
    for entry in sorted(entries, key=lambda e: (e.header.height, e.hash)):
        op = entry.op
        if isinstance(op, Claim):
            kind, signed, proof, expected = "claim", op.statement, op.proof, True
        elif isinstance(op, Slash) and isinstance(op.evidence, InvalidProofEvidence):
            evidence = op.evidence
            kind, signed, proof = "invalid-proof evidence", evidence.statement, evidence.proof
            expected = False
        else:
            continue
        verdict = verifier.verify(signed.statement, proof)
        holds = None if verdict is None else verdict is expected
        checks.append(_ProofCheck(entry.hash, kind, signed.statement.bundle_id, verdict, holds))
    return checks


def _verify(store: Any, args: argparse.Namespace) -> int:
    from node.proof_verifier import BUNDLES_DIR_NAME, BundleProofVerifier

    root = store.verify()
    data_dir = resolve_data_dir(args)
    checks = _check_proofs(store.lattice.iter_entries(), BundleProofVerifier.for_data_dir(data_dir))
    failed = [c for c in checks if c.holds is False]
    unchecked = [c for c in checks if c.holds is None]
    print(f"ok: {store.count} entries; hashes, chains, signatures and evidence check out")
    print(
        f"proofs: {len(checks) - len(unchecked)} re-verified, {len(failed)} wrong, "
        f"{len(unchecked)} not checkable (bundle or its SRS not in {data_dir / BUNDLES_DIR_NAME})"
    )
    for c in unchecked:
        print(f"  unchecked {c.entry_hash.hex()} {c.kind} bundle {c.bundle_id.hex()}")
    for c in failed:
        what = "does not verify" if c.kind == "claim" else "verifies (the slash is unfounded)"
        print(f"  WRONG {c.entry_hash.hex()} {c.kind} bundle {c.bundle_id.hex()}: proof {what}")
    print(f"root {root.hex()}")
    if failed:
        print(
            f"dsperse-node ledger: error: {len(failed)} stored entries are wrong about their "
            "proofs (listed above)",
            file=sys.stderr,
        )
        return 1
    return 0


def _root(store: Any, args: argparse.Namespace) -> int:
    print(store.lattice.compute_root().hex())
    return 0
