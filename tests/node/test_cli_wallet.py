"""`dsperse-node wallet` against a real control server (in a background thread) with a fake node.

`FakeWalletNode` is a test double of the node side of the wallet routes (node/runtime.py serves
the real ones): it keeps a balance, refuses what a replica would refuse with 409/422 and a reason,
and answers `/ledger/wait` with a configured set of holders.
"""

from __future__ import annotations

import hashlib
import json
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from node.cli import main
from node.control import (
    CONTROL_FILE_NAME,
    CONTROL_TOKEN_FILE_NAME,
    ControlError,
    ControlRequest,
    Routes,
    serve_control,
    write_control_file,
    write_control_token,
)

SELF = "12D3KooWSELFxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
PEER = "12D3KooWPEERxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
MIN_STAKE = 100


class FakeWalletNode:
    def __init__(self, balance: int = 1000) -> None:
        self.balance, self.bonded, self.height = balance, 0, 7
        self.unbonding: list[list[int]] = [[50, 5], [30, 20]]
        self.entries: list[dict[str, Any]] = []
        self.holders: list[str] = []
        self.waits: list[dict[str, Any]] = []

    def routes(self) -> Routes:
        return {
            "GET /wallet": self.wallet,
            "POST /wallet/transfer": self.transfer,
            "POST /wallet/bond": self.bond,
            "POST /wallet/unbond": self.unbond,
            "POST /wallet/withdraw": self.withdraw,
            "POST /ledger/wait": self.wait,
        }

    def wallet(self, _request: ControlRequest) -> dict[str, Any]:
        return {"account": SELF, "balance": self.balance, "bonded": self.bonded,
                "unbonding": self.unbonding, "slashed": 0, "height": self.height}  # fmt: skip

    def _store(self, kind: str, **fields: Any) -> dict[str, Any]:
        seq = len(self.entries) + 1
        digest = hashlib.sha256(json.dumps([kind, seq, fields]).encode()).hexdigest()
        entry = {"hash": digest, "seq": seq, "kind": kind, **fields}
        self.entries.append(entry)
        return entry

    def _amount(self, request: ControlRequest) -> int:
        amount = request.body.get("amount")
        if type(amount) is not int or amount <= 0:
            raise ControlError(422, "amount must be a positive integer")
        return amount

    def _debit(self, amount: int) -> None:
        if amount > self.balance:
            raise ControlError(409, f"insufficient balance: have {self.balance}, need {amount}")
        self.balance -= amount

    def transfer(self, request: ControlRequest) -> dict[str, Any]:
        to, amount = request.body.get("to"), self._amount(request)
        if not isinstance(to, str) or not to.startswith("12D3KooW"):
            raise ControlError(422, f"bad recipient: {to!r} is not a peer id")
        self._debit(amount)
        return self._store("transfer", to=to, amount=amount)

    def bond(self, request: ControlRequest) -> dict[str, Any]:
        amount = self._amount(request)
        if self.bonded + amount < MIN_STAKE:
            raise ControlError(409, f"below the minimum stake of {MIN_STAKE}")
        self._debit(amount)
        self.bonded += amount
        return self._store("bond", amount=amount)

    def unbond(self, request: ControlRequest) -> dict[str, Any]:
        amount = self._amount(request)
        self.bonded -= amount
        self.unbonding.append([amount, self.height + 10])
        return self._store("unbond", amount=amount)

    def withdraw(self, _request: ControlRequest) -> dict[str, Any]:
        mature = sum(a for a, h in self.unbonding if h <= self.height)
        if not mature:
            raise ControlError(409, "nothing mature to withdraw")
        self.unbonding = [[a, h] for a, h in self.unbonding if h > self.height]
        self.balance += mature
        return self._store("withdraw", amount=mature)

    async def wait(self, request: ControlRequest) -> dict[str, Any]:
        self.waits.append(request.body)
        await trio.sleep(0)
        wanted = request.body["peers"]
        return {"peers": self.holders, "ok": len(self.holders) >= wanted}


