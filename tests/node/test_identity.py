"""Node identity: the peer id libp2p derives, the key file's safety, and `init`/`id` behaviour."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.cli import main
from node.errors import IdentityError
from node.identity import (
    KEY_FILE_NAME,
    Ed25519Scheme,
    NodeIdentity,
    compute_peer_id,
    load_identity,
    save_identity,
)


@settings(max_examples=25, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32))
def test_peer_id_matches_py_libp2p(seed: bytes) -> None:
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    key_pair = create_new_key_pair(seed)
    ours = NodeIdentity.from_seed(seed)
    assert ours.public_key == key_pair.public_key.to_bytes()
    assert ours.peer_id == ID.from_pubkey(key_pair.public_key).to_base58()
    assert ours.peer_id.startswith("12D3KooW")


def test_peer_id_rejects_wrong_key_length() -> None:
    with pytest.raises(IdentityError):
        compute_peer_id(b"\x01" * 31)


def test_sign_and_verify_round_trip_and_tamper() -> None:
    identity = NodeIdentity.from_seed(b"\x07" * 32)
    scheme = Ed25519Scheme()
    sig = identity.sign(b"hello")
    assert scheme.verify(identity.public_key, b"hello", sig)
    assert not scheme.verify(identity.public_key, b"hellp", sig)
    assert not scheme.verify(identity.public_key, b"hello", sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not scheme.verify(identity.public_key[:31], b"hello", sig)
    other = NodeIdentity.from_seed(b"\x08" * 32)
    assert not scheme.verify(other.public_key, b"hello", sig)


def test_key_file_is_private_and_reloads(tmp_path: Path) -> None:
    identity = NodeIdentity.generate()
    path = tmp_path / KEY_FILE_NAME
    save_identity(identity, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_identity(path).peer_id == identity.peer_id
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE_NAME]  # no temp file left


def test_save_refuses_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE_NAME
    first = NodeIdentity.generate()
    save_identity(first, path)
    with pytest.raises(IdentityError, match="refusing to overwrite"):
        save_identity(NodeIdentity.generate(), path)
    assert load_identity(path).peer_id == first.peer_id
    second = NodeIdentity.generate()
    save_identity(second, path, force=True)
    assert load_identity(path).peer_id == second.peer_id


@pytest.mark.parametrize(
    ("content", "mode", "match"),
    [
        (None, 0o600, "run `dsperse-node init` first"),
        (b"not a pem", 0o600, "not a valid PEM private key"),
        (b"x" * 10_000, 0o600, "not a key file"),
        ("ed25519", 0o644, "must be private"),
        ("ec", 0o600, "not an ed25519 key"),
    ],
)
def test_load_errors_are_specific(
    tmp_path: Path, content: bytes | str | None, mode: int, match: str
) -> None:
    path = tmp_path / KEY_FILE_NAME
    if content == "ed25519":
        save_identity(NodeIdentity.generate(), path)
    elif content == "ec":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.write_bytes(pem)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    if path.exists():
        os.chmod(path, mode)
    with pytest.raises(IdentityError, match=match):
        load_identity(path)


def test_cli_init_twice_fails_and_keeps_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "node"
    assert main(["init", "--data-dir", str(data_dir)]) == 0
    key_before = (data_dir / KEY_FILE_NAME).read_bytes()
    config_before = (data_dir / "config.toml").read_text()
    capsys.readouterr()
    assert main(["init", "--data-dir", str(data_dir)]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err
    assert (data_dir / KEY_FILE_NAME).read_bytes() == key_before
    assert (data_dir / "config.toml").read_text() == config_before


def test_cli_init_force_replaces_key_and_id_prints_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "node"
    assert main(["init", "--data-dir", str(data_dir)]) == 0
    old = load_identity(data_dir / KEY_FILE_NAME)
    assert main(["init", "--data-dir", str(data_dir), "--force"]) == 0
    new = load_identity(data_dir / KEY_FILE_NAME)
    assert new.peer_id != old.peer_id
    capsys.readouterr()
    assert main(["id", "--data-dir", str(data_dir), "--json"]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    assert doc == {"peer_id": new.peer_id, "public_key": new.public_key.hex()}


def test_cli_id_without_init_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["id", "--data-dir", str(tmp_path / "missing")]) == 1
    assert "run `dsperse-node init` first" in capsys.readouterr().err


def test_default_data_dir_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert main(["init"]) == 0
    assert (tmp_path / "xdg" / "dsperse-node" / KEY_FILE_NAME).is_file()
