"""Ed25519 signatures of manifests: the only module that imports `cryptography`.

With `manifest.sign_key_file` set, each manifest gets `<key>.sig`: the base64 Ed25519 signature
of its exact bytes. An auditor given the public key (`audit --public-key`) then knows the chain
was written by the holder of the private key, not only that it is self-consistent. Ed25519
signatures are deterministic, so a manifest written again after a kill gets the same signature.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class KeyFileError(ValueError):
    """A key file that is not a usable Ed25519 key; the message names the file."""


class Signer:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        data = _read(path)
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{path}: not an unencrypted PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{path}: a {type(key).__name__}, not an Ed25519 private key")
        return cls(key)

    def sign(self, body: bytes) -> bytes:
        """The `.sig` file's bytes: base64 of the signature, and a newline."""
        return base64.b64encode(self._key.sign(body)) + b"\n"

    def public_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class Verifier:
    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key

    @classmethod
    def from_file(cls, path: Path) -> Verifier:
        data = _read(path)
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{path}: not a PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"{path}: a {type(key).__name__}, not an Ed25519 public key")
        return cls(key)

    def valid(self, body: bytes, signature_file: bytes) -> bool:
        try:
            signature = base64.b64decode(signature_file.strip(), validate=True)
            self._key.verify(signature, body)
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True


def generate() -> tuple[bytes, bytes]:
    """A new key pair as PEM (private, public): for tests and `docs/audit.md`'s recipe."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return private, Signer(key).public_pem()


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror or exc}") from None