@contextmanager
def running_node(data_dir: Path, node: FakeWalletNode, *, token: bool = True) -> Iterator[str]:
    """A control server in a thread, found through data_dir like a real node's."""
    data_dir.mkdir(exist_ok=True)
    secret = write_control_token(data_dir) if token else None
    ready: queue.Queue[tuple[str, trio.lowlevel.TrioToken, trio.CancelScope]] = queue.Queue()

    async def serve() -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                start = partial(serve_control, "127.0.0.1:0", node.routes(), secret)
                addr = await nursery.start(start)
                ready.put((addr, trio.lowlevel.current_trio_token(), scope))

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    addr, trio_token, scope = ready.get(timeout=10)
    write_control_file(data_dir, addr)
    try:
        yield addr
    finally:
        trio.from_thread.run_sync(scope.cancel, trio_token=trio_token)
        thread.join(10)


@pytest.fixture
def fake() -> FakeWalletNode:
    return FakeWalletNode()


@pytest.fixture
def node_dir(tmp_path: Path, fake: FakeWalletNode) -> Iterator[Path]:
    data_dir = tmp_path / "node"
    with running_node(data_dir, fake):
        yield data_dir


def wallet(capsys: pytest.CaptureFixture[str], data_dir: Path, *args: str) -> tuple[int, str, str]:
    code = main(["wallet", *args, "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    return code, out, err


def test_balance_plain_and_json(node_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = wallet(capsys, node_dir, "balance")
    assert code == 0
    assert out.splitlines() == [
        f"account    {SELF}",
        "balance    1000",
        "bonded     0",
        "unbonding  50 (mature), 30 (matures at height 20)",
        "slashed    0",
        "height     7",
    ]
    code, out, _ = wallet(capsys, node_dir, "balance", "--json")
    assert code == 0 and json.loads(out)["balance"] == 1000


def test_transfer_prints_the_stored_entry(
    node_dir: Path, fake: FakeWalletNode, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = wallet(capsys, node_dir, "transfer", PEER, "500")
    assert (code, err) == (0, "")
    entry = fake.entries[0]
    assert out == f"transfer 500 -> {PEER} stored: {entry['hash']} (seq 1)\n"
    assert fake.balance == 500 and entry["to"] == PEER


def test_bond_unbond_withdraw_json(
    node_dir: Path, fake: FakeWalletNode, capsys: pytest.CaptureFixture[str]
) -> None:
    for args, kind in ((["bond", "200"], "bond"), (["unbond", "40"], "unbond"),
                       (["withdraw"], "withdraw")):  # fmt: skip
        code, out, _ = wallet(capsys, node_dir, *args, "--json")
        doc = json.loads(out)
        assert code == 0 and doc["action"] == kind and doc["wait"] is None
        assert doc["entry"]["kind"] == kind and doc["entry"]["hash"] == fake.entries[-1]["hash"]
    assert (fake.balance, fake.bonded) == (850, 160)
    code, out, _ = wallet(capsys, node_dir, "bond", "300")
    assert code == 0 and out.startswith("bond 300 stored: ")


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["transfer", PEER, "5000"], "insufficient balance: have 1000, need 5000"),
        (["transfer", "bob", "5"], "bad recipient: 'bob' is not a peer id"),
        (["bond", "10"], f"below the minimum stake of {MIN_STAKE}"),
    ],
)
def test_a_refusal_is_one_line_and_writes_nothing(
    node_dir: Path,
    fake: FakeWalletNode,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    reason: str,
) -> None:
    code, out, err = wallet(capsys, node_dir, *args)
    assert (code, out, err) == (1, "", f"dsperse-node wallet: error: {reason}\n")
    assert fake.entries == [] and fake.balance == 1000


def test_withdraw_with_nothing_mature_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeWalletNode()
    fake.unbonding = [[30, 20]]
    with running_node(tmp_path / "n", fake):
        code, out, err = wallet(capsys, tmp_path / "n", "withdraw")
    assert (code, out, err) == (1, "", "dsperse-node wallet: error: nothing mature to withdraw\n")


def test_without_a_node_the_error_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = wallet(capsys, tmp_path, "balance")
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "no node is running for" in err and "dsperse-node run --data-dir" in err
    with socket.socket() as s:  # a stale control.addr: the node died without cleaning up
        s.bind(("127.0.0.1", 0))
        stale = f"127.0.0.1:{s.getsockname()[1]}"
    (tmp_path / CONTROL_FILE_NAME).write_text(stale + "\n")
    code, out, err = wallet(capsys, tmp_path, "transfer", PEER, "5")
    assert (code, out) == (1, "")
    assert err == (f"dsperse-node wallet: error: no node is running at {stale} "
                   "(connection refused); start it with `dsperse-node run`\n")  # fmt: skip


def test_the_console_script_without_a_node(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simnet", "wallet", "balance", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "no node is running" in result.stderr


def test_a_missing_or_wrong_token_is_explained(
    node_dir: Path, fake: FakeWalletNode, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = node_dir / CONTROL_TOKEN_FILE_NAME
    token_file.write_text("cd" * 32 + "\n")
    code, _, err = wallet(capsys, node_dir, "bond", "200")
    assert code == 1 and err.count("\n") == 1 and "refused the token" in err
    token_file.unlink()
    code, _, err = wallet(capsys, node_dir, "bond", "200")
    assert code == 1 and err.count("\n") == 1
    assert "requires a control token" in err and f"{token_file} is missing" in err
    assert fake.entries == []
    code, _, _ = wallet(capsys, node_dir, "balance")  # reads need no token
    assert code == 0


def test_wait_peers_reports_the_holders(
    node_dir: Path, fake: FakeWalletNode, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.holders = ["12D3KooWA", "12D3KooWB", "12D3KooWC"]
    code, out, err = wallet(capsys, node_dir, "transfer", PEER, "5", "--wait-peers", "3",
                            "--timeout", "2")  # fmt: skip
    h = fake.entries[0]["hash"]
    assert (code, err) == (0, "")
    assert out.splitlines()[1] == f"entry {h} reached 3 of 3 peers"
    assert fake.waits == [{"hash": h, "peers": 3, "timeout_s": 2.0}]
    code, out, _ = wallet(capsys, node_dir, "unbond", "1", "--wait-peers", "2", "--json")
    assert code == 0 and json.loads(out)["wait"] == {"peers": fake.holders, "ok": True}


def test_wait_peers_not_reached_exits_1_after_saying_what_was_stored(
    node_dir: Path, fake: FakeWalletNode, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.holders = ["12D3KooWA"]
    code, out, err = wallet(capsys, node_dir, "transfer", PEER, "5", "--wait-peers", "3",
                            "--timeout", "2")  # fmt: skip
    h = fake.entries[0]["hash"]
    assert code == 1 and out.startswith(f"transfer 5 -> {PEER} stored: {h}")
    assert err == f"dsperse-node wallet: error: entry {h} reached 1 of 3 peers within 2 s\n"


@pytest.mark.parametrize("amount", ["0", "-5", "1.5", "1e3", "abc", "1_000", "²", "9" * 20])
def test_amounts_are_positive_integers(amount: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["wallet", "transfer", PEER, amount])
    assert info.value.code == 2
    assert f"invalid amount {amount!r}" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--wait-peers", "0"], ["--timeout", "0"],
                                  ["--timeout", "nan"], ["--timeout", "1000"]])  # fmt: skip
def test_wait_options_are_checked(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["wallet", "bond", "5", *args])
    assert info.value.code == 2 and "invalid" in capsys.readouterr().err
