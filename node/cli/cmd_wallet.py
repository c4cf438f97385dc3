"""`dsperse-node wallet`: this node's ledger account, through the running node's control API.

`balance` reads `GET /wallet`; `transfer`, `bond`, `unbond` and `withdraw` ask the node to sign
and store an entry (`POST /wallet/<kind>`, with the bearer token the node wrote to
`<data dir>/control.token`), and the node answers once the entry is stored locally. The node
refuses what its replica would not apply (insufficient balance, below the minimum stake, nothing
mature, a bad peer id) with a one-line reason, which is printed as the error; nothing is written.
`--wait-peers N` then waits (`POST /ledger/wait`) until N peers hold the entry, or fails after
`--timeout` seconds. The node is found through `<data dir>/control.addr`.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from ledger.constants import AMOUNT_MAX
from node.cli.common import CliError, add_data_dir, resolve_data_dir

READ_TIMEOUT_S = 10.0
# A write is answered once fsynced; the node bounds every handler at 60 s (HANDLER_TIMEOUT_S in
# node.control) and answers 504 after it, so the client waits a little longer than that.
WRITE_TIMEOUT_S = 65.0
WAIT_TIMEOUT_S_DEFAULT = 30.0
# Below the node's 60 s handler bound, so the node answers "not yet" before it answers 504.
WAIT_TIMEOUT_S_MAX = 50.0
WAIT_REPLY_MARGIN_S = 5.0
WAIT_PEERS_MAX = 1000
REASON_CHARS_MAX = 300
_DIGITS = re.compile(r"[0-9]{1,19}")


def parse_amount(text: str) -> int:
    """A positive whole number of the smallest unit, in plain decimal digits."""
    if not _DIGITS.fullmatch(text) or int(text) == 0:
        raise argparse.ArgumentTypeError(
            f"invalid amount {text!r}: a positive whole number of units (digits only, e.g. 500)"
        )
    if int(text) > AMOUNT_MAX:
        raise argparse.ArgumentTypeError(f"invalid amount {text!r}: at most {AMOUNT_MAX}")
    return int(text)


def _wait_peers(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= WAIT_PEERS_MAX:
        raise argparse.ArgumentTypeError(f"invalid peer count {text!r}: 1 to {WAIT_PEERS_MAX}")
    return int(text)


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= WAIT_TIMEOUT_S_MAX:  # also refuses nan
        raise argparse.ArgumentTypeError(
            f"invalid timeout {text!r}: seconds, more than 0 and at most {WAIT_TIMEOUT_S_MAX:g}"
        )
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("wallet", help="this node's account: balance, transfer, bond, unbond, "
                       "withdraw (through the running node)")  # fmt: skip
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    add_data_dir(common)
    common.add_argument("--json", action="store_true", help="print JSON")
    writes = argparse.ArgumentParser(add_help=False, parents=[common])
    writes.add_argument("--wait-peers", type=_wait_peers, default=0, metavar="N",
                        help="after storing, wait until N peers hold the entry")  # fmt: skip
    writes.add_argument("--timeout", type=_timeout, default=WAIT_TIMEOUT_S_DEFAULT, metavar="S",
                        help=f"how long --wait-peers waits ({WAIT_TIMEOUT_S_DEFAULT:g} s, "
                        f"at most {WAIT_TIMEOUT_S_MAX:g})")  # fmt: skip
    amount_help = "amount in the smallest unit (a positive integer)"

    a = actions.add_parser("balance", parents=[common], help="balance, bond, unbonding, slashed")
    a.set_defaults(func=run)
    a = actions.add_parser("transfer", parents=[writes], help="send AMOUNT to PEER_ID")
    a.add_argument("to", metavar="PEER_ID", help="the receiving node's peer id")
    a.add_argument("amount", type=parse_amount, metavar="AMOUNT", help=amount_help)
    a.set_defaults(func=run)
    for kind, what in (("bond", "stake AMOUNT (lets this node prove)"),
                       ("unbond", "start unbonding AMOUNT (matures after the delay)")):  # fmt: skip
        a = actions.add_parser(kind, parents=[writes], help=what)
        a.add_argument("amount", type=parse_amount, metavar="AMOUNT", help=amount_help)
        a.set_defaults(func=run)
    a = actions.add_parser("withdraw", parents=[writes], help="move matured unbondings back")
    a.set_defaults(func=run)


# -- talking to the node ---------------------------------------------------------------------


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:REASON_CHARS_MAX]


def _control_addr(data_dir: Path) -> str:
    from node.control import CONTROL_FILE_NAME  # trio loads only when a command runs

    path = data_dir / CONTROL_FILE_NAME
    try:
        addr = path.read_text(encoding="utf-8").strip()
    except OSError:
        addr = ""
    if not addr:
        raise CliError(f"no node is running for {data_dir} ({path} missing); "
                       f"start it with `dsperse-node run --data-dir {data_dir}`")  # fmt: skip
    return addr


class _Node:
    """The running node's control API: address, token, and how to read its answers."""

    def __init__(self, data_dir: Path, token: str | None) -> None:
        self.data_dir = data_dir
        self.addr = _control_addr(data_dir)
        self.token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None, timeout_s: float) -> Any:
        from node.control_client import control_request

        status, doc = control_request(self.addr, method, path, body, self.token, timeout_s)
        if status == 200 and isinstance(doc, dict):
            return doc
        raise CliError(self._refusal(status, doc, f"{method} {path}"))

    def _refusal(self, status: int, doc: Any, what: str) -> str:
        reason = _one_line(doc.get("error", doc) if isinstance(doc, dict) else doc)
        if status in (409, 422):  # the node refused the operation: its reason is the message
            return reason
        if status == 403:
            token_file = self.data_dir / "control.token"
            if self.token is None:
                return (f"the node at {self.addr} requires a control token for writes and "
                        f"{token_file} is missing; is {self.data_dir} its data dir?")  # fmt: skip
            return (f"the node at {self.addr} refused the token in {token_file} (403); "
                    "is it from this node's current start?")  # fmt: skip
        if status == 404 and reason.startswith("no route"):  # the server's own 404
            return f"the node at {self.addr} does not serve {what} (an older dsperse-node?)"
        if status == 404:  # the handler's: e.g. the entry to wait for is not in the replica
            return reason
        if status == 200:
            return f"the node at {self.addr} sent an unexpected reply to {what}"
        return f"the node at {self.addr} answered {what} with {status}: {reason}"


