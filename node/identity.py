"""Node identity: one ed25519 key per node, its libp2p peer id, and the signature seam.

The key file is PKCS#8 PEM, mode 0600, written atomically and never overwritten without `force`.
The peer id is derived exactly as libp2p does (identity multihash of the protobuf-encoded public
key, base58btc), computed here without importing libp2p so that `dsperse-node id` stays fast.
`Ed25519Scheme` implements `ledger.interfaces.SignatureScheme`; `NodeIdentity` implements `Signer`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from node.errors import IdentityError

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
KEY_FILE_NAME = "identity.key"
_KEY_FILE_BYTES_MAX = 4096
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _b58encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = []
    while number:
        number, rem = divmod(number, 58)
        out.append(_B58_ALPHABET[rem])
    leading_zeros = len(data) - len(data.lstrip(b"\x00"))
    return "1" * leading_zeros + "".join(reversed(out))


def compute_peer_id(public_key: bytes) -> str:
    """The libp2p peer id (`12D3KooW…`) of a raw ed25519 public key."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise IdentityError(f"ed25519 public key must be {PUBLIC_KEY_BYTES} bytes")
    # libp2p PublicKey protobuf: field 1 (KeyType) = 1 (Ed25519), field 2 (Data) = 32 bytes.
    proto = b"\x08\x01\x12\x20" + public_key
    # Keys whose encoding is at most 42 bytes use the identity multihash (code 0x00).
    return _b58encode(b"\x00" + bytes([len(proto)]) + proto)


def _b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        digit = _B58_ALPHABET.find(char)
        if digit < 0:
            raise ValueError(f"{char!r} is not a base58 character")
        number = number * 58 + digit
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\x00" * (len(text) - len(text.lstrip("1"))) + body


def parse_account(text: str) -> bytes:
    """The raw ed25519 key named by a peer id (`12D3KooW…`) or 64 hex digits (ValueError)."""
    text = text.strip()
    if len(text) == 2 * PUBLIC_KEY_BYTES and all(c in "0123456789abcdefABCDEF" for c in text):
        return bytes.fromhex(text)
    if not 0 < len(text) <= 64:
        raise ValueError(f"{text[:80]!r} is neither a peer id nor a 64-hex key")
    raw = _b58decode(text)
    prefix = b"\x00\x24\x08\x01\x12\x20"
    if len(raw) != len(prefix) + PUBLIC_KEY_BYTES or not raw.startswith(prefix):
        raise ValueError(f"{text!r} is not an ed25519 peer id")
    return raw[len(prefix) :]


class Ed25519Scheme:
    """Ed25519 signature verification (strict: wrong lengths are simply invalid)."""

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """An ed25519 private key with its public key and peer id."""

    private_key: Ed25519PrivateKey
    public_key: bytes
    peer_id: str

    @classmethod
    def from_private_key(cls, key: Ed25519PrivateKey) -> NodeIdentity:
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(private_key=key, public_key=public, peer_id=compute_peer_id(public))

    @classmethod
    def generate(cls) -> NodeIdentity:
        return cls.from_private_key(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeIdentity:
        """Deterministic identity from a 32-byte seed (tests and the simulator only)."""
        if len(seed) != 32:
            raise IdentityError("identity seed must be 32 bytes")
        return cls.from_private_key(Ed25519PrivateKey.from_private_bytes(seed))

    def seed(self) -> bytes:
        """The raw 32-byte private key (libp2p's ed25519 key pair is built from it)."""
        return self.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)


def save_identity(identity: NodeIdentity, path: Path, *, force: bool = False) -> None:
    """Write the key as PKCS#8 PEM, mode 0600, atomically; refuse to overwrite unless `force`."""
    if path.exists() and not force:
        raise IdentityError(f"{path} already exists; refusing to overwrite it (use --force)")
    pem = identity.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_identity(path: Path) -> NodeIdentity:
    """Read a key written by `save_identity`, with a specific error for each way it can be wrong."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise IdentityError(f"no identity key at {path}; run `dsperse-node init` first") from None
    except OSError as exc:
        raise IdentityError(f"cannot read identity key {path}: {exc.strerror}") from None
    if size > _KEY_FILE_BYTES_MAX:
        raise IdentityError(f"identity key {path} is {size} bytes; not a key file")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise IdentityError(
            f"identity key {path} has mode {mode:04o}; it must be private (chmod 600 {path})"
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"identity key {path} is not a valid PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"identity key {path} is not an ed25519 key")
    return NodeIdentity.from_private_key(key)
