"""The network genesis: build, file round trip, every kind of tampering refused by name, install.

Two builds from the same inputs are two networks: the genesis key is fresh each time and is part
of the config, so the network ids differ. That is intended (a network id is never reused by
accident) and is checked here.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ledger.accessors import is_conserved
from ledger.builders import ChainWriter
from ledger.config import LedgerConfig
from ledger.containers import GenesisAllocation, GenesisBond, Transfer
from ledger.encoding import decode_entry, encode_entry
from node.config import LedgerNodeConfig, NodeConfig
from node.genesis import (
    DOMAIN_NETWORK,
    GENESIS_BYTES_MAX,
    GENESIS_FILE_NAME,
    Genesis,
    GenesisError,
    apply_genesis,
    build_genesis,
    compute_network_id,
    genesis_to_json,
    install_genesis,
    load_genesis,
    load_installed_genesis,
    parse_account,
    parse_assignment,
    parse_param,
    resolve_genesis,
    write_genesis,
)
from node.identity import NodeIdentity

ALICE = NodeIdentity.from_seed(b"a" * 32)
BOB = NodeIdentity.from_seed(b"b" * 32)
CAROL = NodeIdentity.from_seed(b"c" * 32)
GENESIS_KEY = NodeIdentity.from_seed(b"g" * 32)


def make(**params: int) -> Genesis:
    return build_genesis(
        [(ALICE.public_key, 1000), (BOB.public_key, 500)],
        [(BOB.public_key, 300), (CAROL.public_key, 200)],
        params,
    )


def written(tmp_path: Path, genesis: Genesis | None = None) -> Path:
    path = tmp_path / "genesis.json"
    write_genesis(genesis or make(), path)
    return path


# ---------------------------------------------------------------------------- building


def test_round_trip_keeps_the_network_id(tmp_path: Path) -> None:
    genesis = make(award_bond_min=100, unbond_delay_heights=10)
    loaded = load_genesis(written(tmp_path, genesis))
    assert loaded == genesis
    assert loaded.network_id == genesis.network_id and len(loaded.network_id) == 32
    assert loaded.network_id_hex == genesis.network_id.hex()
    assert loaded.config.award_bond_min == 100 and loaded.config.unbond_delay_heights == 10


def test_the_same_inputs_make_a_different_network_each_time() -> None:
    # Intended: the genesis key is fresh and discarded, so a network can never be re-made.
    first, second = make(), make()
    assert first.allocations == second.allocations and first.bonds == second.bonds
    assert first.config.genesis_account != second.config.genesis_account
    assert first.network_id != second.network_id


def test_network_id_is_the_documented_hash() -> None:
    genesis = make()
    expected = hashlib.sha256(
        DOMAIN_NETWORK + genesis.config.to_bytes() + b"".join(e.hash for e in genesis.entries)
    ).digest()
    assert compute_network_id(genesis.config, genesis.entries) == expected == genesis.network_id


def test_entries_are_allocations_then_bonds_on_one_chain() -> None:
    genesis = make()
    ops = [e.op for e in genesis.entries]
    assert ops == [
        GenesisAllocation(ALICE.public_key, 1000),
        GenesisAllocation(BOB.public_key, 500),
        GenesisBond(BOB.public_key, 300),
        GenesisBond(CAROL.public_key, 200),
    ]
    assert [e.header.seq for e in genesis.entries] == [0, 1, 2, 3]
    assert all(e.header.account == genesis.config.genesis_account for e in genesis.entries)


def test_genesis_bonds_stake_and_conserves_supply() -> None:
    genesis = make(award_bond_min=250)
    state = apply_genesis(genesis).state
    assert state.supply == 2000 and is_conserved(state)
    bob, carol = state.accounts[BOB.public_key], state.accounts[CAROL.public_key]
    assert (bob.balance, bob.bonded) == (500, 300)
    assert (carol.balance, carol.bonded) == (0, 200)
    assert state.accounts[ALICE.public_key].bonded == 0


def test_the_file_is_canonical_json(tmp_path: Path) -> None:
    genesis = make()
    text = written(tmp_path, genesis).read_text()
    doc = json.loads(text)
    assert text == json.dumps(doc, sort_keys=True, indent=2) + "\n" == genesis_to_json(genesis)
    assert doc["format"] == "dsperse-genesis/1"
    assert doc["network_id"] == genesis.network_id_hex
    assert doc["allocations"] == [[ALICE.peer_id, 1000], [BOB.peer_id, 500]]
    assert doc["bonds"] == [[BOB.peer_id, 300], [CAROL.peer_id, 200]]
    assert doc["params"]["genesis_account"] == genesis.config.genesis_account.hex()
    assert set(doc["params"]) == {f for f in LedgerConfig.__slots__}  # type: ignore[attr-defined]
    assert [bytes.fromhex(h) for h in doc["entries"]] == [encode_entry(e) for e in genesis.entries]


@pytest.mark.parametrize(
    ("allocations", "bonds", "params", "match"),
    [
        ([(b"a" * 32, 5), (b"a" * 32, 6)], [], {}, "duplicate allocation"),
        ([], [(b"a" * 32, 5), (b"a" * 32, 6)], {}, "duplicate bond"),
        ([(b"a" * 32, 0)], [], {}, "amount must be positive, not 0"),
        ([], [(b"a" * 32, -3)], {}, "amount must be positive, not -3"),
        ([(b"a" * 32, 60)], [(b"b" * 32, 41)], {"supply_max": 100}, "total 101, above supply_max"),
        ([(b"a" * 31, 5)], [], {}, "not a 32-byte ed25519 key"),
        ([], [], {}, "at least one allocation or bond"),
        ([(b"a" * 32, 5)], [], {"supply_maximum": 5}, "unknown genesis param 'supply_maximum'"),
        ([(b"a" * 32, 5)], [], {"genesis_account": 5}, "unknown genesis param 'genesis_account'"),
        ([(b"a" * 32, 5)], [], {"slash_numerator": 3}, "slash fraction"),
        ([(b"a" * 32, 5)], [], {"proof_bytes_max": 0}, "proof_bytes_max out of range"),
        ([(b"a" * 32, 5)], [], {"pending_max": True}, "must be an integer"),
    ],
)
def test_bad_inputs_are_refused(
    allocations: list[tuple[bytes, int]],
    bonds: list[tuple[bytes, int]],
    params: dict[str, int],
    match: str,
) -> None:
    with pytest.raises(GenesisError, match=match):
        build_genesis(allocations, bonds, params)


def test_an_account_may_be_allocated_and_bonded() -> None:
    genesis = build_genesis([(ALICE.public_key, 5)], [(ALICE.public_key, 7)], {})
    acct = apply_genesis(genesis).state.accounts[ALICE.public_key]
    assert (acct.balance, acct.bonded) == (5, 7)


# ---------------------------------------------------------------------------- parsing


def test_accounts_parse_from_peer_ids_and_hex() -> None:
    assert parse_account(ALICE.peer_id) == ALICE.public_key
    assert parse_account(ALICE.public_key.hex()) == ALICE.public_key
    assert parse_account(ALICE.public_key.hex().upper()) == ALICE.public_key
    assert parse_assignment(f"{BOB.peer_id}=1_000") == (BOB.public_key, 1000)
    assert parse_param(" award_bond_min = 7 ") == ("award_bond_min", 7)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nope",
        "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",  # an RSA-style (sha256) peer id
        ALICE.peer_id[:-1],
        ALICE.peer_id + "1",
        "0" * 63,
        "g" * 64,
    ],
)
def test_bad_accounts_are_refused(text: str) -> None:
    with pytest.raises(GenesisError, match="not an ed25519 peer id"):
        parse_account(text)


@pytest.mark.parametrize(
    ("text", "match"),
    [("12D3KooW", "expected PEER_ID=AMOUNT"), (f"{ALICE.peer_id}=ten", "must be an integer")],
)
def test_bad_assignments_are_refused(text: str, match: str) -> None:
    with pytest.raises(GenesisError, match=match):
        parse_assignment(text)


# ---------------------------------------------------------------------------- tampering


Doc = dict[str, Any]


def _entry_with_amount(doc: Doc, index: int, amount: int) -> None:
    entry = decode_entry(bytes.fromhex(doc["entries"][index]), 1 << 20)
    raw = encode_entry(entry)
    old = raw.rindex(bytes([0xCD]) + entry.op.amount.to_bytes(2, "big"))  # type: ignore[union-attr]
    raw = raw[:old] + bytes([0xCD]) + amount.to_bytes(2, "big") + raw[old + 3 :]
    doc["entries"][index] = raw.hex()


def _flip_signature(doc: Doc) -> None:
    raw = bytearray(bytes.fromhex(doc["entries"][1]))
    raw[-45] ^= 1  # inside the 64-byte signature, which precedes the 39-byte op
    doc["entries"][1] = bytes(raw).hex()


def _set(path: tuple[Any, ...], value: Any) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: tuple[Any, ...]) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


TAMPERING: list[tuple[str, Callable[[Doc], None], str]] = [
    ("format", _set(("format",), "dsperse-genesis/2"), "format is 'dsperse-genesis/2'"),
    ("extra key", _set(("comment",), "hi"), r"unknown keys \['comment'\]"),
    ("missing key", _delete(("bonds",)), r"missing keys \['bonds'\]"),
    ("network id", _set(("network_id",), "00" * 32), "network_id 0{64} does not match"),
    ("network id hex", _set(("network_id",), "zz"), "network_id must be lowercase hex"),
    ("param value", _set(("params", "award_bond_min"), 2), "does not match its contents"),
    ("param range", _set(("params", "slash_numerator"), 9), "slash fraction"),
    ("param type", _set(("params", "supply_max"), 1.5), "must be an integer"),
    ("param unknown", _set(("params", "fee"), 1), r"params: missing \[\], unknown \['fee'\]"),
    ("param missing", _delete(("params", "pending_max")), r"missing \['pending_max'\]"),
    (
        "genesis account",
        _set(("params", "genesis_account"), GENESIS_KEY.public_key.hex()),
        "entry 0 is not signed by the genesis account",
    ),
    ("allocation amount", _set(("allocations", 0, 1), 1001), "allocations do not match"),
    ("allocation account", _set(("allocations", 0, 0), CAROL.peer_id), "allocations do not match"),
    ("allocation removed", _delete(("allocations", 1)), "allocations do not match"),
    ("allocation garbage", _set(("allocations", 0, 0), "x"), "not an ed25519 peer id"),
    ("allocation shape", _set(("allocations", 0), [ALICE.peer_id]), r"allocations\[0\] must be"),
    ("bond amount", _set(("bonds", 1, 1), True), r"bonds\[1\]: amount must be an integer"),
    ("bond account", _set(("bonds", 0, 0), ALICE.peer_id), "bonds do not match"),
    ("last entry removed", _delete(("entries", 3)), "bonds do not match"),
    ("first entry removed", _delete(("entries", 0)), "entry 0 does not extend the genesis chain"),
    ("entry amount", lambda d: _entry_with_amount(d, 0, 999), "entry 0 has a bad signature"),
    ("entry signature", _flip_signature, "entry 1 has a bad signature"),
    ("entry uppercase", lambda d: _set(("entries", 0), d["entries"][0].upper())(d), "lowercase"),
    ("entry garbage", _set(("entries", 2), "c0"), r"entries\[2\] does not decode"),
    ("entries type", _set(("entries",), "x"), "entries must be a list"),
]


@pytest.mark.parametrize(("name", "mutate", "match"), TAMPERING, ids=[t[0] for t in TAMPERING])
def test_tampering_is_refused_by_name(
    tmp_path: Path, name: str, mutate: Callable[[Doc], None], match: str
) -> None:
    path = written(tmp_path)
    doc = copy.deepcopy(json.loads(path.read_text()))
    mutate(doc)
    path.write_text(json.dumps(doc, sort_keys=True, indent=2))
    with pytest.raises(GenesisError, match=match) as info:
        load_genesis(path)
    message = str(info.value)
    assert message.startswith(f"genesis file {path}") and "\n" not in message


def test_swapped_entries_are_refused(tmp_path: Path) -> None:
    path = written(tmp_path)
    doc = json.loads(path.read_text())
    doc["entries"][0], doc["entries"][1] = doc["entries"][1], doc["entries"][0]
    path.write_text(json.dumps(doc))
    with pytest.raises(GenesisError, match="entry 0 does not extend the genesis chain"):
        load_genesis(path)


def _hand_made(tmp_path: Path, ops: list[Any], allocations: Any, bonds: Any, **cfg: int) -> Path:
    """A file signed with a key we keep (what an attacker could make): the checks must hold."""
    config = LedgerConfig(genesis_account=GENESIS_KEY.public_key, **cfg)
    writer = ChainWriter(GENESIS_KEY)
    entries = tuple(writer.append(op) for op in ops)
    path = tmp_path / "hand.json"
    write_genesis(Genesis(config, entries, tuple(allocations), tuple(bonds)), path)
    return path


def test_hand_made_files_are_checked_like_any_other(tmp_path: Path) -> None:
    a, b = ALICE.public_key, BOB.public_key
    cases = [
        ([GenesisAllocation(a, 5), Transfer(b, 1)], [(a, 5)], [], "entry 1 is a Transfer"),
        ([GenesisBond(a, 5), GenesisAllocation(b, 5)], [(b, 5)], [(a, 5)], "comes after a"),
        ([GenesisAllocation(a, 5), GenesisAllocation(a, 6)], [(a, 5), (a, 6)], [], "duplicate"),
        ([GenesisAllocation(a, 60), GenesisBond(b, 60)], [(a, 60)], [(b, 60)], "above supply_max"),
        ([], [], [], "at least one allocation or bond"),
    ]
    for ops, allocations, bonds, match in cases:
        path = _hand_made(tmp_path, ops, allocations, bonds, supply_max=100)
        with pytest.raises(GenesisError, match=match):
            load_genesis(path)
    # The same hand-made shape, done right, loads.
    good = _hand_made(tmp_path, [GenesisAllocation(a, 5), GenesisBond(b, 6)], [(a, 5)], [(b, 6)])
    assert load_genesis(good).config.genesis_account == GENESIS_KEY.public_key


def test_an_entry_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    genesis = make()
    other = ChainWriter(GENESIS_KEY).append(GenesisAllocation(ALICE.public_key, 1000))
    forged = Genesis(
        genesis.config, (other, *genesis.entries[1:]), genesis.allocations, genesis.bonds
    )
    path = tmp_path / "forged.json"
    write_genesis(forged, path)
    with pytest.raises(GenesisError, match="entry 0 is not signed by the genesis account"):
        load_genesis(path)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\xff\xfe", "is not UTF-8 text"),
        (b"{", "is not valid JSON"),
        (b'{"format": 1, "format": 2}', "duplicate key 'format'"),
        (b'{"format": NaN}', "NaN is not allowed"),
        (b"[]", "not a JSON object"),
        (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
        (b'{"n": 1' + b"0" * 5000 + b"}", "not valid JSON"),
    ],
)
def test_bad_json_is_refused(tmp_path: Path, data: bytes, match: str) -> None:
    path = tmp_path / "g.json"
    path.write_bytes(data)
    with pytest.raises(GenesisError, match=match):
        load_genesis(path)


def test_missing_and_huge_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(GenesisError, match="no genesis file at"):
        load_genesis(tmp_path / "absent.json")
    huge = tmp_path / "huge.json"
    with huge.open("wb") as f:
        f.truncate(GENESIS_BYTES_MAX + 1)
    with pytest.raises(GenesisError, match="larger than"):
        load_genesis(huge)


def test_an_unwritable_path_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(GenesisError, match="cannot write genesis file") as info:
        write_genesis(make(), tmp_path / "no" / "such" / "dir.json")
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- data dirs


def test_install_copies_the_file_and_is_idempotent(tmp_path: Path) -> None:
    source = written(tmp_path)
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    assert load_installed_genesis(data_dir) is None
    genesis = install_genesis(data_dir, source)
    target = data_dir / GENESIS_FILE_NAME
    assert target.read_bytes() == source.read_bytes()
    assert load_installed_genesis(data_dir) == genesis
    before = target.stat().st_mtime_ns
    os.utime(target, ns=(before - 10**9, before - 10**9))
    assert install_genesis(data_dir, source).network_id == genesis.network_id
    assert target.stat().st_mtime_ns == before - 10**9  # same network: not rewritten


def test_install_of_another_network_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    first = install_genesis(data_dir, written(tmp_path))
    other = make()
    other_path = tmp_path / "other.json"
    write_genesis(other, other_path)
    with pytest.raises(GenesisError, match="belongs to network") as info:
        install_genesis(data_dir, other_path)
    assert first.network_id_hex in str(info.value) and other.network_id_hex in str(info.value)
    assert "use a new data dir" in str(info.value)
    assert load_installed_genesis(data_dir) == first


def test_install_refuses_a_bad_source_or_a_missing_dir(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    with pytest.raises(GenesisError, match="format is None"):
        install_genesis(data_dir, bad)
    assert not (data_dir / GENESIS_FILE_NAME).exists()
    with pytest.raises(GenesisError, match="is not a directory"):
        install_genesis(tmp_path / "absent", written(tmp_path))


def test_a_corrupt_installed_genesis_is_refused(tmp_path: Path) -> None:
    (tmp_path / GENESIS_FILE_NAME).write_text("{")
    with pytest.raises(GenesisError, match="not valid JSON"):
        load_installed_genesis(tmp_path)


def test_resolve_genesis_follows_the_config_key(tmp_path: Path) -> None:
    config = NodeConfig(data_dir=tmp_path)
    assert resolve_genesis(config) is None
    (tmp_path / "src").mkdir()
    installed = install_genesis(tmp_path, written(tmp_path / "src"))
    assert resolve_genesis(config) == installed
    (tmp_path / "nets").mkdir()
    other = make()
    write_genesis(other, tmp_path / "nets" / "test.json")
    relative = NodeConfig(data_dir=tmp_path, ledger=LedgerNodeConfig(genesis="nets/test.json"))
    assert resolve_genesis(relative) == other
    absolute = NodeConfig(
        data_dir=tmp_path / "x", ledger=LedgerNodeConfig(genesis=str(tmp_path / "nets/test.json"))
    )
    assert resolve_genesis(absolute) == other