def _entry_request(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    if args.action == "transfer":
        return "/wallet/transfer", {"to": args.to, "amount": args.amount}
    if args.action in ("bond", "unbond"):
        return f"/wallet/{args.action}", {"amount": args.amount}
    return "/wallet/withdraw", {}


def _require_entry(entry: dict[str, Any], addr: str) -> str:
    entry_hash = entry.get("hash")
    if not isinstance(entry_hash, str) or not entry_hash:
        raise CliError(f"the node at {addr} stored an entry but sent no hash for it")
    return entry_hash


def _wait(node: _Node, entry_hash: str, peers: int, timeout_s: float) -> dict[str, Any]:
    body = {"hash": entry_hash, "peers": peers, "timeout_s": timeout_s}
    wait: dict[str, Any] = node.call("POST", "/ledger/wait", body, timeout_s + WAIT_REPLY_MARGIN_S)
    if not isinstance(wait.get("peers"), list) or not isinstance(wait.get("ok"), bool):
        raise CliError(f"the node at {node.addr} sent an unexpected reply to POST /ledger/wait")
    return wait


# -- output ----------------------------------------------------------------------------------


def _require_balance(doc: dict[str, Any], addr: str) -> None:
    ints = all(type(doc.get(k)) is int for k in ("balance", "bonded", "slashed", "height"))
    unbonding = doc.get("unbonding")
    pairs = isinstance(unbonding, list) and all(
        isinstance(u, list) and len(u) == 2 and all(type(x) is int for x in u) for u in unbonding
    )
    if not (ints and pairs and isinstance(doc.get("account"), str)):
        raise CliError(f"the node at {addr} sent an unexpected reply to GET /wallet")


def format_balance(doc: dict[str, Any]) -> str:
    height = doc.get("height", 0)
    unbonding = [
        f"{amount} ({'mature' if mature <= height else f'matures at height {mature}'})"
        for amount, mature in doc.get("unbonding", [])
    ]
    rows = (
        ("account", doc.get("account", "?")),
        ("balance", doc.get("balance", 0)),
        ("bonded", doc.get("bonded", 0)),
        ("unbonding", ", ".join(unbonding) or "none"),
        ("slashed", doc.get("slashed", 0)),
        ("height", height),
    )
    return "\n".join(f"{name:<10} {value}" for name, value in rows)


def format_entry(args: argparse.Namespace, entry: dict[str, Any]) -> str:
    seq = f" (seq {entry['seq']})" if "seq" in entry else ""
    stored = f"stored: {entry['hash']}{seq}"
    if args.action == "transfer":
        return f"transfer {args.amount} -> {args.to} {stored}"
    if args.action in ("bond", "unbond"):
        return f"{args.action} {args.amount} {stored}"
    amount = f" {entry['amount']}" if "amount" in entry else ""
    return f"withdraw{amount} {stored}"


def run(args: argparse.Namespace) -> int:
    from node.control import read_control_token

    data_dir = resolve_data_dir(args)
    if args.action == "balance":
        reader = _Node(data_dir, None)
        doc = reader.call("GET", "/wallet", None, READ_TIMEOUT_S)
        _require_balance(doc, reader.addr)
        print(json.dumps(doc, indent=2) if args.json else format_balance(doc))
        return 0
    node = _Node(data_dir, read_control_token(data_dir))
    path, body = _entry_request(args)
    entry = node.call("POST", path, body, WRITE_TIMEOUT_S)
    entry_hash = _require_entry(entry, node.addr)
    wait = _wait(node, entry_hash, args.wait_peers, args.timeout) if args.wait_peers else None
    if args.json:
        print(json.dumps({"action": args.action, "entry": entry, "wait": wait}, indent=2))
    else:
        print(format_entry(args, entry))
        if wait is not None and wait["ok"]:
            print(f"entry {entry_hash} reached {len(wait['peers'])} of {args.wait_peers} peers")
    if wait is not None and not wait["ok"]:
        # The entry is stored and will spread; say so, so nobody repeats the operation.
        raise CliError(f"entry {entry_hash} reached {len(wait['peers'])} of {args.wait_peers} "
                       f"peers within {args.timeout:g} s")  # fmt: skip
    return 0
