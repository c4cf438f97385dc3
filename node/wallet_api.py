"""Control-API routes of the ledger replica: the wallet (writes need the node's control token)
and the replica's view (`GET /ledger`).

A write returns once its entry is stored locally (fsynced); `POST /ledger/wait` then asks peers
whether they hold it. Refusals answer 409 (the ledger would refuse it) or 422 (bad request) with
a one-line reason, and nothing is written.
"""

from __future__ import annotations

from typing import Any

from ledger.containers import Bond, Operation, Transfer, Unbond, Withdraw
from node.control import ControlError, ControlRequest
from node.identity import parse_account
from node.ledger_sync import LedgerSync
from node.replica import LedgerReplica, WalletRefusal

AMOUNT_MAX = 2**63 - 1
WAIT_TIMEOUT_S_MAX = 55.0  # under the control server's 60 s handler timeout
WAIT_PEERS_MAX = 1024
HAS_HASHES_MAX = 4096


def _amount(body: dict[str, Any]) -> int:
    amount = body.get("amount")
    if type(amount) is not int or not 0 < amount <= AMOUNT_MAX:
        raise ControlError(422, "amount must be a positive integer")
    return amount


def _submit(replica: LedgerReplica, op: Operation) -> dict[str, Any]:
    try:
        return replica.submit(op)
    except WalletRefusal as exc:
        raise ControlError(409, str(exc)) from None


def build_wallet_routes(replica: LedgerReplica, sync: LedgerSync) -> dict[str, Any]:
    def transfer(request: ControlRequest) -> dict[str, Any]:
        to = request.body.get("to")
        if not isinstance(to, str):
            raise ControlError(422, "`to` must be a peer id")
        try:
            recipient = parse_account(to)
        except ValueError as exc:
            raise ControlError(422, f"bad recipient: {exc}") from None
        return _submit(replica, Transfer(recipient, _amount(request.body)))

    async def wait(request: ControlRequest) -> dict[str, Any]:
        body = request.body
        h, peers, timeout_s = body.get("hash"), body.get("peers"), body.get("timeout_s", 30.0)
        try:
            digest = bytes.fromhex(h) if isinstance(h, str) else b""
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise ControlError(422, "`hash` must be 64 hex digits")
        if type(peers) is not int or not 0 <= peers <= WAIT_PEERS_MAX:
            raise ControlError(422, f"`peers` must be an integer in 0..{WAIT_PEERS_MAX}")
        if type(timeout_s) not in (int, float) or not 0 < timeout_s <= WAIT_TIMEOUT_S_MAX:
            raise ControlError(422, f"`timeout_s` must be in (0, {WAIT_TIMEOUT_S_MAX}]")
        if not replica.has_entry(digest):
            raise ControlError(404, f"entry {h} is not in this replica")
        return await sync.wait_peers(digest, peers, float(timeout_s))

    def has(request: ControlRequest) -> dict[str, Any]:
        hashes = request.body.get("hashes")
        if not isinstance(hashes, list) or len(hashes) > HAS_HASHES_MAX:
            raise ControlError(422, f"`hashes` must be a list of at most {HAS_HASHES_MAX}")
        missing = []
        for h in hashes:
            try:
                digest = bytes.fromhex(h) if isinstance(h, str) else b""
            except ValueError:
                digest = b""
            if len(digest) != 32:
                raise ControlError(422, "every hash must be 64 hex digits")
            if not replica.has_entry(digest):
                missing.append(h)
        return {"asked": len(hashes), "missing": missing}

    return {
        "POST /ledger/has": has,
        "GET /wallet": lambda request: replica.wallet(),
        "POST /wallet/transfer": transfer,
        "POST /wallet/bond": lambda request: _submit(replica, Bond(_amount(request.body))),
        "POST /wallet/unbond": lambda request: _submit(replica, Unbond(_amount(request.body))),
        "POST /wallet/withdraw": lambda request: _submit(replica, Withdraw()),
        "POST /ledger/wait": wait,
        "GET /ledger": lambda request: {**replica.summary(), "sync": sync.statistics()},
    }
