"""Signing keys as files: Ed25519, PEM, readable by their owner only.

Why files with strict modes: the root and targets keys live on an admin's offline machine (or a USB
stick), the online snapshot/timestamp key in the companion's state directory; a key anyone else can
read is a key that must be rotated, so such a file is refused rather than used.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, Key, SSlibKey


class KeyFileError(Exception):
    """A key file that cannot be used, with what to do about it."""


def generate_key_file(path: Path) -> SSlibKey:
    """A new Ed25519 key written to ``path`` (0600, never over an existing file); its public key."""
    signer = CryptoSigner.generate_ed25519()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists: a key is never overwritten (move it away first)") from None
    with os.fdopen(fd, "wb") as out:
        out.write(signer.private_bytes)
        out.flush()
        os.fsync(out.fileno())
    public = signer.public_key
    assert isinstance(public, SSlibKey)
    return public


def load_signer(path: Path) -> CryptoSigner:
    """The signer in a private key file; refused when others can read it or it is not an Ed25519 key."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path} can be read by other users (mode {stat.S_IMODE(mode):o}): "
                           f"chmod 600 it, and rotate the key if it may have been copied")
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 key")
    return CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))


def write_public_key(key: Key, path: Path) -> None:
    """The public half, as the JSON TUF stores in root metadata (safe to copy anywhere)."""
    path.write_text(json.dumps({"keyid": key.keyid, **key.to_dict()}, indent=2) + "\n")


def read_public_key(path: Path) -> Key:
    try:
        data = json.loads(path.read_text())
        keyid = data.pop("keyid")
        return Key.from_dict(keyid, data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeyFileError(f"{path} is not a public key file written by this tool ({exc})") from None
